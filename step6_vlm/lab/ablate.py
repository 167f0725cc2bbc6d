"""Measured ablations of the image path (消融实验): each row changes ONE thing against the baseline, trains
both stages briefly on cached frozen features, and scores held-out pictures per question type.

    python ablate.py                       # every row, writes runs/vlm_ablate/ablation.md (measured before the oracle row: 18 min, 2-core CPU)
    python ablate.py --only first,mean     # some rows
    python ablate.py --quick               # seconds: tiny random model, shows the table's shape only

Baseline = ../train.py's defaults (all patches, linear projection, learned image positions, the question before
the image, stage 1 trains the whole LLM, no loss on image positions, two stages), with fewer
steps. The rows:
  1. image tokens: first patch only (the bug) / one mean-pooled token (its tempting fix) / all patches (LLaVA)
  2. loss on image positions (the other tempting change) vs none
  3. stage-1 freeze: whole LLM (the default) / projection + last 2 layers / projection only (LLaVA-1); one stage (SFT only) vs two
  4. linear vs MLP projection
  5. the lookup: no lookup drill at the start of stage 2 / the image before the question (LLaVA's layout) /
     no learned image positions
  6. colour apart from shape: no repainted pictures in stage 2 (data.PAINT_SHARE) — read the held-out combinations
  7. the encoder's part: perfect-encoder features (oracle_features) in place of the frozen encoder's, so every fact
     a question needs is linearly readable — what is left is the LLM's part
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # repo root: common/ and earlier steps

import copy
import json
import random
import time
from dataclasses import fields, replace

import torch
import torch.nn.functional as F

from common import RUNS_DIR
from common.cli import course_parser, run
from common.device import pick_device, seed_everything
from common.errors import CourseError
from common.training import print_summary
from step6_vlm.data import (PAINT_SHARE, caption_conversations, cell_labels, eval_items, painted_scenes,
                            sft_phases, world_splits)
from step6_vlm.loop import FeatureStore, encode, fit, init_llm
from step6_vlm.scoring import describe, score
from step6_vlm.model import VLM, VLMConfig, image_token_id
from step6_vlm.pitfalls import IMAGE_TOKEN_MODES, with_image_loss
from step6_vlm.recipe import RECIPE, StagePlan

# Short runs: same learning rates and batch as train.py, a fifth of its stage-2 steps, so all rows fit in
# 18–29 minutes on the shared 2-core CPU (82–186 s a row, by how busy it is). Every row is then far from converged:
# compare rows, not the baseline with train.py's figure. --sft-steps 2500 for converged numbers.
ABLATE = replace(RECIPE, pretrain=StagePlan(40, 32, 1e-3, 2e-3), sft=StagePlan(500, 32, 1e-3, 1e-3))
QUICK_ABLATE = replace(ABLATE, pretrain=StagePlan(4, 8, 1e-3, 2e-3), sft=StagePlan(6, 8, 1e-3, 1e-3))

# name: (group, what changes, overrides). Overrides are recipe fields (replace(recipe, ...)), plus four of the lab's
# own: image_tokens (pitfalls.IMAGE_TOKEN_MODES: the first patch only, or one mean), image_loss (a loss on image
# positions too), stages (which stages run) and features ("oracle": oracle_features of the same pictures instead
# of the frozen encoder's). paint_share is the recipe's or 0.
CONFIG_OVERRIDES = ("projector", "image_positions", "layout")
VARIANTS = {
    "baseline":      ("", "baseline: all patches, linear, positions, question first, stage 1 = whole LLM, lookup drill", {}),
    "first":         ("1 image tokens", "first patch only (the bug)", {"image_tokens": "first"}),
    "mean":          ("1 image tokens", "one mean-pooled token (mean-pooling fix)", {"image_tokens": "mean"}),
    "image_loss":    ("2 loss on image positions", "loss on image positions too", {"image_loss": True}),
    "stage1_last_n": ("3 stage-1 freeze", "stage 1: projection + last 2 LLM layers (the lesson's table)", {"stage1_llm": "last_n"}),
    "stage1_frozen": ("3 stage-1 freeze", "stage 1: projection only, LLM frozen (LLaVA-1/minimind-v)", {"stage1_llm": "frozen"}),
    "one_stage":     ("3 stage-1 freeze", "one stage: SFT only, same total steps", {"stages": ("sft",)}),
    "mlp":           ("4 projection", "MLP projection (Linear-GELU-Linear)", {"projector": "mlp"}),
    "image_first":   ("5 the lookup", "image before the question (LLaVA layout)", {"layout": "image-first"}),
    "no_positions":  ("5 the lookup", "no learned image positions (LLaVA)", {"image_positions": "none"}),
    "no_curriculum": ("5 the lookup", "stage 2 without the lookup drills (full mix from the first step)", {"curriculum": ()}),
    "no_paint":      ("6 colour apart from shape", "no repainted pictures in stage 2", {"paint_share": 0.0}),
    "oracle":        ("7 the encoder's part", "perfect-encoder features: one-hots of each cell's colour/shape/size (the LLM's part alone)",
                      {"features": "oracle"}),
}
# the order rows are run in (most telling first, so a stopped run has measured what matters most)
ORDER = ["baseline", "no_curriculum", "no_paint", "first", "mean", "image_first", "no_positions", "image_loss", "stage1_last_n",
         "one_stage", "mlp", "stage1_frozen", "oracle"]
# the groups of the table, each with the baseline as its reference row
GROUPS = {"1 image tokens": ["baseline", "first", "mean"], "2 loss on image positions": ["baseline", "image_loss"],
          "3 stage-1 freeze": ["baseline", "stage1_last_n", "stage1_frozen", "one_stage"], "4 projection": ["baseline", "mlp"],
          "5 the lookup": ["baseline", "no_curriculum", "image_first", "no_positions"],
          "6 colour apart from shape": ["baseline", "no_paint"], "7 the encoder's part": ["baseline", "oracle"]}
BASELINE_LABEL = {"1 image tokens": "all patches (LLaVA, baseline)", "2 loss on image positions": "answer tokens only (baseline)",
                  "3 stage-1 freeze": "stage 1: projection + whole LLM (baseline)", "4 projection": "linear, no bias (baseline)",
                  "5 the lookup": "question first, learned positions, lookup drill (baseline)",
                  "6 colour apart from shape": f"{PAINT_SHARE:.0%} of the pictures also repainted, asked their shapes (baseline)",
                  "7 the encoder's part": "the frozen encoder's features (baseline)"}


def row_recipe(recipe, overrides: dict):
    """The recipe of one row: the ablations' recipe with the row's recipe fields changed."""
    return replace(recipe, **{k: v for k, v in overrides.items() if k in {f.name for f in fields(recipe)}})


def oracle_features(scenes, dim: int) -> torch.Tensor:
    """(N, 9, dim) "perfect encoder" features: patch k holds a one-hot of its cell k and, if the cell is occupied,
    one-hots of the thing's colour, shape and size. Every fact a question needs is there and linearly readable,
    so a VLM that still cannot answer has its problem on the LLM side, not the encoder's. An off-world paint
    (data.painted_scenes) has no colour name, so its colour one-hot stays empty: the thing is still there with its
    shape and size, which is all the painted pictures' shape questions ask, and no world colour is claimed for it."""
    from common.world import COLORS, SHAPES, SIZES
    widths = [9, len(COLORS), len(SHAPES), len(SIZES), 1]
    if dim < sum(widths):
        raise CourseError(f"oracle features need at least {sum(widths)} dimensions, the encoder gives {dim}")
    # cell_labels knows the world's colours only: an unnamed paint gets a stand-in colour, cleared again below
    unnamed = torch.zeros(len(scenes), 9, dtype=torch.bool)
    for n, things in enumerate(scenes):
        for t in things:
            unnamed[n, t.row * 3 + t.col] = not t.color.en
    lab = cell_labels([[t if t.color.en else replace(t, color=COLORS[0]) for t in things] for things in scenes])
    lab[..., 0][unnamed] = 0                                      # (N, 9, 3): 1-based class ids, 0 = none
    feats = torch.zeros(len(scenes), 9, dim)
    feats[:, :, :9] = torch.eye(9)
    i, k = (lab[..., 1] > 0).nonzero(as_tuple=True)              # the occupied (scene, cell) pairs: every thing has a shape
    offset = 9
    for j, width in enumerate(widths[1:4]):                       # colour, shape, size one-hots side by side
        on = lab[i, k, j] > 0
        feats[i[on], k[on], offset + lab[i[on], k[on], j] - 1] = 1.0
        offset += width
    feats[i, k, offset] = 1.0                                     # occupied
    return feats


