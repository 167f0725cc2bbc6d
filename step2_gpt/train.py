"""The smallest proof that the GPT learns: about a minute on a laptop CPU, on the data world's text.

    python train.py                  # tiny preset, ~1 minute on 2 CPU cores → runs/gpt/
    python train.py --quick          # a few seconds: smaller model, fewer steps (smoke test)

It prints samples before and after training and the loss going down, and writes a checkpoint
(step "gpt") with metrics.jsonl and loss_curve.png. The real pretraining is step 3. Last line, one JSON object
with the keys: step, val_loss_before, val_loss_after, first_train_loss, last_train_loss, steps, params, tokens,
seconds, out, sample_before, sample_after.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import math
import time
from pathlib import Path

import torch

from common import RUNS_DIR
from common.checkpoint import save_checkpoint
from common.cli import course_parser
from common.device import autocast, pick_device, pick_dtype, seed_everything
from common.errors import CourseError
from common.datasources import expand_paths, read_lines
from common.training import RunLogger, lr_at, print_summary
from common.world import build_corpus
from step1_tokenizer.model import course_tokenizer
from step2_gpt.model import GPT, GPTConfig, load_gpt

PROMPTS = ["小明有3个苹果，", "There are 2 shapes:"]


def read_docs(args):
    """(train, val) documents, one per line: the data world by default, or the --data files (every 50th
    line held out for validation)."""
    if not args.data:
        return build_corpus(args.corpus_mb, args.seed)
    docs = [ln for f in expand_paths(args.data) for ln in read_lines(f) if ln.strip()]
    if len(docs) < 2:
        raise CourseError("--data holds fewer than 2 documents: need some for training and one for validation")
    return [d for i, d in enumerate(docs) if i % 50], docs[::50]


def encode_docs(tok, docs, device):
    """One long stream: each document's ids followed by eos, so the model learns where texts end."""
    ids = [i for d in docs for i in tok.encode(d) + [tok.eos_id]]
    return torch.tensor(ids, dtype=torch.long, device=device)  # (N,)


def get_batch(data, batch_size, block, gen):
    """Random windows; targets are the same windows shifted by one (next-token prediction)."""
    starts = torch.randint(0, len(data) - block - 1, (batch_size,), generator=gen)
    x = torch.stack([data[s:s + block] for s in starts])          # (B, T)
    y = torch.stack([data[s + 1:s + block + 1] for s in starts])  # (B, T)
    return x, y


@torch.no_grad()
def evaluate(model, data, batch_size, block, device, dtype, n_batches):
    gen = torch.Generator().manual_seed(0)  # the same val windows every time, so evals are comparable
    model.eval()
    losses = []
    for _ in range(n_batches):
        x, y = get_batch(data, batch_size, block, gen)
        with autocast(device, dtype):
            losses.append(model(x, targets=y)[1].item())
    model.train()
    return sum(losses) / len(losses)


def samples(model, tok, device, seed, n_new):
    torch.manual_seed(seed)  # same sampling noise before and after, so only the weights differ
    out = []
    for p in PROMPTS:
        ids = torch.tensor([tok.encode(p)], device=device)  # (1, T)
        new = model.generate(ids, max_new_tokens=n_new, temperature=0.8, top_k=20, eos_id=tok.eos_id)
        out.append(p + tok.decode(new[0].tolist(), skip_special=True))
    return out


