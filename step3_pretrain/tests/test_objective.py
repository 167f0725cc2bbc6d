"""The next-token objective: batches are the stream shifted by one, drawn from (seed, step); loss ≈ ln(V) untrained."""
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from common.errors import CourseError
from common.training import lr_at
from step3_pretrain.model import (PRETRAIN_PRESETS, batch_offsets, build_model, cut_batch, eval_offsets,
                                  perplexity, uniform_loss)
from step3_pretrain.tests.helpers import run, tiny_args, write_text


def test_batch_targets_are_inputs_shifted_by_one():
    tokens = np.arange(1000, dtype=np.uint16) * 3 % 997  # any stream with distinct neighbours
    offsets = batch_offsets(seed=1, step=5, n_windows=6, n_tokens=len(tokens), seq_len=16)
    x, y = cut_batch(tokens, offsets, 16)
    assert x.shape == y.shape == (6, 16) and x.dtype == torch.long
    assert torch.equal(x[:, 1:], y[:, :-1])                      # y is x moved left by one
    for b, o in enumerate(offsets):
        assert x[b].tolist() == tokens[o:o + 16].tolist()
        assert y[b].tolist() == tokens[o + 1:o + 17].tolist()   # y[t] = the token after x[t]


def test_batches_depend_only_on_seed_and_step():
    a = batch_offsets(7, 3, 8, 10_000, 64)
    assert np.array_equal(a, batch_offsets(7, 3, 8, 10_000, 64))   # no hidden state: resumable
    assert not np.array_equal(a, batch_offsets(7, 4, 8, 10_000, 64))
    assert not np.array_equal(a, batch_offsets(8, 3, 8, 10_000, 64))
    assert a.min() >= 0 and a.max() <= 10_000 - 64 - 1            # every window has its +1 target
    with pytest.raises(CourseError, match="too few"):
        batch_offsets(0, 0, 4, 50, 64)


def test_eval_windows_are_fixed_and_disjoint():
    offs = eval_offsets(n_tokens=1000, seq_len=32, max_windows=10)
    assert len(offs) == 10 and np.all(np.diff(offs) >= 32) and offs.max() + 33 <= 1000
    assert np.array_equal(offs, eval_offsets(1000, 32, 10))


def test_untrained_loss_is_about_ln_vocab():
    torch.manual_seed(0)
    model = build_model("tiny", vocab_size=512, seq_len=64).eval()
    x = torch.randint(0, 512, (4, 64))
    with torch.no_grad():
        _, loss = model(x, targets=torch.roll(x, -1, 1))
    assert abs(loss.item() - uniform_loss(512)) < 0.1             # ln 512 = 6.24
    assert perplexity(uniform_loss(512)) == pytest.approx(512)
    assert perplexity(0.0) == 1.0


def test_presets_are_consistent():
    for p in PRETRAIN_PRESETS.values():
        assert p["batch_size"] % p["grad_accum"] == 0 and p["warmup"] < p["steps"]
    assert build_model("tiny", 100, seq_len=2048).config.block_size == 2048  # context grows to the windows


def test_lr_follows_warmup_and_cosine(tmp_path):
    """The loop asks common.training.lr_at for every step: warmup, then cosine to lr × 0.1."""
    data = write_text(tmp_path)
    run(tiny_args(tmp_path, data, steps=10))
    import json
    rows = [json.loads(ln) for ln in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if r["kind"] == "train"]
    want = [lr_at(s, max_lr=3e-3, total_steps=10, warmup_steps=2, min_lr_ratio=0.1) for s in range(10)]
    assert lrs == pytest.approx(want)
    assert lrs[0] < lrs[1] == pytest.approx(3e-3) and lrs[-1] < lrs[2]
    assert lr_at(10, max_lr=3e-3, total_steps=10, warmup_steps=2) == pytest.approx(3e-4)


def test_model_demo_runs():
    r = subprocess.run([sys.executable, "step3_pretrain/model.py", "--demo"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ln(vocab)" in r.stdout and "y[0]" in r.stdout
    assert math.isfinite(float(r.stdout.split("loss ")[1].split()[0]))
