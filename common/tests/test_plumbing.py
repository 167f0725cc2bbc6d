"""Device choice, CLI flags, LR schedule and the run logger."""
import json
import subprocess
import sys

import pytest
import torch

from common import REPO_ROOT
from common.cli import SHARED_FLAGS as ALL_FLAGS, course_parser
from common.device import pick_device, pick_dtype, seed_everything
from common.errors import CourseError
from common.training import RunLogger, lr_at, print_summary

SHARED_FLAGS = ["--device", "--dtype", "--epochs", "--max-steps", "--batch-size", "--lr", "--seed", "--size",
                "--data", "--out", "--init", "--resume", "--compile", "--quick"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(CourseError, match="no CUDA GPU"):
        pick_device("cuda")


def test_cuda_error_is_one_line_and_nonzero_exit():
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from common.cli import run\nfrom common.device import pick_device\n"
            "run(lambda: pick_device('cuda' if not __import__('torch').cuda.is_available() else 'tpu'))") % str(REPO_ROOT)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_auto_device_and_dtype():
    dev = pick_device("auto")
    assert dev.type in ("cpu", "cuda", "mps")
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert pick_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(CourseError):
        pick_dtype("float8", torch.device("cpu"))


def test_seed_everything_repeats():
    seed_everything(5)
    a = torch.rand(3)
    seed_everything(5)
    assert torch.equal(a, torch.rand(3))


def test_shared_flags_and_overrides():
    p = course_parser("x", *ALL_FLAGS, lr=3e-4, out="runs/demo")
    help_text = p.format_help()
    for flag in SHARED_FLAGS:
        assert flag in help_text
    args = p.parse_args(["--device", "cpu", "--quick", "--max-steps", "7"])
    assert (args.device, args.quick, args.max_steps, args.lr, args.out) == ("cpu", True, 7, 3e-4, "runs/demo")
    with pytest.raises(ValueError):
        course_parser("x", *ALL_FLAGS, learning_rate=1.0)  # a typo in a default is a bug, not a silent no-op
    with pytest.raises(ValueError):
        course_parser("x", "device", "seeds")  # not a shared flag


def test_a_script_offers_only_the_flags_it_names(capsys):
    p = course_parser("x", "device", "seed", "out", out="runs/x")
    help_text = p.format_help()
    assert "--device" in help_text and "--out" in help_text
    assert "--compile" not in help_text and "--lr" not in help_text
    with pytest.raises(SystemExit):
        p.parse_args(["--compile"])  # refused by argparse, not silently ignored
    assert "unrecognized arguments: --compile" in capsys.readouterr().err
    with pytest.raises(ValueError):
        course_parser("x", "device", lr=1e-3)  # a default for a flag the script does not offer


def test_lr_schedule_values():
    kw = dict(max_lr=1.0, total_steps=110, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, **kw) == pytest.approx(0.1)        # warmup starts small, never at 0
    assert lr_at(9, **kw) == pytest.approx(1.0)        # end of warmup: the peak
    assert lr_at(60, **kw) == pytest.approx(0.55)      # halfway through the cosine: the mean of max and min
    assert lr_at(110, **kw) == pytest.approx(0.1)      # the floor
    assert lr_at(500, **kw) == pytest.approx(0.1)
    lrs = [lr_at(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))   # monotone decay after warmup


def test_run_logger_writes_metrics_and_plot(tmp_path):
    log = RunLogger(tmp_path, total_steps=4, enabled=True)
    for s in range(4):
        log.train_step(s, loss=4.0 - s, lr=1e-3, tokens=100)
    log.eval(3, val_loss=1.5)
    png = log.close()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows] == ["train"] * 4 + ["eval"]
    assert rows[-1]["val_loss"] == 1.5 and png.is_file() and png.stat().st_size > 1000
    # Resuming at step 2 drops the records from step 2 on, so the log matches an uninterrupted run.
    RunLogger(tmp_path, total_steps=4, start_step=2).close()
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [0, 1]


def test_summary_is_one_json_line(capsys):
    print_summary(val_loss=1.25, device="cpu")
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and json.loads(out) == {"val_loss": 1.25, "device": "cpu"}