def build_variant(gpt, cfg: VLMConfig, overrides: dict) -> VLM:
    """A fresh VLM for one row: a copy of the start LLM (rows never share weights) and the row's config."""
    vlm_class = IMAGE_TOKEN_MODES[overrides.get("image_tokens", "all")]
    return vlm_class(copy.deepcopy(gpt), replace(cfg, **{k: v for k, v in overrides.items() if k in CONFIG_OVERRIDES}))


def run_variant(name: str, ctx: dict) -> dict:
    """Train one row (stage 1 on captions, stage 2 on questions) and score it on held-out pictures."""
    _, _, ov = VARIANTS[name]
    tok, dev, sp = ctx["tok"], ctx["device"], ctx["splits"]
    feats = ctx["oracle"] if ov.get("features") == "oracle" else ctx["feats"]  # same rows, so every index holds
    recipe = row_recipe(ctx["recipe"], ov)
    # n_patches from the features: the oracle has one patch per cell, whatever the encoder's patch grid
    vlm = build_variant(ctx["gpt"], replace(ctx["cfg"], n_patches=feats.shape[1]), ov).to(dev)
    stages = ov.get("stages", ("pretrain", "sft"))
    rng = random.Random(ctx["seed"])
    out, t0 = {"row": name}, time.perf_counter()
    for stage in stages:
        if stage == "pretrain":
            phases = [(caption_conversations(sp.train, vlm.config.layout), 1.0)]
        else:
            phases = sft_phases(sp.train, rng, vlm.config.layout, recipe.curriculum, recipe.describe_p,
                                painted=ctx["painted"] if recipe.paint_share else ())
        phases = [(encode(vlm, tok, convs), share) for convs, share in phases]
        if ov.get("image_loss"):
            phases = [(with_image_loss(ex, vlm.config.image_token_id), share) for ex, share in phases]
        p = recipe.plan(stage)
        if len(stages) == 1:  # one stage gets the steps of both, so it is not simply trained less
            p = replace(p, steps=recipe.pretrain.steps + recipe.sft.steps)
        r = fit(vlm, tok, phases, feats, stage, p.steps, p.batch, p.lr, p.proj_lr, recipe.stage1_llm, recipe.last_n,
                ctx["seed"], dev)
        out[f"{stage}_proj_grad0"] = round(r["proj_grad0"], 5)
        out[f"{stage}_final_loss"] = round(r["loss"], 4)
        print(f"  [{name}] {stage}: {p.steps} steps in {r['train_s']:.0f} s, final loss {r['loss']:.3f}", file=sys.stderr)
        if stage == "pretrain":
            out["pretrain_describe_f1"] = round(describe_f1(vlm, tok, ctx, feats, dev), 4)
    vqa = score(vlm, tok, ctx["items"], feats, dev)
    combo = score(vlm, tok, ctx["combo"], feats, dev)
    out.update(vqa_accuracy=round(vqa["overall"], 4), by_type=vqa["by_type"] | {"describe": round(describe_f1(vlm, tok, ctx, feats, dev), 4)},
               heldout_combo_accuracy=round(combo["overall"], 4), heldout_combo_by_type=combo["by_type"],
               image_tokens_per_image=vlm.tokens_per_image, train_s=round(time.perf_counter() - t0, 1))
    return out


