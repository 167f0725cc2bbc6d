"""Train the VLM in stages: 0 = small CLIP (only when no pretrained CLIP is at hand), 1 = pretrain
(image → caption), 2 = SFT (image + question → answer; on the data world it starts with two short drills of
questions, data.CURRICULUM). Which parameters learn is FREEZE_TABLE in model.py.

    python train.py                              # runs the missing stages: clip → pretrain → sft (2-core CPU: 14–22 min)
    python train.py --stage sft                  # one stage
    python train.py --stages clip,pretrain,sft   # all, in order, even if they exist
    python train.py --quick                      # seconds-long smoke run (makes missing inputs)

The frozen encoder never changes, so each picture's features are computed once and cached (runs/feature_cache);
later steps and later runs read them instead of running the encoder.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import random
import time

import torch

from common import RUNS_DIR
from common.cli import course_parser, run
from common.device import pick_device, pick_dtype, seed_everything
from common.errors import CourseError
from common.training import RunLogger, print_summary
from step6_vlm.data import (CURRICULUM, LAYOUTS, PAINT_SHARE, caption_conversations, eval_items, image_key, load_image,
                            load_real_data, painted_scenes, sft_phases, world_splits)
from step6_vlm.loop import caption_items, encode, fit, init_llm, oracle_features, score, world_features
from step6_vlm.model import (DEFAULT_LAST_N, DEFAULT_STAGE1_LLM, STAGE1_LLM_CHOICES, VLM, VLMConfig, apply_freeze,
                             image_token_id, load_vlm, save_vlm)
from step6_vlm.vision import (CLIP_DIR, cached_features, default_vision_encoder, encoder_key, image_size,
                              load_vision_encoder)

STAGES = ("clip", "pretrain", "sft")
OUT = {"pretrain": RUNS_DIR / "vlm_pretrain", "sft": RUNS_DIR / "vlm_sft"}
# steps, batch size, LLM lr, projection lr per stage on the data world: the configuration measured in the
# README (a shared 2-core CPU). Longer runs (--max-steps, --epochs) are what a free machine should use.
PLAN = {"pretrain": dict(steps=80, batch=64, lr=1e-3, proj_lr=2e-3),
        "sft": dict(steps=2500, batch=32, lr=1e-3, proj_lr=1e-3)}


def parse():
    p = course_parser("Train the VLM: stage 0 CLIP, stage 1 pretrain, stage 2 SFT (训练视觉语言模型)", "device", "dtype",
                      "epochs", "max_steps", "batch_size", "lr", "seed", "data", "init", "resume", "quick")
    a = p.add_argument
    a("--stage", choices=STAGES, default=None, help="只跑一个阶段 run one stage")
    a("--runs", default=None, help="检查点目录 where the stages' checkpoints go: RUNS/clip, RUNS/vlm_pretrain, RUNS/vlm_sft "
      "(default runs/; there is no --out: this script writes up to three checkpoints)")
    a("--stages", default=None, help="按顺序运行 comma list, e.g. clip,pretrain,sft (default: the missing ones)")
    a("--vision-encoder", default=None, help=f"视觉编码器 HF id or folder (default: openai/clip-vit-base-patch16 if cached, else {CLIP_DIR})")
    a("--projector", default="linear", choices=("linear", "mlp"), help="投影层 linear (LLaVA-1, no bias) or mlp")
    a("--image-tokens", default="all", choices=("all", "first", "mean"), help="图像token all patches / first patch / mean-pooled")
    a("--image-positions", default="learned", choices=("none", "learned"), help="图像token位置向量 learned (one trained vector per image-token slot) / none (LLaVA)")
    a("--layout", default="question-first", choices=LAYOUTS, help="<image> 放在问题之后 question-first / 之前 image-first (LLaVA)")
    a("--feature-layer", type=int, default=-2, help="特征层 encoder layer whose patch states are used (LLaVA: -2)")
    a("--stage1-llm", default=DEFAULT_STAGE1_LLM, choices=STAGE1_LLM_CHOICES, help="阶段1 LLM: frozen (default; LLaVA-1) / last_n layers (the lesson's table) / all")
    a("--last-n", type=int, default=DEFAULT_LAST_N, help="阶段1 训练最后几层 LLM layers trained in stage 1")
    a("--images", type=int, default=8000, help="训练图像数 training pictures of the data world")
    a("--eval-images", type=int, default=400, help="评估图像数 held-out pictures (and 300 held-out combinations)")
    a("--cache-dir", default=None, help="特征缓存目录 where frozen features are cached (default runs/feature_cache)")
    a("--no-curriculum", action="store_true", help="阶段2不先练 skip stage 2's two drills (colour/shape, then position questions) and train on the full mix from the first step")
    a("--paint-share", type=float, default=PAINT_SHARE, help="异色重绘比例 share of training pictures drawn again in off-world paints for stage 2's shape questions (0: none)")
    a("--oracle-features", action="store_true", help="调试：完美特征 replace the encoder's features by one-hot facts per cell (is the LLM the bottleneck?)")
    a("--no-cache", action="store_true", help="不用特征缓存 run the frozen encoder on every step (slow; for the bench)")
    return p.parse_args()


def stage_dir(args, stage: str) -> pathlib.Path:
    """Where a stage's checkpoint lives: runs/vlm_<stage>, or under --runs."""
    return pathlib.Path(args.runs) / f"vlm_{stage}" if args.runs else pathlib.Path(OUT[stage])


