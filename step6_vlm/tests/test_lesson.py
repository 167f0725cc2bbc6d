"""The lesson's own commands, run as a student types them: `python model.py --demo`, `python train.py --quick
--epochs 3` through stages 0–2, and `python demo.py --image test.jpg --prompt "描述这张图片"` on that checkpoint,
from the step folder and from the repository root."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

STEP = Path(__file__).resolve().parents[1]
ROOT = STEP.parent
KEYS = {"vqa_accuracy", "vqa_accuracy_by_type", "heldout_combo_accuracy", "describe_f1", "describe_exact",
        "hallucination_rate", "pretrain_describe_f1", "pretrain_describe_exact", "pretrain_hallucination_rate",
        "offworld_idk_rate", "init_from", "wall_s"}
IMAGES = 40   # training pictures: a few seconds per stage


def _run(args, cwd, runs, timeout=600):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COURSE_RUNS": str(runs)}
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def quick_vlm(tmp_path_factory):
    """train.py --quick --epochs 3 from the step folder, with an empty runs/ (so stage 0 runs too)."""
    tmp = tmp_path_factory.mktemp("vlm")
    r = _run(["train.py", "--quick", "--epochs", "3", "--images", IMAGES, "--eval-images", 10, "--cache-dir", tmp / "cache"],
             STEP, tmp / "runs")
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp / "runs", json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


def test_model_demo_prints_shapes_and_the_freeze_table(tmp_path):
    r = _run(["model.py", "--demo"], STEP, tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "image tokens" in r.stdout and "freeze table" in r.stdout and "pretrain" in r.stdout and "sft" in r.stdout


@pytest.mark.slow
def test_quick_train_runs_every_stage_with_epochs(quick_vlm):
    runs, summary, log = quick_vlm
    assert summary["stages_run"] == ["clip", "pretrain", "sft"] and KEYS <= set(summary)
    assert 0 <= summary["describe_f1"] <= 1 and 0 <= summary["pretrain_describe_f1"] <= 1
    # --epochs 3: stage 1 = 3 passes over the descriptions (2 per picture, batch 8); stage 2 = 3 over its final mix
    assert summary["pretrain_steps"] == round(3 * 2 * IMAGES / 8)
    assert summary["steps"] > summary["pretrain_steps"]
    for stage in ("clip", "vlm_pretrain", "vlm_sft"):
        assert (runs / stage / "config.json").is_file(), stage
    for stage in ("vlm_pretrain", "vlm_sft"):   # the best checkpoint by validation score, a checkpoint itself
        best = json.loads((runs / stage / "best" / "metrics.json").read_text()) if (runs / stage / "best" / "metrics.json").is_file() else None
        assert (runs / stage / "best" / "config.json").is_file() and (best is None or "val_score" in best)
    ckpt = json.loads((runs / "vlm_sft" / "config.json").read_text())
    assert ckpt["train_args"]["recipe"]["sft"]["batch"] == 8            # the recipe travels with the checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("where", ["step folder", "repository root"])
def test_demo_describes_the_test_picture(quick_vlm, where):
    runs = quick_vlm[0]
    cwd, script, image = (STEP, "demo.py", "test.jpg") if where == "step folder" else (ROOT, "step6_vlm/demo.py", "step6_vlm/test.jpg")
    r = _run([script, "--image", image, "--prompt", "描述这张图片"], cwd, runs, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[vlm_sft] 描述这张图片" in r.stderr and r.stdout.strip()   # an answer was printed, never nothing