def describe_f1(vlm, tok, ctx, feats, dev) -> float:
    """F1 of the described things on the held-out pictures (scoring.describe), read from the row's features."""
    d = ctx["describe"]
    return describe(vlm, tok, ctx["describe_scenes"], [it["image"] for it in d], [it["lang"] for it in d],
                    feats, dev)[1]["f1"]


def probe_ceiling(feats: torch.Tensor, scenes, n_train: int, mode: str, ridge: float = 1.0) -> dict:
    """What can the LLM possibly read from the image tokens of a mode? A linear (ridge) probe from those tokens
    to the answer of each question type, fitted on the training pictures and scored on the rest — an upper
    bound that needs no LLM training. color/shape: of the thing in each occupied cell; count; position: a
    thing's cell holds its colour AND shape in the decoded map (what "where is the red star?" needs)."""
    f = {"first": feats[:, :1], "mean": feats.mean(1, keepdim=True), "all": feats}[mode].flatten(1)  # (N, n·D)
    x = torch.cat([f, torch.ones(len(f), 1)], 1).double()                                           # (N, n·D+1)
    from common.world import COLORS, SHAPES
    nc, ns = len(COLORS) + 1, len(SHAPES) + 1                                                       # class 0 = empty cell
    lab = cell_labels(scenes)                                                                       # (N, 9, 3)
    n_things = (lab[..., 0] > 0).sum(1) - 1                                                         # (N,) 0–3 for 1–4 things
    y = torch.cat([F.one_hot(lab[..., 0], nc).flatten(1), F.one_hot(lab[..., 1], ns).flatten(1),
                   F.one_hot(n_things, 4)], 1).double()                                                # (N, 9·9+9·7+4)
    a, b = x[:n_train], y[:n_train]
    w = torch.linalg.solve(a.T @ a + ridge * torch.eye(a.shape[1], dtype=a.dtype), a.T @ b)          # (n·D+1, K)
    pred, true = x[n_train:] @ w, y[n_train:]
    pc = pred[:, :9 * nc].reshape(-1, 9, nc).argmax(-1); tc = true[:, :9 * nc].reshape(-1, 9, nc).argmax(-1)
    ps = pred[:, 9 * nc:9 * (nc + ns)].reshape(-1, 9, ns).argmax(-1); ts = true[:, 9 * nc:9 * (nc + ns)].reshape(-1, 9, ns).argmax(-1)
    occ = tc != 0                                                                                   # (M, 9) cells with a thing
    count = (pred[:, -4:].argmax(-1) == true[:, -4:].argmax(-1)).double().mean()
    return {"color": round(float((pc == tc)[occ].double().mean()), 4), "shape": round(float((ps == ts)[occ].double().mean()), 4),
            "count": round(float(count), 4), "position": round(float(((pc == tc) & (ps == ts))[occ].double().mean()), 4)}


