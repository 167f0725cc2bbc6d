"""Train the VLM in stages: 0 = a small CLIP (only when no vision encoder is at hand), 1 = pretrain (image →
description), 2 = SFT (image + question → answer, descriptions among the questions). Which parameters learn in
which stage is FREEZE_TABLE in model.py; every other choice is the recipe (recipe.RECIPE).

    python train.py                              # the missing stages: clip → pretrain → sft
    python train.py --stage sft                  # one stage
    python train.py --stages clip,pretrain,sft   # all, in order, even if they exist
    python train.py --epochs 3                   # every stage for 3 epochs (see below) instead of the recipe's steps
    python train.py --quick                      # seconds-long smoke run (makes missing inputs)
    python train.py --data llava.json | --data pictures/ | --data hf:NAME --split test --limit 1000

An epoch is one pass over a stage's training examples: stage 0, the contrastive picture pairs; stage 1, the
descriptions (two per picture, one per language); stage 2, the conversations of its final mix (the drills
before it take their share of the same number of steps). With --data: one pass over the samples.

The frozen encoder never changes, so each picture's features are computed once and cached (runs/feature_cache).
Each stage keeps its last checkpoint (runs/vlm_<stage>) and, in <out>/best/, the one with the best score on
validation pictures (neither trained on nor tested). Last line, one JSON object with the keys: stages_run,
vqa_accuracy, vqa_accuracy_by_type, heldout_combo_accuracy, describe_f1, describe_exact, hallucination_rate,
offworld_idk_rate (pictures from outside the world answered "I don't know"), pretrain_describe_f1,
pretrain_describe_exact, pretrain_hallucination_rate, init_from, wall_s (figures of a stage that did not run
are read from its checkpoint, or null).
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import random
import time
from dataclasses import replace

from common import RUNS_DIR
from common.cli import course_parser, run
from common.device import named_rng, pick_device, pick_dtype, seed_everything
from common.errors import CourseError
from common.training import RunLogger, print_summary
from step6_vlm.data import (caption_conversations, eval_items, image_key, load_image, load_real_data,
                            offworld_items, painted_scenes, sft_phases, world_splits)
from step6_vlm.loop import encode, fit, init_llm, offworld_features, world_store
from step6_vlm.model import STAGE1_LLM_CHOICES, VLM, VLMConfig, apply_freeze, image_token_id, load_vlm, save_vlm
from step6_vlm.recipe import QUICK, RECIPE, StagePlan
from step6_vlm.scoring import describe, score
from step6_vlm.vision import CLIP_DIR, cached_features, default_vision_encoder, encoder_key, image_size, load_vision_encoder

STAGES = ("clip", "pretrain", "sft")
VAL_IMAGES = 100  # validation pictures for choosing each stage's best checkpoint
OFFWORLD_EVAL = 100  # held-out pictures from outside the world: is the answer "I don't know"?


def parse():
    p = course_parser("Train the VLM: stage 0 CLIP, stage 1 pretrain, stage 2 SFT (训练视觉语言模型)", "device", "dtype",
                      "epochs", "max_steps", "batch_size", "lr", "seed", "data", "init", "quick")
    a = p.add_argument
    a("--stage", choices=STAGES, default=None, help="只跑一个阶段 run one stage")
    a("--stages", default=None, help="按顺序运行 comma list, e.g. clip,pretrain,sft (default: the missing ones)")
    a("--runs", default=None, help="检查点目录 where the stages' checkpoints go: RUNS/clip, RUNS/vlm_pretrain, RUNS/vlm_sft "
      "(default runs/; there is no --out: this script writes up to three checkpoints)")
    a("--vision-encoder", default=None, help=f"视觉编码器 HF id or folder (default: openai/clip-vit-base-patch16 if cached, else {CLIP_DIR})")
    a("--stage1-llm", default=None, choices=STAGE1_LLM_CHOICES, help=f"阶段1 LLM (recipe: {RECIPE.stage1_llm})")
    a("--images", type=int, default=None, help=f"训练图像数 training pictures of the data world (recipe: {RECIPE.images})")
    a("--eval-images", type=int, default=None, help=f"评估图像数 held-out pictures (recipe: {RECIPE.eval_images})")
    a("--cache-dir", default=None, help="特征缓存目录 where frozen features are cached (default runs/feature_cache)")
    a("--recipe", action="append", default=[], metavar="FIELD=VALUE", help="配方 change one field of recipe.RECIPE, "
      "e.g. --recipe describe_p=0.5 --recipe sft.steps=1000 (repeatable)")
    a("--split", default=None, help="--data hf:NAME 的数据划分 split (default: train, or the only one there is)")
    a("--limit", type=int, default=None, help="--data hf:NAME 最多读多少行 at most this many rows")
    a("--image-column", default=None, help="--data hf:NAME 的图片列 image column (default: image/img/jpg)")
    a("--caption-column", default=None, help="--data hf:NAME 的描述列 caption column, a string or a list of strings "
      "(default: caption/captions/text/sentences)")
    return p.parse_args()


def recipe_of(args):
    """The recipe with the command line's overrides (quick: the smoke-run recipe)."""
    r = QUICK if args.quick else RECIPE
    for item in args.recipe:
        r = r.with_field(item)
    r = replace(r, images=args.images or r.images, eval_images=args.eval_images or r.eval_images,
                stage1_llm=args.stage1_llm or r.stage1_llm)
    for stage in ("pretrain", "sft"):
        pl = r.plan(stage)
        r = replace(r, **{stage: StagePlan(args.max_steps or pl.steps, args.batch_size or pl.batch,
                                           args.lr or pl.lr, pl.proj_lr * (args.lr or pl.lr) / pl.lr)})
    return r.check()