def main():
    p = course_parser("Step 2: train a tiny GPT for about a minute on the data world and watch it learn.",
                      "device", "dtype", "epochs", "max_steps", "batch_size", "lr", "seed", "size", "data", "out",
                      "init", "compile", "quick",
                      size="tiny", max_steps=200, batch_size=8, lr=3e-3, out=str(RUNS_DIR / "gpt"))
    p.add_argument("--block-size", type=int, default=128, help="上下文长度 context length of the trained model")
    p.add_argument("--tokenizer", default=None, help="分词器 tokenizer folder (default runs/tokenizer, else a small stand-in)")
    p.add_argument("--corpus-mb", type=float, default=1.0, help="语料大小 megabytes of data-world text")
    p.add_argument("--eval-every", type=int, default=50, help="每多少步验证 steps between validation losses")
    args = p.parse_args()
    if args.quick:  # seconds: small corpus, smaller model, few steps
        args.max_steps, args.batch_size, args.corpus_mb, args.block_size, args.eval_every = 30, 16, 0.2, 64, 10
    seed_everything(args.seed)
    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    out = Path(args.out)
    t0 = time.perf_counter()

    train_docs, val_docs = read_docs(args)
    if args.init:
        model, tok, _ = load_gpt(args.init, expect_steps=["gpt", "pretrain"], device=device)
        how = f"loaded with the model from {args.init}"
    else:
        tok, how = course_tokenizer(args.tokenizer, fallback=True), "step 1's (or its stand-in)"
        overrides = dict(vocab_size=tok.vocab_size, block_size=args.block_size)
        if args.quick:
            overrides.update(n_layer=2, n_embd=128, n_head=4)
        model = GPT(GPTConfig.preset(args.size, **overrides)).to(device)
    cfg, block = model.config, min(args.block_size, model.config.block_size)
    print(f"tokenizer: {tok.vocab_size} tokens, {how}")
    train_data, val_data = encode_docs(tok, train_docs, device), encode_docs(tok, val_docs, device)
    if len(val_data) <= block + 1:
        raise CourseError(f"the validation text has only {len(val_data)} tokens; give more --data or a smaller --block-size")
    if args.epochs is not None:
        args.max_steps = max(1, math.ceil(args.epochs * len(train_data) / (args.batch_size * block)))
    n_params = model.num_params_by_component()["total"]
    print(f"model: {args.size} preset, {n_params:,} parameters, {cfg.n_layer} layers × {cfg.n_embd}, context {block}")
    print(f"data: {len(train_data):,} train tokens, {len(val_data):,} val tokens; "
          f"{args.max_steps} steps × {args.batch_size} × {block} tokens")

    before = samples(model, tok, device, args.seed, 40)
    print("\n== samples BEFORE training (random weights):")
    for s in before:
        print("  " + s.replace("\n", " "))

    # Weight decay only on matrices: decaying norm gains or embeddings' scale has no regularizing purpose.
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
                             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    step_model = torch.compile(model) if args.compile else model
    gen = torch.Generator().manual_seed(args.seed)
    eval_batches = 4 if args.quick else 8
    val_before = evaluate(model, val_data, args.batch_size, block, device, dtype, eval_batches)
    log = RunLogger(out, args.max_steps, desc="step2 gpt")
    log.eval(0, val_loss=val_before)
    first_loss = loss_value = None
    warmup = max(1, args.max_steps // 10)
    for step in range(args.max_steps):
        lr = lr_at(step, max_lr=args.lr, total_steps=args.max_steps, warmup_steps=warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = get_batch(train_data, args.batch_size, block, gen)  # (B, T), (B, T)
        with autocast(device, dtype):
            _, loss = step_model(x, targets=y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # a bad batch cannot throw the weights far
        opt.step()
        loss_value = loss.item()
        first_loss = first_loss if first_loss is not None else loss_value
        log.train_step(step + 1, loss_value, lr, tokens=x.numel())
        if (step + 1) % args.eval_every == 0 and step + 1 < args.max_steps:
            log.eval(step + 1, val_loss=evaluate(model, val_data, args.batch_size, block, device, dtype, eval_batches))
    val_after = evaluate(model, val_data, args.batch_size, block, device, dtype, eval_batches)
    log.eval(args.max_steps, val_loss=val_after)
    plot = log.close()

    after = samples(model, tok, device, args.seed, 40)
    print("\n== samples AFTER training (same prompts, same sampling noise):")
    for s in after:
        print("  " + s.replace("\n", " "))
    seconds = time.perf_counter() - t0
    metrics = {"val_loss_before": round(val_before, 4), "val_loss_after": round(val_after, 4),
               "first_train_loss": round(first_loss, 4), "last_train_loss": round(loss_value, 4)}
    save_checkpoint(out, state_dict=model.state_dict(), step="gpt", model_config=cfg.to_dict(),
                    train_args=vars(args), metrics=metrics, tokenizer=tok)  # keeps metrics.jsonl and the plot
    print(f"\nval loss {val_before:.3f} → {val_after:.3f} (uniform guessing: ln {cfg.vocab_size} = "
          f"{math.log(cfg.vocab_size):.3f}); checkpoint → {out}; loss curve → {plot}")
    print_summary(step="gpt", **metrics, steps=args.max_steps, params=n_params,
                  tokens=args.max_steps * args.batch_size * block, seconds=round(seconds, 1), out=str(out),
                  sample_before=before[0], sample_after=after[0])


if __name__ == "__main__":
    from common.cli import run
    run(main)