def command(name: str, quick: bool) -> str:
    return f"python step6_vlm/lab/ablate.py --only {name}" + (" --quick" if quick else "")


def table(results: dict, quick: bool, machine: str, probe: dict | None = None, recipe=None) -> str:
    """Markdown: one block per ablation, the baseline repeated as each block's reference row."""
    types = ("color", "shape", "count", "position")
    pre = []
    if probe:
        pre = ["Information ceiling of the image tokens (linear probe on the frozen features each mode hands to the LLM, "
               "fitted on the training pictures, scored on held-out ones; no LLM training, seconds):", "",
               "| image tokens | tokens per image | " + " | ".join(types) + " |", "|---|---|" + "---|" * len(types)]
        for m, label in (("first", "first patch only (the bug)"), ("mean", "one mean-pooled token (mean-pooling fix)"),
                         ("all", "all patches (LLaVA)")):
            pre.append(f"| {label} | {1 if m != 'all' else 'P'} | " + " | ".join(f"{probe[m][t]:.1%}" for t in types) + " |")
        pre.append("")
    if recipe:
        a, b = recipe.pretrain, recipe.sft
        pre.append(f"Training per row: stage 1 {a.steps} steps × {a.batch}, stage 2 {b.steps} steps × {b.batch} (one stage: "
                   f"{a.steps + b.steps} SFT steps), all rows from the same LLM and seed.\n")
    head = ("| ablation | setting | VQA | " + " | ".join(types) + " | describe F1 | held-out combos | combos: shape | stage-1 describe F1 "
            "| proj. grad (1st step) | train s | command |")
    lines = pre + [f"Measured on {machine}; held-out pictures, exact match of the greedy answer.", "", head,
             "|" + "---|" * (head.count("|") - 1)]
    for group, names in GROUPS.items():
        for n in names:
            if n not in results:
                continue
            r = results[n]
            label = BASELINE_LABEL[group] if n == "baseline" else VARIANTS[n][1]
            by = r["by_type"]
            g0 = r.get("pretrain_proj_grad0", r.get("sft_proj_grad0"))
            lines.append(f"| {group} | {label} | {r['vqa_accuracy']:.1%} | " + " | ".join(f"{by.get(t, 0):.1%}" for t in types)
                         + f" | {by.get('describe', 0):.1%} | {r['heldout_combo_accuracy']:.1%} | "
                         + f"{r.get('heldout_combo_by_type', {}).get('shape', 0):.1%} | "
                         + (f"{r['pretrain_describe_f1']:.1%}" if "pretrain_describe_f1" in r else "—")
                         + f" | {g0:.2e} | {r['train_s']:.0f} | `{command(n, quick)}` |")
    return "\n".join(lines) + "\n"


