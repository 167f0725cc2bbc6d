"""Side by side with nanoGPT: character-level tiny-shakespeare, wall time from process start to a target val loss.

    python bench.py                       # CPU: target val loss 1.88 (nanoGPT's README CPU recipe ends near it)
    python bench.py --device cuda         # GPU: target 1.47, plus `base` (~124M, context 1024) tokens/s
Data: --text (default ../shared/data/tinyshakespeare.txt next to the repository), first 90% train, last 10% val
— nanoGPT's split — one id per character. Any model shape and schedule is allowed (a speedrun); the one used is
printed and lands in the JSON. The same train.py loop runs it: nothing here is special-cased for the benchmark.
The last line is JSON: time_to_target_s, target_val_loss, best_val_loss, final_val_loss, tokens_per_s, device.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import json
import subprocess
import time

import torch

from common import REPO_ROOT, RUNS_DIR
from common.cli import course_parser
from common.device import autocast, pick_device, pick_dtype
from common.errors import CourseError
from common.training import print_summary

DEFAULT_TEXT = REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
# The speedrun settings. CPU: nanoGPT's shape (4 × 128) as step 2's Llama-style GPT (RoPE, SwiGLU, RMSNorm), small
# batches (many updates per token), a 4× higher LR with a short warmup, and a cosine short enough that the whole
# run ends within half of nanoGPT's wall time. Evals use fixed validation windows (4k tokens), every 50 steps.
CONFIGS = {
    "cpu": dict(target=1.88, n_layer=4, n_head=4, n_embd=128, seq_len=64, batch_size=16, lr=4e-3, warmup=30,
                max_steps=750, eval_every=50, eval_windows=128),
    # GPU (not measured here: no GPU was at hand): nanoGPT's shape and dropout, bf16 + compile + fused AdamW.
    "cuda": dict(target=1.47, n_layer=6, n_head=6, n_embd=384, seq_len=256, batch_size=64, lr=1.5e-3, warmup=100,
                 max_steps=2000, eval_every=100, eval_windows=200, dropout=0.2),
}


def base_tokens_per_s(device, dtype, compile_model: bool, steps: int = 20) -> float:
    """Training throughput of the `base` preset (~124M parameters, context 1024), nanoGPT bench.py's setting:
    batch 12 × 1024 random tokens, AdamW, bf16 autocast."""
    from step2_gpt.model import GPT, GPTConfig
    model = GPT(GPTConfig.preset("base")).to(device)
    fwd = torch.compile(model) if compile_model else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    x = torch.randint(0, model.config.vocab_size, (12, 1025), device=device)
    for i in range(steps + 5):
        if i == 5:  # the first steps compile and warm up: not timed
            torch.cuda.synchronize(device) if device.type == "cuda" else None
            t0 = time.perf_counter()
        with autocast(device, dtype):
            _, loss = fwd(x[:, :-1], targets=x[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize(device) if device.type == "cuda" else None
    return 12 * 1024 * steps / (time.perf_counter() - t0)


def full_val_loss(out, text, device) -> float:
    """The last checkpoint's loss on ALL non-overlapping windows of the validation split (the timed evals use a
    fixed subset to stay cheap; this says how representative that subset was)."""
    from step2_gpt.model import load_gpt
    from step3_pretrain.data import prepare_data
    from step3_pretrain.model import eval_offsets, evaluate
    model, _, ckpt = load_gpt(out, device=device)
    a = ckpt.train_args
    _, data, _ = prepare_data([str(text)], "char", False, a.get("cache_dir"), 1.0, 0)
    offs = eval_offsets(len(data.val), a["seq_len"], 10**9)
    return evaluate(model, data.val, offs, a["seq_len"], 64, device, torch.float32, 0, 1)


def main():
    p = course_parser("Step 3 benchmark: tiny-shakespeare, char level, time to a target val loss (vs nanoGPT).",
                      "device", "dtype", "max_steps", "batch_size", "lr", "seed", "out", "compile", "quick",
                      out=str(RUNS_DIR / "bench_shakespeare"))
    p.add_argument("--text", default=str(DEFAULT_TEXT), help="tiny-shakespeare 文本 the text file (not copied anywhere)")
    p.add_argument("--target", type=float, default=None, help="目标 val loss (1.88 on CPU, 1.47 on CUDA)")
    p.add_argument("--skip-base", action="store_true", help="CUDA: skip the base-model tokens/s measurement")
    args = p.parse_args()
    device = pick_device(args.device)
    kind = "cuda" if device.type == "cuda" else "cpu"
    cfg = dict(CONFIGS[kind])
    target = args.target if args.target is not None else cfg.pop("target")
    cfg.pop("target", None)
    for flag in ("max_steps", "batch_size", "lr"):  # the shared flags may override the speedrun settings
        if getattr(args, flag) is not None:
            cfg[flag] = getattr(args, flag)
    if args.quick:
        cfg.update(max_steps=20, eval_every=10, eval_windows=8)
    text = pathlib.Path(args.text)
    if not text.is_file():
        raise CourseError(f"no tiny-shakespeare text at {text}; pass --text PATH (a plain .txt file)")
    argv = ["--tokenizer", "char", "--data", str(text), "--device", args.device, "--dtype", args.dtype,
            "--out", args.out, "--seed", str(args.seed), "--target-loss", str(target), "--sample-tokens", "0",
            "--min-lr-ratio", "0.1", "--weight-decay", "0.1", "--no-qk-norm"]  # the measured speedrun: plain Llama blocks
    argv += [x for k, v in cfg.items() for x in (f"--{k.replace('_', '-')}", str(v))]
    if args.compile:
        argv.append("--compile")
    print(f"benchmark config ({kind}): {cfg}, target val loss {target}", flush=True)
    # train.py in its own process, timed from that process's start like nanoGPT's train.py; its last line is JSON.
    r = subprocess.run([sys.executable, str(pathlib.Path(__file__).with_name("train.py")), *argv],
                       stdout=subprocess.PIPE, text=True)
    print(r.stdout, end="")
    if r.returncode != 0:
        raise CourseError(f"train.py stopped with exit status {r.returncode} (its message is above)")
    s = json.loads(r.stdout.strip().splitlines()[-1])

    full_val = full_val_loss(pathlib.Path(args.out), text, device)  # after the clock: every val window, not a subset
    figures = dict(time_to_target_s=round(s["time_to_target_s"], 2) if s["time_to_target_s"] else None,
                   target_val_loss=target, best_val_loss=round(s["best_val_loss"], 4),
                   final_val_loss=round(s["val_loss"], 4), final_full_val_loss=round(full_val, 4), tokens_per_s=s["tokens_per_s"], wall_s=s["wall_s"],
                   steps=s["steps"], params=s["params"], device=s["device"], config=cfg)
    if kind == "cuda" and not args.skip_base:
        figures["base_tokens_per_s"] = round(base_tokens_per_s(device, pick_dtype(args.dtype, device), args.compile))
    print(f"\n{'figure':<18} value")
    for k in ("time_to_target_s", "target_val_loss", "best_val_loss", "final_val_loss", "final_full_val_loss",
              "tokens_per_s", "wall_s"):
        print(f"{k:<18} {figures[k]}")
    print_summary(**figures)


if __name__ == "__main__":
    from common.cli import run
    run(main)
