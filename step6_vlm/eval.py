"""Evaluate the VLM on held-out pictures of the data world: accuracy per question type, descriptions read back
into things, and the two-stage table (picture | Pretrain_vlm answer | SFT_vlm answer | truth).

    python eval.py                                   # runs/vlm_sft, beside runs/vlm_pretrain
    python eval.py --init runs/vlm_sft --compare runs/vlm_pretrain --out runs/vlm_eval --rows 8

Every answer is generated greedily (what a student sees in demo.py). Short answers are scored by exact match;
a description is parsed with the world's grammar into (colour, shape, size, position) things: F1 against the
picture, exactly right descriptions, and the hallucination rate = described things that are not in the picture.
Pictures from outside the world (held-out off-world drawings, and real photos that ship with matplotlib, so
offline): the share answered "I don't know", and each stage's answers about the photos in eval.md.
Last line, one JSON object with the keys: vqa_accuracy, vqa_accuracy_by_type, heldout_combo_accuracy,
describe_f1, describe_exact, hallucination_rate, mean_answer_chars, offworld_idk_rate, and the same with
pretrain_ for the stage-1 checkpoint (null without one), descriptions_per_stage, eval_md, wall_s.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import time

from common import RUNS_DIR
from common.cli import course_parser, run
from common.device import named_rng, pick_device, seed_everything
from common.errors import CourseError
from common.training import print_summary
from common.world import describe_scene
from step6_vlm.data import (DESCRIBE_PROMPTS, eval_items, image_key, load_image, offworld_items, render_scene,
                            world_splits)
from step6_vlm.loop import offworld_features, world_store
from step6_vlm.model import load_vlm
from step6_vlm.scoring import describe, generate_answers, score
from step6_vlm.vision import cached_features, encoder_key, image_size, load_vision_encoder

STAGE_DIRS = {"pretrain": RUNS_DIR / "vlm_pretrain", "sft": RUNS_DIR / "vlm_sft"}
MAKE = "python step6_vlm/train.py"  # the command that makes both checkpoints
STAGE_TITLES = {"pretrain": "Pretrain_vlm 阶段1 输出", "sft": "SFT_vlm 阶段2 输出"}
OFFWORLD_EVAL = 100  # train.py's held-out off-world pictures: data.offworld_picture(-1 … -100)
PHOTOS = ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png")  # real photos in matplotlib's sample data
PHOTO_QUESTIONS = (DESCRIBE_PROMPTS["zh"], DESCRIBE_PROMPTS["en"], "图中有几个图形？", "What color is the shape at the top left?")


def photo_paths() -> list:
    """The real photos matplotlib installs with itself (a pip dependency of the course: no download)."""
    from matplotlib import cbook
    return [pathlib.Path(cbook.get_sample_data(name, asfileobj=False)) for name in PHOTOS]


def write_photo_md(out: pathlib.Path, photos, answers: dict) -> list:
    """Lines of eval.md: each photo, each question, each stage's answer."""
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    stages = list(answers)
    lines = ["", "## 数据世界之外的图片 pictures from outside the world", "",
             "| 照片 | 问题 | " + " | ".join(STAGE_TITLES.get(s, s) for s in stages) + " |", "|---|---|" + "---|" * len(stages)]
    for j, path in enumerate(photos):
        load_image(path).resize((126, 126)).save(img_dir / f"photo_{j}.png")
        for q_i, q in enumerate(PHOTO_QUESTIONS):
            cells = [answers[s][j * len(PHOTO_QUESTIONS) + q_i].replace("|", "/").replace("\n", "↵") or "(empty)"
                     for s in stages]
            lines.append(f"| <img src=\"images/photo_{j}.png\" width=\"126\"> | {q} | " + " | ".join(cells) + " |")
    return lines


def accuracy_by_type(items, predictions) -> dict:
    """Exact match (whitespace trimmed) of each prediction with its item's answer, overall and per item["type"]."""
    if len(items) != len(predictions):
        raise CourseError(f"{len(predictions)} predictions for {len(items)} questions")
    by = {}
    for it, p in zip(items, predictions):
        by.setdefault(it["type"], []).append(" ".join(p.split()) == " ".join(it["answer"].split()))
    ok = [v for vs in by.values() for v in vs]
    return {"overall": round(sum(ok) / max(1, len(ok)), 4), "by_type": {t: round(sum(v) / len(v), 4) for t, v in by.items()}}