def stage_dir(args, stage: str) -> pathlib.Path:
    return pathlib.Path(args.runs or RUNS_DIR) / ("clip" if stage == "clip" else f"vlm_{stage}")


def stage_list(args) -> list:
    if args.stage:
        return [args.stage]
    if args.stages:
        bad = [s for s in args.stages.split(",") if s not in STAGES]
        if bad:
            raise CourseError(f"unknown stage(s) {bad} in --stages; choose from {', '.join(STAGES)}")
        return args.stages.split(",")
    missing = [s for s in ("pretrain", "sft") if not (stage_dir(args, s) / "config.json").is_file()]
    if missing == ["pretrain"]:
        missing = ["pretrain", "sft"]  # a new stage 1 makes the old stage 2 stale
    # stage 0 is needed when the encoder to use is the course's own small CLIP and it is not there yet
    own_clip = stage_dir(args, "clip") if args.runs else CLIP_DIR
    needs_clip = not args.vision_encoder and (args.runs or default_vision_encoder() == str(CLIP_DIR))
    return (["clip"] if needs_clip and not (own_clip / "config.json").is_file() else []) + missing


def main():
    args = parse()
    t_start = time.perf_counter()
    seed_everything(args.seed)
    dev = pick_device(args.device)
    dtype = pick_dtype(args.dtype, dev)
    recipe, stages = recipe_of(args), stage_list(args)
    sp = world_splits(recipe.images, recipe.eval_images, recipe.combo_images, seed=args.seed,
                      n_val=min(VAL_IMAGES, recipe.eval_images))
    summary = {"stages_run": stages}
    if "clip" in stages:
        from step6_vlm.small_clip import train_clip
        m = train_clip(stage_dir(args, "clip"), **({"steps": 40} if args.quick else {}), epochs=args.epochs,
                       n_images=recipe.images, seed=args.seed, device=args.device, splits=sp)
        print(f"[clip] zero-shot retrieval {m['clip_retrieval_acc']:.1%}, linear probe {m['probe_layer_-2']}", file=sys.stderr)
        summary.update(m)
    enc_name = args.vision_encoder or (str(stage_dir(args, "clip")) if args.runs else default_vision_encoder())
    vision, proc = load_vision_encoder(enc_name, dev)
    painted = painted_scenes(sp.train, recipe.paint_share, args.seed) if "sft" in stages and not args.data else []
    # with --data the world's pictures are only looked at (validation and the held-out scores), never trained on
    store, n_enc = world_store(vision, proc, {"train": [] if args.data else sp.train, "val": sp.val, "test": sp.test,
                                              "combo": sp.combo, "painted": painted}, enc_name, recipe.feature_layer,
                               image_size(proc), cache_root=args.cache_dir)
    assert store.start.get("train", 0) == 0  # a training picture's index is its row: the data functions' indices hold
    print(f"features {tuple(store.tensor.shape)} from {enc_name} ({n_enc} pictures encoded, the rest from the cache)",
          file=sys.stderr)
    real = load_real_data(args.data, recipe.layout, split=args.split, limit=args.limit, image_column=args.image_column,
                          caption_column=args.caption_column) if args.data else None
    if real:  # real images go through the same cache, keyed by their content
        keys = [image_key(r["image"]) for r in real]
        by_key = dict(zip(keys, (r["image"] for r in real)))
        feats, n_enc = cached_features(vision, proc, keys, lambda k: by_key[k] if not isinstance(by_key[k], pathlib.Path)
                                       else load_image(by_key[k]), encoder_key(enc_name, recipe.feature_layer),
                                       recipe.feature_layer, **({"cache_root": args.cache_dir} if args.cache_dir else {}))
        store.add("real", feats)
        print(f"--data: {len(real)} samples ({n_enc} images encoded)", file=sys.stderr)
    n_off = recipe.offworld if "sft" in stages and not args.data else 0
    for name, numbers in (("offworld", range(n_off)), ("offworld_test", range(-1, -1 - OFFWORLD_EVAL, -1))):
        if numbers:
            store.add(name, offworld_features(vision, proc, list(numbers), enc_name, recipe.feature_layer,
                                              image_size(proc), cache_root=args.cache_dir)[0])
    gpt, tok, init_from = init_llm(args.init, args.quick)
    vc = vision.config
    cfg = VLMConfig(enc_name, vc.hidden_size, store.tensor.shape[1], image_size(proc), image_token_id(tok),
                    recipe.projector, recipe.feature_layer, recipe.image_positions, recipe.layout)
    items = {split: store.items(split, eval_items(getattr(sp, split), args.seed, combo=split == "combo"))
             for split in ("val", "test", "combo")}
    items["offworld"] = offworld_items([store.row("offworld_test", i) for i in range(OFFWORLD_EVAL)],
                                       named_rng(args.seed, "off-world questions"))

    def evaluate(vlm, split="test") -> dict:
        """Short answers by exact match; descriptions generated greedily and read back into things."""
        short = [it for it in items[split] if it["type"] != "describe"]
        desc = [it for it in items[split] if it["type"] == "describe"]
        vqa = score(vlm, tok, short, store.tensor, dev)
        _, d = describe(vlm, tok, [getattr(sp, split)[it["image"] - store.start[split]] for it in desc],
                        [it["image"] for it in desc], [it["lang"] for it in desc], store.tensor, dev)
        out = {"vqa_accuracy": round(vqa["overall"], 4), "vqa_accuracy_by_type": vqa["by_type"],
               "describe_f1": round(d["f1"], 4), "describe_exact": round(d["exact"], 4),
               "hallucination_rate": round(d["hallucination_rate"], 4)}
        if split == "test":
            combo = score(vlm, tok, [it for it in items["combo"] if it["type"] != "describe"], store.tensor, dev)
            out.update(heldout_combo_accuracy=round(combo["overall"], 4), heldout_combo_by_type=combo["by_type"],
                       vqa_questions=vqa["n"], describe_pictures=d["n"],
                       offworld_idk_rate=round(score(vlm, tok, items["offworld"], store.tensor, dev)["overall"], 4))
        return out

    def val_score(vlm) -> float:  # what "best" means: short answers and descriptions weigh the same
        m = evaluate(vlm, "val")
        return (m["vqa_accuracy"] + m["describe_f1"]) / 2

    vlm, rng = None, named_rng(args.seed, "stage2 questions")
    for stage in [s for s in stages if s != "clip"]:
        prev = stage_dir(args, "pretrain")
        if stage == "sft" and vlm is None and (prev / "config.json").is_file():
            vlm, _, _ = load_vlm(prev, dev, with_vision=False, vision_encoder=enc_name)  # continue stage 1's model
            print(f"[sft] starting from {prev}", file=sys.stderr)
        elif vlm is None or stage == "pretrain":
            vlm = VLM(gpt, cfg).to(dev)
            print(f"[{stage}] LLM from {init_from}", file=sys.stderr)
        if real:
            phases = [(store.items("real", [(i, r["messages"]) for i, r in enumerate(real)]), 1.0)]
        elif stage == "pretrain":
            phases = [(caption_conversations(sp.train, recipe.layout, named_rng(args.seed, "stage1 prompts")), 1.0)]
        else:  # the lookup drills, then the full mix with descriptions among the questions
            phases = sft_phases(sp.train, rng, recipe.layout, recipe.curriculum, recipe.describe_p,
                                store.items("painted", list(enumerate(painted))),
                                [store.row("offworld", i) for i in range(n_off)])
        phases = [(encode(vlm, tok, convs), share) for convs, share in phases]
        plan = recipe.plan(stage)
        steps = (max(1, round(args.epochs * len(phases[-1][0]) / plan.batch / phases[-1][1])) if args.epochs
                 else plan.steps)
        out = stage_dir(args, stage)
        print(f"[{stage}] {steps} steps × {plan.batch}; trainable parameters: "
              f"{apply_freeze(vlm, stage, recipe.stage1_llm, recipe.last_n)}", file=sys.stderr)
        log = RunLogger(out, steps, desc=f"stage {stage}")  # the checkpoint saved at the end keeps these logs
        best = {}

        def keep_best(step, model):
            s = val_score(model)
            log.eval(step, val_score=round(s, 4))
            if s > best.get("score", -1.0):
                best.update(score=s, step=step)
                save_vlm(out / "best", model, tok, f"vlm_{stage}", metrics={"val_score": round(s, 4), "step": step})

        r = fit(vlm, tok, phases, store.tensor, stage, steps, plan.batch, plan.lr, plan.proj_lr, recipe.stage1_llm,
                recipe.last_n, args.seed, dev, dtype, log, on_eval=keep_best, eval_every=max(1, steps // 4))
        m = {"steps": steps, "train_s": round(r["train_s"], 1), "final_loss": round(r["loss"], 4),
             "best_step": best.get("step"), **evaluate(vlm)}
        log.eval(steps, **{k: v for k, v in m.items() if not isinstance(v, dict)})
        log.close()
        save_vlm(out, vlm, tok, f"vlm_{stage}", train_args=vars(args) | {"recipe": recipe.to_dict()}, metrics=m)
        print(f"[{stage}] held-out VQA {m['vqa_accuracy']:.1%} {m['vqa_accuracy_by_type']}  held-out combinations "
              f"{m['heldout_combo_accuracy']:.1%}  descriptions F1 {m['describe_f1']:.1%}, exactly right "
              f"{m['describe_exact']:.1%}, hallucinated {m['hallucination_rate']:.1%}", file=sys.stderr)
        summary.update({("pretrain_" if stage == "pretrain" else "") + k: v for k, v in m.items()})
    for stage, pre in (("pretrain", "pretrain_"), ("sft", "")):  # figures of stages that did not run now
        if pre + "describe_f1" not in summary and (stage_dir(args, stage) / "config.json").is_file():
            from common.checkpoint import load_checkpoint
            old = load_checkpoint(stage_dir(args, stage)).metrics
            summary.update({pre + k: old.get(k) for k in ("vqa_accuracy", "describe_f1", "describe_exact",
                                                           "hallucination_rate", "offworld_idk_rate")})
    keys = ("vqa_accuracy", "vqa_accuracy_by_type", "heldout_combo_accuracy", "describe_f1", "describe_exact",
            "hallucination_rate", "offworld_idk_rate", "pretrain_describe_f1", "pretrain_describe_exact",
            "pretrain_hallucination_rate")
    print_summary(**{k: summary.get(k) for k in keys}, **{k: v for k, v in summary.items() if k not in keys},
                  init_from=str(init_from), wall_s=round(time.perf_counter() - t_start, 1))


if __name__ == "__main__":
    run(main)