def stage_list(args) -> list:
    if args.stage:
        return [args.stage]
    if args.stages:
        bad = [s for s in args.stages.split(",") if s not in STAGES]
        if bad:
            raise CourseError(f"unknown stage(s) {bad} in --stages; choose from {', '.join(STAGES)}")
        return args.stages.split(",")
    missing = [s for s in STAGES if s != "clip" and not (stage_dir(args, s) / "config.json").is_file()]
    if missing == ["pretrain"]:
        missing = ["pretrain", "sft"]  # a new stage 1 makes the old stage 2 stale
    needs_clip = (args.vision_encoder or default_vision_encoder()) == str(CLIP_DIR) and not (CLIP_DIR / "config.json").is_file()
    return (["clip"] if needs_clip else []) + missing


def train_stage(stage, vlm, tok, phases, feats, args, out, dev, dtype, evaluate) -> dict:
    """One stage of train.py: its PLAN (or the command line's steps/batch/lr), progress bar, eval, checkpoint."""
    plan = dict(PLAN[stage])
    if args.quick:
        plan.update(steps=12, batch=8)
    steps, bs = args.max_steps or plan["steps"], args.batch_size or plan["batch"]
    if args.epochs:
        steps = max(1, int(args.epochs * sum(len(ex) for ex, _ in phases) / bs))
    lr = args.lr or plan["lr"]
    print(f"[{stage}] trainable parameters: {apply_freeze(vlm, stage, args.stage1_llm, args.last_n)}", file=sys.stderr)
    log = RunLogger(out, steps, desc=f"stage {stage}")  # the checkpoint saved at the end keeps these logs
    r = fit(vlm, tok, phases, feats, stage, steps, bs, lr, plan["proj_lr"] * lr / plan["lr"], args.stage1_llm,
            args.last_n, args.seed, dev, dtype, log, args.pixels if args.no_cache else None)
    metrics = {f"{stage}_steps": steps, f"{stage}_train_s": round(r["train_s"], 1), f"{stage}_final_loss": round(r["loss"], 4)}
    metrics.update(evaluate(vlm))
    log.eval(steps, **{k: v for k, v in metrics.items() if not isinstance(v, dict)})
    log.close()
    save_vlm(out, vlm, tok, f"vlm_{stage}", train_args=vars(args) | {"pixels": None}, metrics=metrics)
    return metrics


