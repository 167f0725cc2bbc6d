"""Supervised fine-tuning: teach the pretrained GPT to answer, with the loss on the assistant's tokens only.

    python train.py                        # full SFT: runs/pretrain → runs/sft, a few minutes on a laptop CPU
    python train.py --lora 8               # LoRA r=8 on attention and MLP; saves the merged model
    python train.py --loss-on all          # the ablation: train on every token, the user's too
    python train.py --data my_sft.jsonl    # your conversations (minimind / ShareGPT / OpenAI messages)
    python train.py --quick                # seconds-long smoke run
    python train.py --resume               # continue exactly where runs/sft stopped
    torchrun --nproc_per_node 2 train.py --device cuda    # several GPUs (DDP), as in step 3

One step of the loop: take a batch of conversations of similar length → forward → cross-entropy on the
assistant's tokens (and their <|im_end|>) → backward → clip → AdamW step → schedule the LR. Every --eval-every
steps: the loss on held-out conversations, and a checkpoint (+ training_state.pt for --resume). At the end:
greedy answers on held-out conversations, scored by exact match.
Last line, one JSON object with the keys: step, steps, final_loss, heldout_loss, heldout_exact_match ({task:
{lang: share}}), heldout_mean, eos_rate (the last three only when the run reached its last step on the data
world), lora, loss_on, trainable_params, params, wall_s, train_s, steps_per_s, device, world_size, out.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import contextlib
import math
import os
import time
from pathlib import Path

import torch

from common import RUNS_DIR
from common.checkpoint import load_checkpoint, load_training_state, save_checkpoint
from common.cli import course_parser
from common.device import autocast, stream_seed
from common.errors import CourseError
from common.training import RunLogger, lr_at, make_optimizer, mean_over_processes, print_summary, process_start, start_run
from step2_gpt.model import UNTRAINED, quick_or_load_gpt
from step3_pretrain.data import tokenizer_fingerprint
from step3_pretrain.model import batch_offsets, cut_batch
from step4_sft.data import (LengthBuckets, encode_conversations, make_batch, pretrain_text, read_conversations,
                            world_conversations)
from step4_sft.model import apply_lora, lora_state, load_lora_state, masked_loss, plain_state_dict, trainable
from step4_sft.scoring import score

PROCESS_START = process_start()  # wall times count from here, start-up included
# Flags that define the run: on --resume, any not passed again are taken from the checkpoint; then these defaults.
DEFAULT_STEPS = 1000
RUN_DEFAULTS = dict(init=str(RUNS_DIR / "pretrain"), data=None, max_steps=None, epochs=None, batch_size=16, lr=None,
                    seed=1337, lora=None, lora_alpha=None, loss_on="assistant", examples=None, eval_every=200,
                    replay=0)


def make_parser():
    p = course_parser("Step 4: supervised fine-tuning (assistant-only loss; full or LoRA).", "device", "dtype",
                      "epochs", "max_steps", "batch_size", "lr", "seed", "data", "out", "init", "resume", "compile",
                      "quick", out=str(RUNS_DIR / "sft"), init=None, seed=None, batch_size=None)
    p.add_argument("--lora", type=int, default=None, help="LoRA 秩 rank r (default: full fine-tuning)")
    p.add_argument("--lora-alpha", type=float, default=None, help="LoRA α (default 2·r: the update is scaled by α/r = 2)")
    p.add_argument("--loss-on", choices=("assistant", "all"), default=None,
                   help="损失位置 assistant: only the answers (default); all: every token, the ablation")
    p.add_argument("--replay", type=int, default=None,
                   help="每步混入的预训练文本窗口数 windows of step 3's text mixed into every step, against forgetting (default 0: off; 4 keeps the text loss where it was, at about 3× the time)")
    p.add_argument("--examples", type=int, default=None, help="训练对话数 world conversations to train on (default: steps × batch, each seen once)")
    p.add_argument("--eval-every", type=int, default=None, help="每隔多少步评估并保存 (default 200)")
    p.add_argument("--eval-n", type=int, default=200,
                   help="结束时评估的留出对话数 held-out conversations scored at the end (eval.py's 200, so both print one figure)")
    p.add_argument("--stop-at", type=int, default=None, help="在此步保存并停止 save and stop after this step (tests resume)")
    return p


def setup_args(args):
    if args.resume:
        saved = load_checkpoint(args.out, expect_steps=("sft",), hint="python step4_sft/train.py").train_args
        for k in RUN_DEFAULTS:
            if getattr(args, k) is None:
                setattr(args, k, saved.get(k))
    for k, v in RUN_DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.lora is not None and args.lora < 1:
        raise CourseError(f"--lora must be a rank ≥ 1, got {args.lora}")
    args.lora_alpha = args.lora_alpha or (2.0 * args.lora if args.lora else None)
    args.lr = args.lr or (2e-3 if args.lora else 1e-3)  # LoRA's few parameters start at zero: they take a larger step
    if args.quick:
        args.max_steps, args.eval_n = args.max_steps or 20, min(args.eval_n, 20)
    return args


def targets_per_process(y, world, device):
    """The supervised-token count to divide this process's loss sum by, so that the gradient DDP averages over
    the processes is the mean over every answer token of the global batch (each process's own mean would weigh a
    short answer's tokens more); None in one process (its own count)."""
    if world == 1:
        return None
    n = (y != -100).sum().to(device)
    torch.distributed.all_reduce(n)
    return n / world


def train(args):
    args = setup_args(args)
    rank, world, device, dtype, is_main, say = start_run(args.device, args.dtype, args.seed)
    out = Path(args.out)

    # --- model: the pretrained GPT (its tokenizer comes with it), LoRA adapters if asked
    model, tok, start = quick_or_load_gpt(args.init, args.quick)
    say(f"start: {start}")
    fingerprint = tokenizer_fingerprint(tok)
    params = sum(p.numel() for p in model.parameters())
    if args.lora:
        apply_lora(model, r=args.lora, alpha=args.lora_alpha)
    model.to(device).train()

    # --- data: conversations → (ids, mask) → batches of similar length
    steps = args.max_steps or DEFAULT_STEPS
    # Fresh conversations for every batch by default: a few thousand seen again and again overfit (the training
    # loss keeps falling while the held-out loss stalls), where as many new ones keep improving.
    n_world = args.examples or max(1, int(steps * args.batch_size * world / (args.epochs or 1)))  # --epochs: repeats
    convs = read_conversations(args.data) if args.data else world_conversations(n_world, args.seed)
    examples = encode_conversations(tok, convs, model.config.block_size, say)
    if args.loss_on == "all":  # the ablation: every next token is a target, the user's and the template's too
        examples = [(ids, [1] * len(ids)) for ids, _ in examples]
    heldout = None if args.data else world_conversations(args.eval_n, args.seed, "heldout")
    heldout_batch = make_batch(encode_conversations(tok, heldout[:64], model.config.block_size, None), tok.pad_id) \
        if heldout else None
    # Replay (--replay N): N windows of step 3's own text every step, with the ordinary next-token loss. Trained
    # on answers alone, the model forgets how to write; see the lesson's forgetting table.
    replay = pretrain_text(args.init)[:2] if args.replay and start != UNTRAINED else None
    global_batch = args.batch_size * world
    buckets = LengthBuckets([len(ids) for ids, _ in examples], global_batch, args.seed)
    if args.epochs and args.data:  # --epochs: passes over your data (the world makes fresh conversations instead)
        steps = math.ceil(args.epochs * buckets.per_epoch)

    optimizer = make_optimizer(model, args.lr, 0.0, device)  # no weight decay: stay near the pretrained weights
    step = 0
    if args.resume:
        state = load_training_state(out)
        if state is None:
            raise CourseError(f"{out} holds no training_state.pt to resume from; start without --resume")
        if state["tokenizer"] != fingerprint:
            raise CourseError(f"{out} was trained with another tokenizer than {args.init}'s; start without --resume")
        if args.lora:
            load_lora_state(model, state["lora"])
        else:
            model.load_state_dict(load_checkpoint(out).state_dict)
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
        torch.set_rng_state(state["rng_cpu"])
        say(f"resuming at step {step} of {steps}")
    fwd = torch.compile(model) if args.compile else model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        fwd = DDP(fwd, device_ids=[device.index] if device.type == "cuda" else None)
    say(f"model: {params / 1e6:.2f}M parameters, {trainable(model):,} trainable "
        f"({'LoRA r=%d' % args.lora if args.lora else 'full SFT'}), loss on {args.loss_on} tokens, "
        f"{args.replay if replay else 0} pretraining window(s) replayed per step\n"
        f"data: {len(examples)} conversations, {steps} steps × {global_batch} ({steps / buckets.per_epoch:.2f} epochs), "
        f"{world} process(es) on {device}, {dtype}")

    def save(metrics):
        if not is_main:
            return
        state = {"optimizer": optimizer.state_dict(), "step": step, "rng_cpu": torch.get_rng_state(),
                 "tokenizer": fingerprint, "lora": lora_state(model) if args.lora else None}
        # A LoRA run is saved merged, under step 2's names: later steps load it like any GPT checkpoint.
        save_checkpoint(out, state_dict=plain_state_dict(model) if args.lora else model.state_dict(), step="sft",
                        model_config=model.config.to_dict(), train_args=vars(args), metrics=metrics, tokenizer=tok,
                        training_state=state, extra={"tokenizer_fingerprint": fingerprint})

    @torch.no_grad()
    def heldout_loss():
        model.eval()
        with autocast(device, dtype):
            loss = masked_loss(model, heldout_batch[0].to(device), heldout_batch[1].to(device)).item()
        model.train()
        return loss

    # --- the loop
    log = RunLogger(out, steps, desc="sft", start_step=step, enabled=is_main)
    loss_f, val_f, t_loop, start_step = None, None, time.perf_counter(), step
    while step < steps:
        lr = lr_at(step, max_lr=args.lr, total_steps=steps, warmup_steps=min(20, steps // 10))
        for group in optimizer.param_groups:
            group["lr"] = lr
        mine = buckets.indices(step)[rank * args.batch_size:(rank + 1) * args.batch_size]  # this process's slice
        x, y = make_batch([examples[i] for i in mine], tok.pad_id)                       # (B, T) each
        # DDP: all-reduce the gradients once, after the last backward of the step
        with fwd.no_sync() if world > 1 and replay else contextlib.nullcontext():
            with autocast(device, dtype):  # bf16 matmuls on GPU; the weights and their grads stay fp32
                loss = masked_loss(fwd, x.to(device), y.to(device), targets_per_process(y, world, device))
            loss.backward()
        if replay:
            text, seq_len = replay
            offsets = batch_offsets(stream_seed(args.seed, "sft-replay"), step, args.replay * world, len(text.train), seq_len)
            xr, yr = cut_batch(text.train, offsets[rank * args.replay:(rank + 1) * args.replay], seq_len)  # (R, T)
            with autocast(device, dtype):
                _, lm_loss = fwd(xr.to(device), targets=yr.to(device))
            lm_loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_f = mean_over_processes(loss.detach(), world)
        if not math.isfinite(loss_f):
            raise CourseError(f"the loss became {loss_f} at step {step}: lower --lr (now {args.lr:g}) or use "
                              f"--dtype float32; the last good checkpoint is in {out}")
        log.train_step(step, loss_f, lr, tokens=int((y != -100).sum()))
        step += 1
        if step % args.eval_every == 0 or step == steps or step == args.stop_at:
            if heldout_batch is not None:
                val_f = heldout_loss()
                log.eval(step - 1, heldout_loss=val_f)
            save({"loss": loss_f, "heldout_loss": val_f, "step": step})
        if step == args.stop_at:
            break
    train_s = time.perf_counter() - t_loop
    log.close()
    summary = dict(step="sft", steps=step, final_loss=loss_f, heldout_loss=val_f)
    if heldout and is_main and step == steps:
        s = score(model, tok, heldout, device)
        say(f"held-out exact match {s['mean']:.1%} over {len(heldout)} conversations; per task: " +
            ", ".join(f"{t} {v}" for t, v in s["exact_match"].items()))
        summary.update(heldout_exact_match=s["exact_match"], heldout_mean=s["mean"], eos_rate=s["eos_rate"])
    if world > 1:
        torch.distributed.destroy_process_group()
    return dict(summary, lora=args.lora, loss_on=args.loss_on, trainable_params=trainable(model), params=params,
                wall_s=round(time.perf_counter() - PROCESS_START, 2), train_s=round(train_s, 2),
                steps_per_s=round((step - start_step) / max(train_s, 1e-9), 2), device=str(device),
                world_size=world, out=str(out))


def main():
    summary = train(make_parser().parse_args())
    if int(os.environ.get("RANK", 0)) == 0:
        print_summary(**{k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()})


if __name__ == "__main__":
    from common.cli import run
    run(main)
