"""Pretraining's objective made visible: next-token prediction on a stream of tokens.

The network is step 2's GPT, unchanged. What pretraining adds is *what we ask of it*: cut windows of T+1
tokens out of one long token stream; the first T are the input x, the last T (the same window shifted by one)
are the targets y. Every position of every window is one classification problem — "which token comes next?"
— and the loss is the mean cross-entropy over all of them.

    python model.py --demo     # one batch and its targets, the untrained loss against ln(vocab), perplexity
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import math

import numpy as np
import torch

from common.device import autocast
from common.errors import CourseError
from step2_gpt.model import GPT, GPTConfig

# ----------------------------------------------------------------------------------------------------
# Pretraining presets: the model size (step 2's presets) plus the run that suits it. Numbers for `tiny` were
# tuned so that the default CPU run ends within 5 minutes on 2 cores (README: measured numbers).
# seq_len: training context; batch_size: sequences per optimizer step (per process); steps: optimizer steps.

PRETRAIN_PRESETS = {
    "tiny": dict(seq_len=128, batch_size=32, grad_accum=1, lr=3e-3, warmup=20, steps=240, weight_decay=0.1,
                 eval_every=60, eval_windows=64),
    "small": dict(seq_len=512, batch_size=32, grad_accum=2, lr=1e-3, warmup=200, steps=5000, weight_decay=0.1,
                  eval_every=250, eval_windows=200),
    "base": dict(seq_len=1024, batch_size=16, grad_accum=4, lr=6e-4, warmup=500, steps=20000, weight_decay=0.1,
                 eval_every=500, eval_windows=200),
}


def pretrain_preset(name: str) -> dict:
    if name not in PRETRAIN_PRESETS:
        raise CourseError(f"unknown --size {name!r}; choose one of {', '.join(PRETRAIN_PRESETS)}")
    return dict(PRETRAIN_PRESETS[name])


# ----------------------------------------------------------------------------------------------------
# How a batch is cut from the token stream


def batch_offsets(seed: int, step: int, n_windows: int, n_tokens: int, seq_len: int) -> np.ndarray:
    """Start positions of the `n_windows` windows of optimizer step `step`. They depend only on (seed, step),
    never on what happened before: a resumed run (or another process of a multi-GPU run) draws exactly the
    windows an uninterrupted single run would."""
    if n_tokens < seq_len + 2:
        raise CourseError(f"the token stream has {n_tokens} tokens, too few for one window of seq_len={seq_len} "
                          f"(+1 for the shifted target); give more text or lower --seq-len")
    rng = np.random.default_rng([seed, step])  # a counter-based seed: step k's draw needs no steps before it
    return rng.integers(0, n_tokens - seq_len - 1, size=n_windows)  # each window needs seq_len + 1 tokens


def cut_batch(tokens, offsets, seq_len: int):
    """x = tokens[o : o+T], y = tokens[o+1 : o+T+1] for each offset o: y is x shifted left by one, so y[:, t]
    is the token that follows x[:, t]. Works on a numpy array or a read-only np.memmap of any int dtype."""
    idx = np.asarray(offsets)[:, None] + np.arange(seq_len + 1)[None, :]   # (B, T+1)
    window = torch.from_numpy(np.asarray(tokens[idx], dtype=np.int64))     # (B, T+1)
    return window[:, :-1], window[:, 1:]                                   # x (B, T), y (B, T)


def eval_offsets(n_tokens: int, seq_len: int, max_windows: int) -> np.ndarray:
    """Fixed validation windows: non-overlapping, spread evenly over the stream, the same at every eval, so
    two evals differ only because the model changed."""
    n_full = (n_tokens - 1) // seq_len
    if n_full < 1:
        raise CourseError(f"the validation stream has {n_tokens} tokens, fewer than one window of "
                          f"seq_len={seq_len} + 1; give more validation text or lower --seq-len")
    pick = np.linspace(0, n_full - 1, num=min(max_windows, n_full)).round().astype(np.int64)
    return np.unique(pick) * seq_len


@torch.no_grad()
def evaluate(model, stream, offsets, seq_len, micro, device, dtype, rank, world):
    """Mean next-token loss over fixed validation windows (each process takes every world-th window)."""
    model.eval()
    total = torch.zeros(2, device=device)  # (sum of losses × windows, windows)
    mine = offsets[rank::world]
    for i in range(0, len(mine), micro):
        x, y = cut_batch(stream, mine[i:i + micro], seq_len)
        with autocast(device, dtype):
            _, loss = model(x.to(device), targets=y.to(device))
        total += torch.stack([loss.float() * len(x), torch.tensor(float(len(x)), device=device)])
    if world > 1:
        torch.distributed.all_reduce(total)
    model.train()
    return (total[0] / total[1]).item()


# ----------------------------------------------------------------------------------------------------
# Reading a loss


def uniform_loss(vocab_size: int) -> float:
    """Cross-entropy of a model that spreads its probability evenly: -ln(1/V) = ln(V). An untrained GPT
    (small random logits) is close to this; a loss far above it means something is broken."""
    return math.log(vocab_size)


def perplexity(loss: float) -> float:
    """exp(loss): "the model is as unsure as if it picked among this many tokens uniformly"."""
    return math.exp(min(loss, 50.0))  # capped so a diverged run prints a number, not an overflow


def build_model(size: str, vocab_size: int, seq_len: int, **overrides) -> GPT:
    """Step 2's preset with our vocabulary, and a context at least as long as the training windows."""
    cfg = GPTConfig.preset(size, vocab_size=vocab_size, **overrides)
    if cfg.block_size < seq_len:
        cfg = GPTConfig.preset(size, vocab_size=vocab_size, **{**overrides, "block_size": seq_len})
    return GPT(cfg)