def setup(args, dev) -> dict:
    """Start LLM, frozen features of train + held-out pictures (from the cache), and the evaluation sets."""
    if args.quick:
        from step6_vlm.debug import quick_parts
        n_train, n_test, n_combo, recipe = 32, 8, 8, QUICK_ABLATE
        sp = world_splits(n_train, n_test, n_combo, seed=args.seed)
        painted = painted_scenes(sp.train, PAINT_SHARE, args.seed)
        splits = {"train": sp.train, "test": sp.test, "combo": sp.combo, "painted": painted}
        tok, gpt, cfg, feats = quick_parts([s for scenes in splits.values() for s in scenes], dev, args.seed)
        store = split_store(feats, splits)
        src = "tiny random model (--quick)"
    else:
        from step6_vlm.loop import world_store
        from step6_vlm.vision import default_vision_encoder, image_size, load_vision_encoder
        gpt, tok, src = init_llm(args.init)
        enc = args.vision_encoder or default_vision_encoder()
        vision, proc = load_vision_encoder(enc, dev)
        n_train, n_test, n_combo, recipe = args.images, args.eval_images, args.eval_images // 2, ABLATE
        # the splits exactly as train.py draws them (400 + 300 held out), so the training pictures and their
        # cached features are the same; the evaluation uses the first n_test / n_combo held-out pictures
        sp = world_splits(n_train, max(400, n_test), max(300, n_combo), seed=args.seed)
        sp.test, sp.combo = sp.test[:n_test], sp.combo[:n_combo]
        painted = painted_scenes(sp.train, PAINT_SHARE, args.seed)   # as train.py, after the held-out pictures
        splits = {"train": sp.train, "test": sp.test, "combo": sp.combo, "painted": painted}
        store, _ = world_store(vision, proc, splits, enc, -2, image_size(proc))
        vc = vision.config
        cfg = VLMConfig(enc, vc.hidden_size, store.tensor.shape[1], image_size(proc), image_token_id(tok))
    assert store.start.get("train", 0) == 0  # a training picture's index is its row: the data functions' indices hold
    # the oracle row's features: the same pictures in the same rows, as wide as the encoder's so the same VLMConfig works
    oracle = split_store(oracle_features([s for scenes in splits.values() for s in scenes], store.tensor.shape[2]),
                         splits)
    assert oracle.start == store.start
    for stage, flag in (("pretrain", args.pretrain_steps), ("sft", args.sft_steps)):
        p = recipe.plan(stage)
        recipe = replace(recipe, **{stage: replace(p, steps=flag or p.steps, batch=args.batch_size or p.batch)})
    held = sp.train + sp.test
    # the store's first rows are train, then test (world_store keeps the order of the splits)
    probe = {m: probe_ceiling(store.tensor[:len(held)], held, n_train, m) for m in ("first", "mean", "all")}
    items = store.items("test", eval_items(sp.test, args.seed))
    return {"tok": tok, "gpt": gpt, "cfg": cfg, "feats": store.tensor, "oracle": oracle.tensor, "device": dev, "splits": sp, "recipe": recipe,
            "painted": store.items("painted", list(enumerate(painted))),
            "seed": args.seed, "src": src, "probe": probe, "items": [it for it in items if it["type"] != "describe"],
            "describe": [it for it in items if it["type"] == "describe"],
            "combo": [it for it in store.items("combo", eval_items(sp.combo, args.seed, combo=True))
                      if it["type"] != "describe"],
            "describe_scenes": [sp.test[it["image"] - store.start["test"]] for it in items if it["type"] == "describe"]}


