"""Step 4: the mask, the masked loss, LoRA's invariants, resume and bad input."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from step1_tokenizer.model import course_tokenizer
from step2_gpt.model import GPT, GPTConfig, load_gpt
from step4_sft.data import TASKS, is_heldout, world_conversations
from step4_sft.model import apply_lora, merge_lora, unmerge_lora
from step4_sft.train import make_batch, masked_loss

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tok():
    return course_tokenizer(fallback=True, say=None)


def small_gpt(tok):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=256, n_layer=1, n_head=2, n_embd=32))


def test_mask_covers_exactly_assistant_spans(tok):
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"},
            {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}]
    ids, mask = tok.render_conversation(msgs)
    trained = [i for i, m in zip(ids, mask) if m]
    assert trained == tok.encode("A1") + [tok.im_end_id] + tok.encode("A2") + [tok.im_end_id]


def test_splits_disjoint_and_every_task():
    train, held = world_conversations(100, 1), world_conversations(50, 1, "heldout")
    assert {c["task"] for c in held} == set(TASKS)
    assert not any(is_heldout(c["messages"]) for c in train) and all(is_heldout(c["messages"]) for c in held)


def test_user_targets_do_not_change_loss_and_empty_batch_is_finite(tok):
    model = small_gpt(tok)
    ex = [tok.render_conversation(c["messages"]) for c in world_conversations(3, 2)]
    x, y = make_batch(ex, tok.pad_id)
    l1 = masked_loss(model, x, y)
    y_user = y.clone()
    y_user[(y == -100) & (x != tok.pad_id)] = -100  # user positions carry no target: a changed one cannot count
    assert masked_loss(model, x, y_user).item() == l1.item()
    ex_user = [(ids, [0] * len(m)) for ids, m in ex]
    xe, ye = make_batch(ex_user, tok.pad_id)
    l0 = masked_loss(model, xe, ye)
    assert torch.isfinite(l0) and l0.item() == 0.0
    l0.backward()  # no NaN gradients either
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert torch.isfinite(l1)


def test_lora_init_equals_base_merge_equals_unmerged_trains_only_ab(tok):
    model = small_gpt(tok).eval()
    x = torch.randint(0, tok.vocab_size, (2, 10))
    base = model(x)[0]
    apply_lora(model, r=4)
    assert torch.allclose(model(x)[0], base, atol=1e-6)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all("lora_" in n for n in names)
    for n, p in model.named_parameters():
        if "lora_b" in n:
            torch.nn.init.normal_(p, std=0.1)
    unmerged = model(x)[0]
    assert not torch.allclose(unmerged, base, atol=1e-4)
    merge_lora(model)
    assert (model(x)[0] - unmerged).abs().max() <= 1e-5
    unmerge_lora(model)
    assert (model(x)[0] - unmerged).abs().max() <= 1e-5


def _train(argv):
    return subprocess.run([sys.executable, str(ROOT / "step4_sft/train.py"), *argv], capture_output=True, text=True,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_lora_saves_loadable_merged_checkpoint_and_bad_rank(tmp_path):
    pre = ROOT / "runs/pretrain"
    if not (pre / "config.json").is_file():
        pytest.skip("runs/pretrain missing")
    r = _train(["--init", str(pre), "--out", str(tmp_path / "l"), "--lora", "2", "--max-steps", "2", "--batch-size", "2", "--examples", "20"])
    assert r.returncode == 0, r.stderr
    model, _, ckpt = load_gpt(tmp_path / "l", expect_steps="sft")
    assert ckpt.step == "sft"
    r = _train(["--init", str(pre), "--out", str(tmp_path / "b"), "--lora", "0"])
    assert r.returncode == 2 and "error:" in r.stderr and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_resume_continues_exactly(tmp_path):
    pre = ROOT / "runs/pretrain"
    if not (pre / "config.json").is_file():
        pytest.skip("runs/pretrain missing")
    common = ["--init", str(pre), "--max-steps", "4", "--batch-size", "2", "--examples", "20"]
    assert _train([*common, "--out", str(tmp_path / "a")]).returncode == 0
    assert _train([*common, "--out", str(tmp_path / "b"), "--stop-at", "2"]).returncode == 0
    r = _train([*common, "--out", str(tmp_path / "b"), "--resume"])
    assert r.returncode == 0, r.stderr
    a, _, _ = load_gpt(tmp_path / "a")
    b, _, _ = load_gpt(tmp_path / "b")
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), n
