"""Two processes (torchrun, gloo on CPU) fine-tune exactly like one process with the same global batch: the loss
is divided by the global count of answer tokens, so a process with shorter answers does not weigh more."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "step4_sft" / "train.py"


def losses(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if r["kind"] == "train"]


@pytest.mark.slow
def test_two_processes_match_one(quick_pretrain, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    common = ["--device", "cpu", "--init", quick_pretrain, "--max-steps", 5, "--examples", 40, "--eval-every", 5,
              "--eval-n", 2]
    one = [*common, "--batch-size", 4, "--out", tmp_path / "one"]            # one process: 4 conversations a step
    two = [*common, "--batch-size", 2, "--out", tmp_path / "two"]            # two processes × 2
    r1 = subprocess.run([sys.executable, SCRIPT, *map(str, one)], capture_output=True, text=True, timeout=180, env=env)
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                         SCRIPT, *map(str, two)], capture_output=True, text=True, timeout=240, env=env)
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert '"world_size": 2' in r2.stdout
    a, b = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(5))
    for (_, la), (_, lb) in zip(a, b):
        assert la == pytest.approx(lb, abs=2e-5)  # the same conversations and gradients; only summation order differs