def main():
    args = parse()
    if args.resume:
        raise CourseError("step 6 has no --resume: its stages are minutes long; rerun the stage instead")
    t_start = time.perf_counter()
    seed_everything(args.seed)
    dev = pick_device(args.device)
    dtype = pick_dtype(args.dtype, dev)
    stages = stage_list(args)
    if args.oracle_features and (args.data or args.no_cache):
        raise CourseError("--oracle-features describes data-world pictures only; leave out --data and --no-cache")
    if not 0 <= args.paint_share <= 1:
        raise CourseError(f"--paint-share is a share of the training pictures: give a number from 0 to 1, not {args.paint_share}")
    n_train, n_test, n_combo = (300, 40, 30) if args.quick else (args.images, args.eval_images, 300)
    sp = world_splits(n_train, n_test, n_combo, seed=args.seed)
    # repainted copies of training pictures (data.PAINT_SHARE) for stage 2; their features go after the world's splits
    use_paint = "sft" in stages and not (args.oracle_features or args.data)
    painted = painted_scenes(sp.train, args.paint_share, args.seed) if use_paint else []
    summary = {"stages_run": stages}
    if "clip" in stages:
        from step6_vlm.small_clip import train_clip
        m = train_clip(CLIP_DIR if not args.runs else pathlib.Path(args.runs) / "clip", **({"steps": 40} if args.quick else {}),
                       n_images=n_train, seed=args.seed, device=args.device, splits=sp)
        print(f"[clip] zero-shot retrieval {m['clip_retrieval_acc']:.1%}, linear probe {m['probe_layer_-2']}", file=sys.stderr)
        summary.update(m)
    enc_name = args.vision_encoder or (str(pathlib.Path(args.runs) / "clip") if args.runs and "clip" in stages else default_vision_encoder())
    vision, proc = load_vision_encoder(enc_name, dev)
    size = image_size(proc)
    if args.oracle_features:  # the encoder is not run: only its width is kept, so the projection has its usual shape
        feats = oracle_features(sp.train + sp.test + sp.combo, vision.config.hidden_size)
        print("--oracle-features: each patch holds its cell's facts as one-hots (debugging: is the LLM the bottleneck?)", file=sys.stderr)
    else:
        feats, n_enc = world_features(vision, proc, sp.train + sp.test + sp.combo + painted, enc_name, args.feature_layer, size,
                                      use_cache=not args.no_cache, cache_root=args.cache_dir)
        print(f"features {tuple(feats.shape)} from {enc_name} ({n_enc} pictures encoded, the rest from the cache)", file=sys.stderr)
    test_off, combo_off, painted_off = n_train, n_train + n_test, n_train + n_test + n_combo
    real = load_real_data(args.data, args.layout) if args.data else None
    if real:  # real images go through the same cache, keyed by file content, after the world's pictures
        keys = [image_key(r["image"]) for r in real]
        by_key = dict(zip(keys, (r["image"] for r in real)))
        rfeats, n_enc = cached_features(vision, proc, keys, lambda k: by_key[k] if not isinstance(by_key[k], pathlib.Path)
                                        else load_image(by_key[k]), encoder_key(enc_name, args.feature_layer),
                                        args.feature_layer, **({"cache_root": args.cache_dir} if args.cache_dir else {}))
        real_off, feats = len(feats), torch.cat([feats, rfeats])
        print(f"--data: {len(real)} samples ({n_enc} images encoded)", file=sys.stderr)
    if args.no_cache:
        from step6_vlm.data import render_scene
        from step6_vlm.vision import preprocess
        args.pixels = preprocess(proc, [render_scene(s, size) for s in sp.train + sp.test + sp.combo + painted])  # as feats
    gpt, tok, init_from = init_llm(args.init, args.quick)
    image_token_id(tok)
    vc = vision.config
    cfg = VLMConfig(enc_name, vc.hidden_size, feats.shape[1], size, image_token_id(tok), args.projector,
                    args.image_tokens, args.feature_layer, args.image_positions, args.layout)
    test_items = [dict(it, image=it["image"] + test_off) for it in eval_items(sp.test, args.seed)]
    combo_items = [dict(it, image=it["image"] + combo_off) for it in eval_items(sp.combo, args.seed, combo=True)]
    caps = [dict(it, image=it["image"] + test_off) for it in caption_items(sp.test, args.seed)]
    rng = random.Random(args.seed)
    outs = {s: stage_dir(args, s) for s in ("pretrain", "sft")}

    def evaluate(vlm):
        vqa = score(vlm, tok, [it for it in test_items if it["type"] != "describe"], feats, dev)
        combo = score(vlm, tok, [it for it in combo_items if it["type"] != "describe"], feats, dev)
        desc = score(vlm, tok, [it for it in test_items if it["type"] == "describe"], feats, dev)
        cap = score(vlm, tok, caps, feats, dev)
        return {"vqa_accuracy": round(vqa["overall"], 4), "vqa_accuracy_by_type": vqa["by_type"],
                "describe_accuracy": round(desc["overall"], 4), "caption_accuracy": round(cap["overall"], 4),
                "heldout_combo_accuracy": round(combo["overall"], 4), "heldout_combo_by_type": combo["by_type"],
                "vqa_questions": vqa["n"], "combo_questions": combo["n"]}

    vlm = None
    for stage in [s for s in stages if s != "clip"]:
        if stage == "pretrain" or vlm is None:
            prev = outs["pretrain"]
            if stage == "sft" and (prev / "config.json").is_file():
                vlm, _, _ = load_vlm(prev, dev, with_vision=False, vision_encoder=enc_name)  # continue stage 1's model
                print(f"[sft] starting from {prev}", file=sys.stderr)
            else:
                vlm = VLM(gpt, cfg).to(dev)
                print(f"[{stage}] LLM from {init_from}", file=sys.stderr)
            if args.no_cache:
                vlm.vision = vision
        if real:
            convs = [(real_off + i, r["messages"]) for i, r in enumerate(real)]
        elif stage == "pretrain":
            convs = caption_conversations(sp.train, vlm.config.layout)
        if real or stage == "pretrain":
            phases = [(convs, 1.0)]
        else:  # the lookup drills, then about 3 one-question conversations per picture
            drills = () if args.no_curriculum else CURRICULUM
            phases = sft_phases(sp.train, rng, vlm.config.layout, drills,
                                [(painted_off + i, s) for i, s in enumerate(painted)])
            for (types, _), (convs, share) in zip(drills, phases):
                print(f"[sft] drill: {share:.0%} of the steps on {len(convs)} {'/'.join(types)} questions",
                      file=sys.stderr)
            print(f"[sft] then the full mix: {phases[-1][1]:.0%} of the steps on {len(phases[-1][0])} conversations",
                  file=sys.stderr)
            if painted:
                print(f"[sft] each phase with shape questions includes one about each of {len(painted)} repainted pictures "
                      f"(off-world paints, --paint-share {args.paint_share})", file=sys.stderr)
        phases = [(encode(vlm, tok, c), share) for c, share in phases]
        m = train_stage(stage, vlm, tok, phases, feats, args, outs[stage], dev, dtype, evaluate)
        print(f"[{stage}] held-out VQA {m['vqa_accuracy']:.1%} {m['vqa_accuracy_by_type']}  held-out combinations "
              f"{m['heldout_combo_accuracy']:.1%} {m['heldout_combo_by_type']}  captions {m['caption_accuracy']:.1%}  "
              f"describe {m['describe_accuracy']:.1%}", file=sys.stderr)
        summary.update({f"pretrain_{k}" if stage == "pretrain" and not k.startswith(stage) else k: v for k, v in m.items()})
    if vlm is None:  # nothing was missing: report the existing final checkpoint
        vlm, _, _ = load_vlm(outs["sft"], dev, with_vision=False, vision_encoder=enc_name)
        print(f"every stage exists ({outs['sft']}); pass --stages pretrain,sft to train again", file=sys.stderr)
        summary.update(evaluate(vlm))
    if "caption_accuracy" not in summary and "pretrain_caption_accuracy" in summary:
        summary["caption_accuracy"] = summary["pretrain_caption_accuracy"]
    summary["wall_s"] = round(time.perf_counter() - t_start, 1)
    print_summary(**summary)


if __name__ == "__main__":
    run(main)
