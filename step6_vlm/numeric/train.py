"""Train the numeric VLM from step 6's runs/vlm_sft: loss = cross-entropy + α · MSE at the `<num>` targets, with a
learning rate per module (vision encoder, numeric layers, the rest).

    python train.py                      # <num> values + regression head → runs/vlm_numeric
    python train.py --numbers text       # baseline: the same model and data, numbers written as digits → runs/vlm_numeric_digits
    python train.py --quick              # seconds-long smoke run

Logs "Token Loss … Float Loss …" (the two parts of the loss) every 100 steps and in metrics.jsonl.
Final JSON keys: numbers, steps, train_s, token_loss, float_loss, in_range_relaxed, in_range_mae, in_range_exact,
eval_samples.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # repo root: common/ and earlier steps

import json
import time

import torch

from common import RUNS_DIR
from common.cli import course_parser, run
from common.device import autocast, named_generator, pick_device, pick_dtype, seed_everything
from common.errors import CourseError
from common.training import RunLogger, lr_at, print_summary
from step6_vlm.model import load_vlm
from step6_vlm.numeric.data import DATA_DIR, ensure_dataset, load_samples
from step6_vlm.numeric.images import all_features, index_images
from step6_vlm.numeric.model import NumericVLM, numeric_batch, numeric_example, save_numeric
from step6_vlm.numeric.scoring import answers, score
from step6_vlm.vision import CLIP_DIR, load_image_processor

QUICK_SIZES = {"train": 60, "test_in_range": 20, "test_out_of_range": 20}


def parse():
    p = course_parser("Train the numeric VLM (数值增强 VLM 训练)", "device", "dtype", "max_steps", "batch_size", "lr",
                      "seed", "data", "out", "init", "quick", max_steps=1200, batch_size=16, lr=5e-4)
    a = p.add_argument
    a("--numbers", choices=("num", "text"), default="num", help="数字写法 <num> + value (regression head) or plain digits (baseline)")
    a("--alpha", type=float, default=1.0, help="数值损失权重 α in loss = CE + α·MSE")
    a("--vision-lr", type=float, default=0.0, help="视觉编码器学习率 the CLIP encoder's lr (default 0: frozen, as in step 6; > 0 trains it)")
    a("--numeric-lr", type=float, default=2e-3, help="数值层学习率 numeric embedding + regression head")
    a("--eval-samples", type=int, default=200, help="训练后评估样本数 in-range test samples scored at the end")
    return p.parse_args()


def main():
    args = parse()
    seed_everything(args.seed)
    dev = pick_device(args.device)
    dtype = pick_dtype(args.dtype, dev)
    out = pathlib.Path(args.out or RUNS_DIR / ("vlm_numeric" if args.numbers == "num" else "vlm_numeric_digits"))
    init = pathlib.Path(args.init or RUNS_DIR / "vlm_sft")
    if not (init / "config.json").is_file():
        raise CourseError(f"no step-6 VLM at {init}; make it with: python step6_vlm/train.py")
    stored = json.loads((init / "config.json").read_text())["model"]["vlm"]["vision_encoder"]
    encoder = stored if pathlib.Path(stored).exists() else str(CLIP_DIR)   # a run copied from elsewhere: this repo's CLIP
    vlm, tok, _ = load_vlm(init, dev, with_vision=True, vision_encoder=encoder)
    model = NumericVLM(vlm, tok.num_id, numbers=args.numbers).to(dev)

    if args.data:
        if len(args.data) != 1:
            raise CourseError("--data takes one JSON file in the numeric format (its pictures in images/ beside it)")
        train_file, test_file = pathlib.Path(args.data[0]), None
    else:
        folder = ensure_dataset(RUNS_DIR / "numeric_quick" if args.quick else DATA_DIR, args.seed,
                                QUICK_SIZES if args.quick else None)
        train_file, test_file = folder / "train.json", folder / "test_in_range.json"
    layout = vlm.config.layout
    train = load_samples(train_file, layout, load_images=False)
    test = load_samples(test_file, layout, load_images=False)[:args.eval_samples] if test_file else []
    proc = load_image_processor(encoder)
    pixels = index_images(train + test, proc)                                       # (N, 3, H, W)
    examples = [(s["image_index"], *numeric_example(model, tok, s["messages"], s["where"])) for s in train]
    model.set_value_stats([v for _, ids, _, vals in examples for i, v in zip(ids, vals) if i == tok.num_id] or [0.0])
    print(f"{len(train)} training conversations on {len(pixels)} pictures, numbers as {args.numbers}", file=sys.stderr)

    # one learning rate per module: the encoder, the new numeric layers and the rest learn at different speeds
    vision_p = list(vlm.vision.parameters())
    numeric_p = model.numeric_params()
    rest_p = [p for n, p in model.named_parameters() if not n.startswith(("vlm.vision.", "num_embed.", "num_head."))]
    for p in vision_p:
        p.requires_grad_(args.vision_lr > 0)
    for p in rest_p + numeric_p:
        p.requires_grad_(True)
    groups = [{"params": rest_p, "base": args.lr}, {"params": numeric_p, "base": args.numeric_lr}]
    groups += [{"params": vision_p, "base": args.vision_lr}] if args.vision_lr > 0 else []
    opt = torch.optim.AdamW(groups, lr=args.lr, weight_decay=0.0, betas=(0.9, 0.95))
    frozen_feats = None if args.vision_lr > 0 else all_features(model, pixels)    # a frozen encoder runs once

    steps, bs = (30, 8) if args.quick else (args.max_steps, args.batch_size)
    gen = named_generator(args.seed, "numeric-batches")
    order, pos = torch.randperm(len(examples), generator=gen), 0
    log = RunLogger(out, steps, desc=f"numeric ({args.numbers})")
    t0 = time.perf_counter()
    for step in range(steps):
        if pos + bs > len(order):
            order, pos = torch.randperm(len(examples), generator=gen), 0
        batch = [examples[int(j)] for j in order[pos:pos + bs]]
        pos += bs
        for g in opt.param_groups:
            g["lr"] = lr_at(step, max_lr=g["base"], total_steps=steps, warmup_steps=min(50, steps // 10))
        x, y, xv, yv, idx = (t.to(dev) for t in numeric_batch(batch, tok.pad_id))
        model.train()
        with autocast(dev, dtype):
            feats = model.image_features(pixels[idx.cpu()].to(dev)) if frozen_feats is None else frozen_feats[idx.cpu()].to(dev)
            o = model(x, xv, y, yv, image_features=feats, alpha=args.alpha)
        opt.zero_grad(set_to_none=True)
        o["loss"].backward()
        torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], 1.0)
        opt.step()
        tl, fl = o["token_loss"].item(), o["num_loss"].item()
        log.train_step(step, o["loss"].item(), opt.param_groups[0]["lr"], tokens=int((y != -100).sum()),
                       token_loss=tl, float_loss=fl)
        if step % 100 == 0 or step == steps - 1:
            log.write(f"step {step}: Token Loss: {tl:.4f}, Float Loss: {fl:.4f}")
    train_s = time.perf_counter() - t0

    metrics = {"numbers": args.numbers, "steps": steps, "train_s": round(train_s, 1), "token_loss": round(tl, 4),
               "float_loss": round(fl, 4)}
    if test:
        feats = all_features(model, pixels)
        s = score(answers(model, tok, test, feats), test)
        metrics.update(in_range_relaxed=s["relaxed"], in_range_mae=s["mae"], in_range_exact=s["exact"], eval_samples=s["n"])
        log.eval(steps, **{k: v for k, v in metrics.items() if k.startswith("in_range")})
    log.close()
    model.vlm.config.vision_encoder = encoder
    save_numeric(out, model, tok, train_args=vars(args), metrics=metrics)
    print_summary(**metrics)


if __name__ == "__main__":
    run(main)