def split_store(feats: torch.Tensor, splits: dict) -> FeatureStore:
    """A FeatureStore of features computed for the splits' pictures in order, {name: scenes} (--quick), laid out
    as world_store lays out the cache's: a split without pictures gets no name."""
    store, at = FeatureStore(feats), 0
    for name, scenes in splits.items():
        if scenes:
            store.start[name], store.size[name] = at, len(scenes)
            at += len(scenes)
    if at != len(feats):
        raise CourseError(f"{len(feats)} feature rows for {at} pictures")
    return store


def main():
    p = course_parser("Measured ablations of the VLM's image path (消融实验)", "device", "batch_size", "seed",
                      "out", "init", "quick")
    p.add_argument("--only", default=None, help=f"只跑这些行 comma list of rows: {', '.join(VARIANTS)}")
    p.add_argument("--images", type=int, default=8000, help="训练图像数 training pictures (as train.py: features come from its cache)")
    p.add_argument("--eval-images", type=int, default=200, help="评估图像数 held-out pictures (and half as many held-out combinations)")
    p.add_argument("--pretrain-steps", type=int, default=None, help=f"阶段1步数 (default {ABLATE.pretrain.steps})")
    p.add_argument("--sft-steps", type=int, default=None, help=f"阶段2步数 (default {ABLATE.sft.steps})")
    p.add_argument("--vision-encoder", default=None, help="视觉编码器 (default: as train.py)")
    p.add_argument("--machine", default="2-core CPU", help="机器 how to name this machine in the table")
    args = p.parse_args()
    names = args.only.split(",") if args.only else list(ORDER)
    bad = [n for n in names if n not in VARIANTS]
    if bad:
        raise CourseError(f"unknown row(s) {bad}; choose from {', '.join(VARIANTS)}")
    t0 = time.perf_counter()
    seed_everything(args.seed)
    dev = pick_device(args.device)
    ctx = setup(args, dev)
    out = pathlib.Path(args.out) if args.out else RUNS_DIR / ("vlm_ablate_quick" if args.quick else "vlm_ablate")
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "ablation.json"
    results = json.loads(saved.read_text()) if saved.is_file() and args.only else {}  # --only adds rows to the table
    if "baseline" not in names and "baseline" not in results:  # every block compares against the baseline
        names.insert(0, "baseline")
    print(f"ablations from {ctx['src']}, features {tuple(ctx['feats'].shape)}, steps {ctx['recipe'].pretrain.steps}"
          f" + {ctx['recipe'].sft.steps}", file=sys.stderr)
    for n in names:
        seed_everything(args.seed)  # every row starts from the same random state
        results[n] = r = run_variant(n, ctx)
        print(f"[{n}] VQA {r['vqa_accuracy']:.1%} {r['by_type']} combos {r['heldout_combo_accuracy']:.1%} "
              f"({r['train_s']:.0f} s)", file=sys.stderr)
        saved.write_text(json.dumps(results | {"probe": ctx["probe"]}, indent=1))  # a stopped run keeps what it measured
        (out / "ablation.md").write_text(table({k: v for k, v in results.items() if k in VARIANTS}, args.quick, args.machine,
                                               ctx["probe"], ctx["recipe"]), encoding="utf-8")
    results["probe"] = ctx["probe"]
    md = table({k: v for k, v in results.items() if k in VARIANTS}, args.quick, args.machine, ctx["probe"], ctx["recipe"])
    (out / "ablation.md").write_text(md, encoding="utf-8")
    print(md, file=sys.stderr)
    print_summary(rows={n: {k: r[k] for k in ("vqa_accuracy", "by_type", "heldout_combo_accuracy", "train_s")}
                        | {k: v for k, v in r.items() if k.endswith(("proj_grad0", "pretrain_describe_f1"))}
                        for n, r in results.items() if n in VARIANTS}, probe_ceiling=ctx["probe"],
                  recipe=ctx["recipe"].to_dict(), table=str(out / "ablation.md"), wall_s=round(time.perf_counter() - t0, 1))


if __name__ == "__main__":
    run(main)