def evaluate_checkpoint(vlm, tok, short, combo, desc, scenes, feats, device) -> dict:
    """Short answers (held-out pictures and held-out combinations) and descriptions, all generated greedily."""
    room = max(len(tok.encode(it["answer"])) for it in short + combo) + 2  # a longer answer is wrong anyway
    ask = lambda its, n: generate_answers(vlm, tok, [(it["image"], it["question"]) for it in its], feats, n, device=device)
    descriptions, d = describe(vlm, tok, [scenes[it["image"]] for it in desc], [it["image"] for it in desc],
                               [it["lang"] for it in desc], feats, device)
    return {"vqa": accuracy_by_type(short, ask(short, room)), "combo": accuracy_by_type(combo, ask(combo, room)),
            "describe": d, "descriptions": descriptions}


def write_eval_md(out: pathlib.Path, scenes, desc, results, n_rows: int, header: str, tail=()) -> pathlib.Path:
    """The two-stage table: picture | prompt | one answer per stage | truth, then each column's length, F1 and
    hallucination rate over all the described pictures. Pictures are PNG files beside it."""
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    stages = list(results)
    lines = [header, "", "| 图片 | 问题 | " + " | ".join(STAGE_TITLES.get(s, s) for s in stages) + " | 真实描述 (ground truth) |",
             "|---|---|" + "---|" * len(stages) + "---|"]
    for k, it in enumerate(desc[:n_rows]):
        i = it["image"]
        render_scene(scenes[i]).resize((126, 126), 0).save(img_dir / f"{i:03d}.png")  # 2× nearest: stays crisp
        cells = [results[s]["descriptions"][k].replace("|", "/").replace("\n", "↵") or "(empty)" for s in stages]
        lines.append(f"| <img src=\"images/{i:03d}.png\" width=\"126\"> | {it['question']} | " + " | ".join(cells)
                     + f" | {describe_scene(scenes[i], it['lang'])} |")
    for label, key, fmt in (("平均长度（字符）mean length", "mean_chars", "{:.1f}"), ("F1", "f1", "{:.1%}"),
                            ("幻觉率 hallucinated things", "hallucination_rate", "{:.1%}"),
                            ("整句全对 exactly right", "exact", "{:.1%}")):
        lines.append(f"| **{label}** | {len(desc)} 张图 | "
                     + " | ".join(fmt.format(results[s]["describe"][key]) for s in stages) + " | |")
    path = out / "eval.md"
    path.write_text("\n".join(lines + list(tail) + [""]), encoding="utf-8")
    return path