# ----------------------------------------------------------------------------------------------------
# python model.py --demo


def demo(text: str | None = None):
    from step1_tokenizer.model import course_tokenizer

    text = text or ("小明有3个苹果，吃了1个，还剩2个。\nTom has 2 apples. He eats 1. Now he has 1 apple.\n"
                    "红色和黄色混在一起是橙色。\nThere are 2 shapes: a big red circle at the top left and "
                    "a small blue star at the center.\n")
    tok = course_tokenizer(fallback=True)  # step 1's, or its small stand-in when step 1 has not run
    stream = np.array(tok.encode(text), dtype=np.int64)
    T, B = 12, 3
    print(f"== a token stream: {len(stream)} tokens with the course's BPE tokenizer, vocab {tok.vocab_size}")
    print("  first 24 ids:", stream[:24].tolist())

    offsets = batch_offsets(seed=0, step=0, n_windows=B, n_tokens=len(stream), seq_len=T)
    x, y = cut_batch(stream, offsets, T)
    print(f"\n== one batch: offsets {offsets.tolist()}, x and y are ({B}, {T}); y is x shifted by one")
    for b in range(B):
        print(f"  x[{b}] = {x[b].tolist()}\n  y[{b}] = {y[b].tolist()}")
    print("\n== row 0 as training examples (context → the token to predict)")
    for t in range(6):
        print(f"  {tok.decode(x[0, :t + 1].tolist())!r:>30} → {tok.decode([int(y[0, t])])!r}")

    torch.manual_seed(0)
    model = build_model("tiny", tok.vocab_size, T).eval()
    with torch.no_grad():
        _, loss = model(x, targets=y)
    print(f"\n== the untrained model (tiny preset, {sum(p.numel() for p in model.parameters()):,} parameters)")
    print(f"  loss {loss.item():.4f}   vs ln(vocab) = ln({tok.vocab_size}) = {uniform_loss(tok.vocab_size):.4f}")
    print(f"  perplexity {perplexity(loss.item()):.1f}  (≈ vocab {tok.vocab_size}: it guesses uniformly)")
    print("  training pushes the loss down; on the data world the default run ends near perplexity 2–3.")
    print("\n== pretraining presets (python train.py --size NAME)")
    for name, p in PRETRAIN_PRESETS.items():
        tokens = p["batch_size"] * p["seq_len"] * p["steps"]
        print(f"  {name:<6} {p}  → {tokens / 1e6:.1f}M tokens")


def main():
    from common.cli import demo_parser, wants_demo
    p = demo_parser("Step 3's objective: how a batch is cut from a token stream and what the loss means.")
    p.add_argument("--text", default=None, help="演示文本 text to cut the demo batch from")
    args = wants_demo(p)
    if args:
        demo(args.text)


if __name__ == "__main__":
    from common.cli import run
    run(main)
