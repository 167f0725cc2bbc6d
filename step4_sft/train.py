"""Supervised fine-tuning: teach the pretrained GPT to answer, with the loss on the assistant's tokens only.

    python train.py                  # full SFT from runs/pretrain → runs/sft
    python train.py --lora 8         # LoRA r=8; saves the merged model as a normal GPT checkpoint
    python train.py --quick          # seconds-long smoke run
    python train.py --resume         # continue exactly

Last line, one JSON object with the keys: step, steps, final_loss, lora, trainable_params, params, wall_s, out.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import math
import random
import time
from pathlib import Path

import torch

from common import RUNS_DIR
from common.checkpoint import load_training_state, save_checkpoint
from common.cli import SHARED_FLAGS, course_parser
from common.device import named_rng, pick_device, seed_everything
from common.errors import CourseError
from common.training import RunLogger, lr_at, process_start
from step2_gpt.model import GPT_STEPS, load_gpt
from step4_sft.data import encode_examples, read_conversations, world_conversations
from step4_sft.model import apply_lora, plain_state_dict, trainable

PROCESS_START = process_start()


def make_parser():
    p = course_parser("Step 4: supervised fine-tuning (assistant-only loss; full or LoRA).", "device", "max_steps",
                      "batch_size", "lr", "seed", "data", "out", "init", "resume", "quick",
                      out=str(RUNS_DIR / "sft"), init=str(RUNS_DIR / "pretrain"))
    p.add_argument("--lora", type=int, default=None, help="LoRA 秩 rank r (default: full fine-tuning)")
    p.add_argument("--examples", type=int, default=6000, help="训练对话数 world conversations to train on")
    p.add_argument("--stop-at", type=int, default=None, help="在此步停止 save and stop after this step")
    return p


def make_batch(examples, pad_id):
    """Right-padded (x, y): y = next token where the mask says "assistant", else -100 (no loss)."""
    T = max(len(ids) for ids, _ in examples) - 1
    x = torch.full((len(examples), T), pad_id, dtype=torch.long)       # (B, T)
    y = torch.full((len(examples), T), -100, dtype=torch.long)         # (B, T)
    for b, (ids, mask) in enumerate(examples):
        t = torch.tensor(ids)
        n = len(ids) - 1
        x[b, :n] = t[:-1]
        y[b, :n] = torch.where(torch.tensor(mask[1:]).bool(), t[1:], -100)
    return x, y


def masked_loss(model, x, y):
    """Mean cross-entropy over supervised positions; 0 (not NaN) when a batch has none."""
    logits, _ = model(x)                                                # (B, T, V)
    lp = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=-100,
                                           reduction="sum")
    return lp / (y != -100).sum().clamp(min=1)


def train(args):
    if args.lora is not None and args.lora < 1:
        raise CourseError(f"--lora must be a rank ≥ 1, got {args.lora}")
    device = pick_device(args.device)
    seed_everything(args.seed)
    out = Path(args.out)
    model, tok, ckpt = load_gpt(args.init, expect_steps=GPT_STEPS, hint="python step3_pretrain/train.py")
    if args.resume:
        model, tok, ckpt = load_gpt(out, expect_steps=("sft",), hint="python step4_sft/train.py")
    model.train()
    steps = args.max_steps or (30 if args.quick else 600)
    bs, lr_max = args.batch_size or 16, args.lr or (1e-3 if args.lora else 3e-4)
    convs = read_conversations(args.data) if args.data else world_conversations(200 if args.quick else args.examples, args.seed)
    examples = encode_examples(tok, convs, model.config.block_size)
    params = sum(p.numel() for p in model.parameters())
    if args.lora:
        apply_lora(model, r=args.lora, alpha=2.0 * args.lora)
    model.to(device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr_max, weight_decay=0.0)
    step = 0
    if args.resume:
        state = load_training_state(out)
        if state is None:
            raise CourseError(f"{out} holds no training_state.pt to resume from")
        opt.load_state_dict(state["optimizer"])
        step = state["step"]
    log = RunLogger(out, steps, desc="sft", start_step=step)
    loss_f = None

    def save():
        sd = plain_state_dict(model) if args.lora else model.state_dict()
        state = None if args.lora else {"optimizer": opt.state_dict(), "step": step}
        save_checkpoint(out, state_dict=sd, step="sft", model_config=model.config.to_dict(),
                        train_args=vars(args), metrics={"loss": loss_f, "step": step}, tokenizer=tok,
                        training_state=state, extra={"lora": args.lora})

    while step < steps:
        lr = lr_at(step, max_lr=lr_max, total_steps=steps, warmup_steps=min(20, steps // 10))
        for g in opt.param_groups:
            g["lr"] = lr
        rng = named_rng(args.seed, f"sft-batch-{step}")  # depends only on (seed, step): exact resume
        x, y = make_batch([examples[rng.randrange(len(examples))] for _ in range(bs)], tok.pad_id)
        loss = masked_loss(model, x.to(device), y.to(device))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_f = loss.item()
        if not math.isfinite(loss_f):
            raise CourseError(f"the loss became {loss_f} at step {step}; lower --lr")
        log.train_step(step, loss_f, lr, tokens=int((y != -100).sum()))
        step += 1
        if step == args.stop_at:
            break
    log.close()
    save()
    return dict(step="sft", steps=step, final_loss=loss_f, lora=args.lora, trainable_params=trainable(model),
                params=params, wall_s=round(time.perf_counter() - PROCESS_START, 2), out=str(out))


def main():
    from common.training import print_summary
    print_summary(**train(make_parser().parse_args()))


if __name__ == "__main__":
    from common.cli import run
    run(main)