def main():
    p = course_parser("Evaluate the VLM per question type and its descriptions, stage 1 beside stage 2 (评估)",
                      "device", "seed", "out", "init")
    p.add_argument("--compare", default=str(STAGE_DIRS["pretrain"]), help="对比 stage-1 checkpoint shown beside --init ('' = none)")
    p.add_argument("--eval-images", type=int, default=None, help="评估图像数 held-out pictures (default: as in training)")
    p.add_argument("--rows", type=int, default=8, help="表格行数 rows of the picture table in eval.md")
    p.add_argument("--cache-dir", default=None, help="特征缓存目录 feature cache (default runs/feature_cache)")
    args = p.parse_args()
    t0 = time.perf_counter()
    seed_everything(args.seed)
    dev = pick_device(args.device)
    main_path = pathlib.Path(args.init) if args.init else STAGE_DIRS["sft"]
    if not (main_path / "config.json").is_file():
        raise CourseError(f"no VLM checkpoint at {main_path}; make it with: {MAKE}")
    paths = {}
    if args.compare and (pathlib.Path(args.compare) / "config.json").is_file():
        paths["pretrain"] = pathlib.Path(args.compare)
    elif args.compare:
        print(f"note: no stage-1 checkpoint at {args.compare}, so the table has no stage-1 column; make it with: "
              f"{MAKE} --stage pretrain", file=sys.stderr)
    paths["sft"] = main_path
    models = {s: load_vlm(path, dev, with_vision=False) for s, path in paths.items()}
    vlm, tok, ckpt = models["sft"]
    recipe = ckpt.train_args.get("recipe", {})
    n_test = args.eval_images or recipe.get("eval_images", 400)
    n_combo = recipe.get("combo_images", 300)
    seed = ckpt.train_args.get("seed", args.seed)
    sp = world_splits(0, n_test, n_combo, seed=seed)  # test pictures are drawn first: n_train does not change them
    vision, proc = load_vision_encoder(vlm.config.vision_encoder, dev)
    store, _ = world_store(vision, proc, {"test": sp.test, "combo": sp.combo}, vlm.config.vision_encoder,
                           vlm.config.feature_layer, image_size(proc), cache_root=args.cache_dir)
    scenes = sp.test + sp.combo                                    # row r of the store is scenes[r]
    items = store.items("test", eval_items(sp.test, seed))
    short, desc = [it for it in items if it["type"] != "describe"], [it for it in items if it["type"] == "describe"]
    combo = [it for it in store.items("combo", eval_items(sp.combo, seed, combo=True)) if it["type"] != "describe"]
    enc = dict(vision_encoder=vlm.config.vision_encoder, feature_layer=vlm.config.feature_layer)
    store.add("offworld_test", offworld_features(vision, proc, list(range(-1, -1 - OFFWORLD_EVAL, -1)), **enc,
                                                 size=image_size(proc), cache_root=args.cache_dir)[0])
    offworld = offworld_items([store.row("offworld_test", i) for i in range(OFFWORLD_EVAL)],
                              named_rng(seed, "off-world questions"))           # the same questions as train.py's
    photos = photo_paths()
    by_key = {image_key(p): p for p in photos}
    store.add("photos", cached_features(vision, proc, list(by_key), lambda k: load_image(by_key[k]),
                                        encoder_key(enc["vision_encoder"], enc["feature_layer"]), enc["feature_layer"],
                                        **({"cache_root": args.cache_dir} if args.cache_dir else {}))[0])
    photo_qs = [(store.row("photos", j), q) for j in range(len(photos)) for q in PHOTO_QUESTIONS]
    photo_answers = {}
    results, summary = {}, {}
    for stage, (m, _, _) in models.items():
        results[stage] = r = evaluate_checkpoint(m, tok, short, combo, desc, scenes, store.tensor, dev)
        photo_answers[stage] = generate_answers(m, tok, photo_qs, store.tensor, device=dev)
        idk = score(m, tok, offworld, store.tensor, dev)["overall"]
        d, pre = r["describe"], "" if stage == "sft" else "pretrain_"
        summary.update({f"{pre}vqa_accuracy": r["vqa"]["overall"], f"{pre}vqa_accuracy_by_type": r["vqa"]["by_type"],
                        f"{pre}heldout_combo_accuracy": r["combo"]["overall"], f"{pre}describe_f1": round(d["f1"], 4),
                        f"{pre}describe_exact": round(d["exact"], 4),
                        f"{pre}hallucination_rate": round(d["hallucination_rate"], 4),
                        f"{pre}mean_answer_chars": round(d["mean_chars"], 1), f"{pre}offworld_idk_rate": round(idk, 4)})
        print(f"[{stage}] {paths[stage]}: VQA {r['vqa']['overall']:.1%} {r['vqa']['by_type']}  held-out combinations "
              f"{r['combo']['overall']:.1%}  descriptions F1 {d['f1']:.1%}, exactly right {d['exact']:.1%}, "
              f"hallucinated {d['hallucination_rate']:.1%}, {d['mean_chars']:.1f} characters; off-world pictures "
              f"answered \"I don't know\" {idk:.1%}", file=sys.stderr)
    for k in ("vqa_accuracy", "describe_f1", "describe_exact", "hallucination_rate", "mean_answer_chars",
              "offworld_idk_rate"):
        summary.setdefault(f"pretrain_{k}", None)
    out = pathlib.Path(args.out) if args.out else RUNS_DIR / "vlm_eval"
    head = (f"# VLM evaluation on held-out pictures\n\n\"{DESCRIBE_PROMPTS['zh']}\" / \"{DESCRIBE_PROMPTS['en']}\" "
            f"about {len(desc)} held-out pictures, each in its question's language; "
            + "; ".join(f"{s}: `{paths[s]}`" for s in results) + ".")
    md = write_eval_md(out, scenes, desc, results, args.rows, head, write_photo_md(out, photos, photo_answers))
    print(f"table with pictures: {md}", file=sys.stderr)
    print_summary(**summary, vqa_questions=len(short), descriptions_per_stage=len(desc), eval_md=str(md),
                  wall_s=round(time.perf_counter() - t0, 1))


if __name__ == "__main__":
    run(main)
