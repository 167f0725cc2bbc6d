"""The lesson's scripts and notebook run: model.py --demo, demo.py, bench.py (its JSON line), lesson.ipynb."""
import json
import subprocess
import sys

import pytest

from common import REPO_ROOT
from common.world import generate_docs

STEP = REPO_ROOT / "step1_tokenizer"


def _run(script, *args):
    r = subprocess.run([sys.executable, script, *args], cwd=STEP, capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_bench_reports_parity_and_speed(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(generate_docs(150_000, seed=3)), encoding="utf-8")
    out = _run("bench.py", "--text", str(corpus), "--vocab-size", "700")
    summary = json.loads(out.strip().splitlines()[-1])
    for key in ("train_s_ours", "train_s_hf", "train_time_ratio_vs_hf", "bytes_per_token_ours", "bytes_per_token_hf",
                "hf_parity", "encode_mb_s_ours"):
        assert key in summary
    assert summary["hf_parity"] == 1.0 and summary["hf_parity_with_specials"] == 1.0
    assert abs(summary["bytes_per_token_ours"] / summary["bytes_per_token_hf"] - 1) < 0.02


def test_demo_side_by_side_and_plot(tmp_path):
    out = _run("demo.py", "--quick", "--text", "小明有3个苹果，Tom has 3 apples.", "--plot", str(tmp_path / "compression_vs_vocab.png"))
    assert "ours" in out and "HF" in out and (tmp_path / "compression_vs_vocab.png").stat().st_size > 1000


def test_model_demo_shows_tokens_and_mask():
    out = _run("model.py", "--demo")
    assert "decode(encode(text)) == text: True" in out and "[<|im_end|>]" in out


@pytest.mark.notebook
def test_lesson_notebook_runs(run_notebook):
    run_notebook(STEP / "lesson.ipynb", timeout=120)
