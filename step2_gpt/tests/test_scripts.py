"""The step's scripts and notebook: train.py learns and writes a checkpoint that load_gpt, demo.py and the
exporter accept; bad input is one clear line; the lesson notebook runs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.errors import CourseError
from step2_gpt.model import GPT, load_gpt

STEP = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def run_script(*args, cwd=STEP):
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One quick train.py run (with step 1's tokenizer, or the stand-in when step 1 has not run)."""
    out = tmp_path_factory.mktemp("gpt")
    r = run_script("train.py", "--quick", "--device", "cpu", "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    return out, json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_train_quick_drives_the_loss_down(trained):
    out, summary = trained
    assert summary["step"] == "gpt"
    assert summary["val_loss_after"] < summary["val_loss_before"] - 2.0  # ~6.3 → ~3.0 in 30 steps
    assert (out / "metrics.jsonl").is_file() and (out / "loss_curve.png").is_file()


@pytest.mark.slow
def test_checkpoint_loads_and_demo_runs(trained):
    out, _ = trained
    model, tok, ckpt = load_gpt(out, expect_steps="gpt")
    assert isinstance(model, GPT) and not model.training and ckpt.step == "gpt"
    assert model.config.vocab_size == tok.vocab_size
    with pytest.raises(CourseError, match="'pretrain'"):
        load_gpt(out, expect_steps="pretrain")
    r = run_script(STEP / "demo.py", "--init", out, "--max-new-tokens", "12", "--temperature", "0", cwd=STEP.parent)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "KV cache speedup" in r.stdout and "same tokens: True" in r.stdout


def test_bad_input_is_one_clear_line(tmp_path):
    r = run_script("demo.py", "--init", tmp_path / "missing")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error:") and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_model_demo_runs():
    r = run_script("model.py", "--demo")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "causal mask" in r.stdout and "123,587,328" in r.stdout  # base preset's parameter count


@pytest.mark.notebook
def test_notebook_runs(run_notebook):
    run_notebook(STEP / "lesson.ipynb", timeout=120)
