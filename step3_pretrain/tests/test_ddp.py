"""Several processes (torchrun, gloo on CPU) train exactly like one process with the same global batch."""
import os
import subprocess
import sys

import pytest

from step3_pretrain.tests.helpers import tiny_args, train_losses, write_text

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    data = write_text(tmp_path)
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}
    script = os.path.join(ROOT, "step3_pretrain", "train.py")
    one = tiny_args(tmp_path, data, "--sample-tokens", "0", out="one", steps=6)
    one[one.index("--batch-size") + 1] = "8"                       # one process: 8 windows per step
    two = tiny_args(tmp_path, data, "--sample-tokens", "0", out="two", steps=6)  # two processes × 4 windows
    r1 = subprocess.run([sys.executable, script, *one], capture_output=True, text=True, timeout=120, env=env)
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                         script, *two], capture_output=True, text=True, timeout=180, env=env)
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert '"world_size": 2' in r2.stdout
    a, b = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(6))
    for (_, la), (_, lb) in zip(a, b):
        assert la == pytest.approx(lb, abs=2e-5)   # same windows, same gradients; only summation order differs
