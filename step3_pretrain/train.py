"""Pretraining: teach step 2's GPT to predict the next token of the data world (or of your text).

    python train.py                                  # tiny preset on the data world, CPU, < 5 minutes
    python train.py --quick                          # seconds-long smoke run
    python train.py --data my.txt --size small --device cuda --compile
    torchrun --nproc_per_node 4 train.py --size base --data hf:roneneldan/TinyStories   # several GPUs
    python train.py --resume                         # continue exactly where runs/pretrain stopped

Writes <out> (default runs/pretrain): the last checkpoint (+ training_state.pt for --resume), metrics.jsonl and
loss_curve.png; <out>/best/: the checkpoint with the lowest val loss. Read it top to bottom: one step of the loop
is "cut a batch → forward → loss → backward → clip → optimizer step → schedule the LR".
Last line, one JSON object with the keys: step, val_loss, val_ppl, best_val_loss, steps, tokens_seen, tokens_per_s,
wall_s, time_to_target_s (from process start to the first eval ≤ --target-loss, else null), params, device,
world_size, interrupted, out.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import argparse
import contextlib
import math
import os
import time
from pathlib import Path

import torch

from common import RUNS_DIR
from common.checkpoint import load_checkpoint, load_training_state, save_checkpoint
from common.cli import SHARED_FLAGS, course_parser
from common.device import autocast
from common.errors import CourseError
from common.training import RunLogger, lr_at, make_optimizer, mean_over_processes, process_start, start_run
from step2_gpt.model import GPT_STEPS, load_gpt
from step3_pretrain.data import check_enough, prepare_data, sample_prompts, tokenizer_fingerprint
from step3_pretrain.model import (batch_offsets, build_model, cut_batch, eval_offsets, evaluate, perplexity,
                                  pretrain_preset)

PROCESS_START = process_start()  # wall times count from here, start-up included
# Flags that define the run: on --resume, any you do not pass again are taken from the checkpoint.
RUN_KEYS = ("size", "seq_len", "batch_size", "grad_accum", "lr", "warmup", "max_steps", "weight_decay", "eval_every",
            "eval_windows", "data", "tokenizer", "world_mb", "seed", "n_layer", "n_head", "n_embd", "dropout", "min_lr_ratio", "qk_norm")


def make_parser():
    p = course_parser("Step 3: pretrain the GPT on next-token prediction.", *SHARED_FLAGS, out=str(RUNS_DIR / "pretrain"),
                      seed=None)
    a = p.add_argument
    a("--tokenizer", default=None, help="分词器 'char' (one id per character) or a tokenizer folder; default runs/tokenizer")
    a("--seq-len", type=int, default=None, help="上下文长度 tokens per training window (preset)")
    a("--grad-accum", type=int, default=None, help="梯度累积 split each batch into this many micro-batches")
    a("--warmup", type=int, default=None, help="预热步数 linear LR warmup steps")
    a("--min-lr-ratio", type=float, default=None, help="最低学习率比例 cosine decays to lr × this (0.1)")
    a("--weight-decay", type=float, default=None, help="权重衰减 AdamW weight decay on matrices")
    a("--clip", type=float, default=1.0, help="梯度裁剪 clip the gradient norm to this")
    a("--eval-every", type=int, default=None, help="评估间隔 evaluate, sample and checkpoint every N steps")
    a("--eval-windows", type=int, default=None, help="验证窗口数 validation windows per eval")
    a("--n-layer", type=int, default=None, help="覆盖层数 override the preset's layer count")
    a("--n-head", type=int, default=None, help="覆盖头数 override the preset's head count")
    a("--n-embd", type=int, default=None, help="覆盖宽度 override the preset's width")
    a("--qk-norm", action=argparse.BooleanOptionalAction, default=None,
      help="QK 归一化 RMSNorm on queries and keys (default on, as in Qwen3/OLMo2; --no-qk-norm = Llama, exportable; see step6_vlm/lab/lookup.py)")
    a("--dropout", type=float, default=None, help="dropout (0 for short runs: there is no overfitting to fight)")
    a("--world-mb", type=float, default=None, help="数据世界大小 size of the generated corpus in MB (4)")
    a("--cache-dir", default=None, help="token 缓存 where tokenized corpora are kept (runs/tokens)")
    a("--target-loss", type=float, default=None, help="目标损失 report the time of the first eval at or below this")
    a("--sample-tokens", type=int, default=48, help="采样长度 tokens of the sample printed at each eval")
    a("--stop-at", type=int, default=None, help="在此步停止 save and stop after this step, as if interrupted")
    return p


def setup_args(args):
    """Fill what the user left unset: from the checkpoint when resuming, else from the size preset."""
    saved = {}
    if args.resume:
        ckpt = load_checkpoint(args.out, expect_steps="pretrain", hint="python step3_pretrain/train.py")
        saved = ckpt.train_args
    for k in RUN_KEYS:
        if getattr(args, k) is None and saved.get(k) is not None:
            setattr(args, k, saved[k])
    args.size = args.size or "tiny"
    preset = pretrain_preset(args.size)
    if args.quick:  # seconds, not minutes: a small world, short windows, a few steps
        preset.update(seq_len=64, batch_size=8, steps=30, warmup=5, eval_every=15, eval_windows=8)
        args.n_layer, args.n_embd = args.n_layer or 2, args.n_embd or 128
    defaults = dict(seq_len=preset["seq_len"], batch_size=preset["batch_size"], grad_accum=preset["grad_accum"],
                    lr=preset["lr"], warmup=preset["warmup"], max_steps=preset["steps"], weight_decay=preset["weight_decay"],
                    eval_every=preset["eval_every"], eval_windows=preset["eval_windows"], min_lr_ratio=0.1,
                    world_mb=0.5 if args.quick else 4.0, seed=1337, dropout=0.0)
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.batch_size % args.grad_accum:
        raise CourseError(f"--batch-size {args.batch_size} must be divisible by --grad-accum {args.grad_accum}")
    return args


def train(args):
    """The whole run; returns its summary (wall times count from the process start)."""
    t_start = PROCESS_START
    args = setup_args(args)
    rank, world, device, dtype, is_main, say = start_run(args.device, args.dtype, args.seed)
    out = Path(args.out)

    # --- data: tokenize once (the first process), everyone else reads the same memory-mapped file
    if world > 1 and not is_main:
        torch.distributed.barrier()
    tok, data, what = prepare_data(args.data, args.tokenizer, args.quick, args.cache_dir, args.world_mb, args.seed)
    if world > 1 and is_main:
        torch.distributed.barrier()
    check_enough(data, args.seq_len)
    fingerprint = tokenizer_fingerprint(tok)
    say(f"data: {what}\n      {data}, vocab {tok.vocab_size}, tokenizer {type(tok).__name__} {fingerprint}")

    # --- model (fresh, from --init, or from the checkpoint we resume) and optimizer
    overrides = {k: getattr(args, k) for k in ("n_layer", "n_head", "n_embd", "dropout", "qk_norm") if getattr(args, k) is not None}
    start = args.out if args.resume else args.init
    if start:
        model, start_tok, _ = load_gpt(start, expect_steps=("pretrain",) if args.resume else GPT_STEPS)
        if tokenizer_fingerprint(start_tok) != fingerprint:
            raise CourseError(f"{start} was trained with another tokenizer (vocab {start_tok.vocab_size}, now "
                              f"{tok.vocab_size}); pass the same --tokenizer, or start fresh without --resume/--init")
    else:
        # QK-norm on unless --no-qk-norm: step 6 learns its two-hop image lookup several times sooner with it
        model = build_model(args.size, tok.vocab_size, args.seq_len, **({"qk_norm": True} | overrides))
    model.to(device)
    optimizer = make_optimizer(model, args.lr, args.weight_decay, device)
    step, best_val, tokens_seen = 0, float("inf"), 0
    if args.resume:
        state = load_training_state(args.out)
        if state is None:
            raise CourseError(f"{args.out} holds no training_state.pt to resume from; start without --resume")
        optimizer.load_state_dict(state["optimizer"])
        step, best_val, tokens_seen = state["step"], state["best_val"], state["tokens_seen"]
        torch.set_rng_state(state["rng_cpu"])  # dropout draws continue as if never stopped
        if device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"])
        say(f"resuming at step {step} of {args.max_steps}")
    raw = model  # the plain module: checkpoints, eval and sampling use it
    fwd = torch.compile(model) if args.compile else model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        fwd = DDP(fwd, device_ids=[device.index] if device.type == "cuda" else None)
    n_params = sum(p.numel() for p in raw.parameters())
    global_batch = args.batch_size * world
    tokens_per_step = global_batch * args.seq_len
    if args.epochs:  # --epochs wins over --max-steps: steps that show every training token ~epochs times
        args.max_steps = math.ceil(args.epochs * len(data.train) / tokens_per_step)
    say(f"model: {n_params / 1e6:.2f}M parameters {raw.config}\nrun: {args.max_steps} steps × {global_batch} "
        f"windows × {args.seq_len} tokens = {args.max_steps * tokens_per_step / 1e6:.2f}M tokens "
        f"({args.max_steps * tokens_per_step / len(data.train):.2f} epochs), {world} process(es) on {device}, {dtype}")

    def save(folder, with_state, metrics):
        if not is_main:
            return
        state = {"optimizer": optimizer.state_dict(), "step": step, "best_val": best_val, "tokens_seen": tokens_seen,
                 "rng_cpu": torch.get_rng_state(),
                 "rng_cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None} if with_state else None
        save_checkpoint(folder, state_dict=raw.state_dict(), step="pretrain", model_config=raw.config.to_dict(),
                        train_args={k: v for k, v in vars(args).items()}, metrics=metrics, training_state=state,
                        tokenizer=tok,
                        extra={"tokenizer_fingerprint": fingerprint, "data": what})

    # --- the loop
    val_offs = eval_offsets(len(data.val), args.seq_len, args.eval_windows)
    micro = args.batch_size // args.grad_accum
    prompts = sample_prompts(tok, data)
    log = RunLogger(out, args.max_steps, desc="pretrain", start_step=step, enabled=is_main)
    val_loss, time_to_target, interrupted, eval_s = None, None, False, 0.0
    t_loop, start_step = time.perf_counter(), step
    try:
        while step < args.max_steps:
            lr = lr_at(step, max_lr=args.lr, total_steps=args.max_steps, warmup_steps=args.warmup,
                       min_lr_ratio=args.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr
            # This step's windows depend only on (seed, step); this process takes its slice of the global batch.
            offsets = batch_offsets(args.seed, step, global_batch, len(data.train), args.seq_len)
            offsets = offsets[rank * args.batch_size:(rank + 1) * args.batch_size]
            loss_sum = torch.zeros((), device=device)
            for m in range(args.grad_accum):
                x, y = cut_batch(data.train, offsets[m * micro:(m + 1) * micro], args.seq_len)  # (micro, T) each
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                last = m == args.grad_accum - 1  # DDP: all-reduce the gradients once, after the last micro-batch
                with contextlib.nullcontext() if last or world == 1 else fwd.no_sync():
                    with autocast(device, dtype):  # bf16 matmuls on GPU; the weights and their grads stay fp32
                        _, loss = fwd(x, targets=y)
                    (loss / args.grad_accum).backward()  # the mean over micro-batches = the whole batch's loss
                loss_sum += loss.detach()
            torch.nn.utils.clip_grad_norm_(raw.parameters(), args.clip)  # one bad batch cannot blow the weights up
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss_f = mean_over_processes(loss_sum / args.grad_accum, world)
            if not math.isfinite(loss_f):
                raise CourseError(f"the loss became {loss_f} at step {step}: lower --lr (now {args.lr:g}), raise "
                                  f"--warmup (now {args.warmup}) or use --dtype float32; the last good checkpoint is in {out}")
            log.train_step(step, loss_f, lr, tokens=tokens_per_step)
            step += 1
            tokens_seen += tokens_per_step
            if step % args.eval_every == 0 or step == args.max_steps or step == args.stop_at:
                t_eval = time.perf_counter()
                val_loss = evaluate(fwd.module if world > 1 else fwd, data.val, val_offs, args.seq_len, micro, device, dtype, rank, world)
                log.eval(step - 1, val_loss=val_loss, val_ppl=perplexity(val_loss), tokens_seen=tokens_seen)
                if is_main and args.sample_tokens > 0:
                    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # keep training RNG
                        for text in prompts:
                            ids = torch.tensor([tok.encode(text)], device=device)
                            new = raw.generate(ids, max_new_tokens=args.sample_tokens, temperature=0.8, top_k=50,
                                               eos_id=tok.eos_id)[0].tolist()
                            log.write(f"  sample: {text + tok.decode(new, skip_special=True)!r}")
                if val_loss < best_val:  # written first, so the save below carries the new best/ along
                    best_val = val_loss
                    save(out / "best", False, {"val_loss": val_loss, "step": step})
                save(out, True, {"val_loss": val_loss, "step": step})
                eval_s += time.perf_counter() - t_eval
                if args.target_loss is not None and val_loss <= args.target_loss and time_to_target is None:
                    time_to_target = time.perf_counter() - t_start
                    log.write(f"reached val loss {val_loss:.4f} ≤ {args.target_loss} after {time_to_target:.1f} s")
                if step == args.stop_at:
                    break
    except KeyboardInterrupt:
        interrupted = True
        save(out, True, {"val_loss": val_loss, "step": step, "interrupted": True})
        log.write(f"\ninterrupted: saved step {step} to {out}; continue with --resume")
    train_s = time.perf_counter() - t_loop - eval_s
    log.close()
    if world > 1:
        torch.distributed.destroy_process_group()
    return dict(step="pretrain", val_loss=val_loss, val_ppl=perplexity(val_loss) if val_loss else None,
                best_val_loss=best_val, steps=step, tokens_seen=tokens_seen,
                tokens_per_s=round((step - start_step) * tokens_per_step / max(train_s, 1e-9)),
                wall_s=round(time.perf_counter() - t_start, 2), time_to_target_s=time_to_target,
                params=n_params, device=str(device), world_size=world, interrupted=interrupted, out=str(out))


def main():
    from common.training import print_summary
    args = make_parser().parse_args()
    summary = train(args)
    if int(os.environ.get("RANK", 0)) == 0:
        print_summary(**{k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()})


if __name__ == "__main__":
    from common.cli import run
    run(main)
