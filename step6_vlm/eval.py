"""Evaluate the VLM on held-out pictures of the data world: accuracy per question type, the two-stage table
(picture | stage-1 output | stage-2 output) and a hallucination measure for each stage.

    python eval.py                                   # runs/vlm_sft, compared with runs/vlm_pretrain
    python eval.py --init runs/vlm_sft --compare runs/vlm_pretrain --out runs/vlm_eval --rows 8

Answers are generated greedily (what a student sees in demo.py) and scored by exact match. A mention of a
colour, shape, position or count that the scene does not contain is a hallucination (幻觉).
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import re
import time

import torch

from common import RUNS_DIR
from common.cli import course_parser, run
from common.device import pick_device, seed_everything
from common.errors import CourseError
from common.training import print_summary
from common.world import COLORS, POSITIONS, SHAPES, describe_scene
from step6_vlm.data import CAPTION_PROMPTS, DESCRIBE_PROMPTS, eval_items, render_scene, user_turn, world_splits
from step6_vlm.model import build_example, load_vlm

STAGE_DIRS = {"pretrain": RUNS_DIR / "vlm_pretrain", "sft": RUNS_DIR / "vlm_sft"}
MAKE = "python step6_vlm/train.py"  # the command that makes both checkpoints
STAGE_TITLES = {"pretrain": "Pretrain_vlm 阶段1 输出", "sft": "SFT_vlm 阶段2 输出"}

# ----------------------------------------------------------------------------------------------------
# Hallucination: which attributes does an answer mention, and does the scene hold them?

# Surface form → (kind, canonical value). Grey and pink are words of the text world (colour mixing) that
# are never painted: a model that says them about a picture is making them up.
_FORMS = {}
for c in COLORS:
    _FORMS[c.zh], _FORMS[c.en] = ("color", c.en), ("color", c.en)
for w, v in (("灰色", "gray"), ("gray", "gray"), ("grey", "gray"), ("粉色", "pink"), ("pink", "pink")):
    _FORMS[w] = ("color", v)
for zh, en in SHAPES:
    _FORMS[zh], _FORMS[en] = ("shape", en), ("shape", en)
    _FORMS[en + ("es" if en.endswith("x") else "s")] = ("shape", en)
for r, row in enumerate(POSITIONS):
    for c, (zh, en) in enumerate(row):
        _FORMS[zh], _FORMS[en] = ("position", (r, c)), ("position", (r, c))
# Longest form first, so "top left" wins over "top" and "bottom right" over "right"; English forms need
# word boundaries ("star" must not match inside "start").
_ALT = "|".join(re.escape(w) + (r"\b" if w.isascii() else "") for w in sorted(_FORMS, key=len, reverse=True))
_WORD = re.compile(r"(?<![A-Za-z])(" + _ALT + ")")
_COUNT = re.compile(r"(\d+)\s*个图形|(\d+)\s+shapes?\b|\bis\s+(\d+)\s+shape\b")
_CLAUSE = re.compile(r"[，,。.：:;；]|\band\b")


def mentions(text: str) -> list:
    """[(kind, value)] for every colour, shape, position and count the text names, in order."""
    out = [_FORMS[m.group(1)] for m in _WORD.finditer(text)]
    for m in _COUNT.finditer(text):
        out.append(("count", int(next(g for g in m.groups() if g))))
    return out


def check_answer(text: str, things) -> dict:
    """Attribute mentions not in the scene (hallucinated), and described objects that do not exist: a clause
    naming a position together with a colour/shape that the thing at that position does not have."""
    truth = {"color": {t.color.en for t in things}, "shape": {t.shape[1] for t in things},
             "position": {(t.row, t.col) for t in things}, "count": {len(things)}}
    ms = mentions(text)
    bad = [(k, v) for k, v in ms if v not in truth[k]]
    objects, wrong = 0, 0
    for clause in _CLAUSE.split(text):
        found = dict(m for m in mentions(clause) if m[0] != "count")
        if "position" in found and ("color" in found or "shape" in found):
            objects += 1
            at = [t for t in things if (t.row, t.col) == found["position"]]
            ok = at and found.get("color", at[0].color.en) == at[0].color.en and found.get("shape", at[0].shape[1]) == at[0].shape[1]
            wrong += not ok
    return {"mentions": len(ms), "hallucinated": bad, "objects": objects, "wrong_objects": wrong}


def hallucination_stats(answers, scenes) -> dict:
    """Pooled over answers: hallucination_rate = hallucinated mentions / all mentions; answers_with_hallucination
    = share of answers with at least one; object_error_rate = wrong described objects / described objects."""
    checks = [check_answer(a, s) for a, s in zip(answers, scenes)]
    n_m = sum(c["mentions"] for c in checks)
    n_h = sum(len(c["hallucinated"]) for c in checks)
    n_o = sum(c["objects"] for c in checks)
    by_kind = {}
    for c in checks:
        for k, _ in c["hallucinated"]:
            by_kind[k] = by_kind.get(k, 0) + 1
    return {"hallucination_rate": round(n_h / max(1, n_m), 4), "mentions": n_m, "hallucinated": n_h,
            "hallucinated_by_kind": by_kind,
            "answers_with_hallucination": round(sum(bool(c["hallucinated"]) for c in checks) / max(1, len(checks)), 4),
            "object_error_rate": round(sum(c["wrong_objects"] for c in checks) / max(1, n_o), 4),
            "mean_answer_chars": round(sum(len(a) for a in answers) / max(1, len(answers)), 1)}


# ----------------------------------------------------------------------------------------------------
# Accuracy of predictions, per question type


def normalize(text: str) -> str:
    return " ".join(text.strip().split())


def accuracy_by_type(items, predictions) -> dict:
    """Exact match (after trimming whitespace) of each prediction with its item's answer, per item["type"]."""
    if len(items) != len(predictions):
        raise CourseError(f"{len(predictions)} predictions for {len(items)} questions")
    by = {}
    for it, p in zip(items, predictions):
        by.setdefault(it["type"], []).append(normalize(p) == normalize(it["answer"]))
    ok = [v for t, vs in by.items() if t != "describe" for v in vs]  # vqa_accuracy: the four short-answer types
    return {"vqa_accuracy": round(sum(ok) / max(1, len(ok)), 4),
            "by_type": {t: round(sum(v) / len(v), 4) for t, v in by.items()}, "n": {t: len(v) for t, v in by.items()}}


@torch.no_grad()
def generate_answers(vlm, tok, questions, feats, max_new_tokens: int = 96, batch_size: int = 200, device="cpu") -> list:
    """questions: [(image_index, question text)] → greedy answers; the picture goes where the model's layout
    puts it. Prompts of equal length are batched together (generate() needs a rectangular batch); the answer
    ends at <|im_end|>."""
    vlm.eval()
    enc = [build_example(vlm, tok, [{"role": "user", "content": user_turn(q, vlm.config.layout)}],
                         add_generation_prompt=True)[0] for _, q in questions]
    groups = {}
    for k, ids in enumerate(enc):
        groups.setdefault(len(ids), []).append(k)
    out = [None] * len(questions)
    for length, ks in groups.items():
        room = min(max_new_tokens, vlm.llm.config.block_size - length)
        for s in range(0, len(ks), batch_size):
            part = ks[s:s + batch_size]
            x = torch.tensor([enc[k] for k in part], device=device)                  # (B, T)
            f = feats[torch.tensor([questions[k][0] for k in part])].to(device)      # (B, P, D)
            new = vlm.generate(x, image_features=f, max_new_tokens=room, temperature=0.0, eos_id=tok.im_end_id)
            for k, row in zip(part, new.tolist()):                                   # row: new ids of one answer
                row = row[:row.index(tok.im_end_id)] if tok.im_end_id in row else row
                out[k] = tok.decode(row, skip_special=True)
    return out


# ----------------------------------------------------------------------------------------------------
# One checkpoint on the held-out pictures


def evaluate_checkpoint(vlm, tok, items, desc_questions, scenes, feats, device) -> dict:
    """Short answers (color/shape/count/position) and the descriptions, generated greedily and scored."""
    short = [it for it in items if it["type"] != "describe"]
    # no right short answer is longer than this, so generation may stop there: a longer answer is wrong anyway
    room = max(len(tok.encode(it["answer"])) for it in short) + 2
    preds = generate_answers(vlm, tok, [(it["image"], it["question"]) for it in short], feats,
                             max_new_tokens=room, device=device)
    descs = generate_answers(vlm, tok, desc_questions, feats, device=device)
    # the describe questions are the describe-prompt half of desc_questions: score those answers too
    said = {q: a for q, a in zip(desc_questions, descs)}
    desc_items = [it for it in items if it["type"] == "describe"]
    desc_preds = [said.get((it["image"], it["question"]), "") for it in desc_items]
    acc = accuracy_by_type(short + desc_items, preds + desc_preds)
    hall = hallucination_stats(descs, [scenes[i] for i, _ in desc_questions])
    # the same figures per prompt: stage 1 was trained on the caption prompt, stage 2 on the describe prompt
    for name, prompts in (("describe", DESCRIBE_PROMPTS), ("caption", CAPTION_PROMPTS)):
        ks = [k for k, (_, q) in enumerate(desc_questions) if q in prompts.values()]
        hall[f"{name}_prompt"] = {k: v for k, v in hallucination_stats([descs[k] for k in ks], [scenes[desc_questions[k][0]] for k in ks]).items()
                                  if k in ("hallucination_rate", "mean_answer_chars", "object_error_rate")}
    return {"accuracy": acc, "hallucination": hall, "descriptions": descs}


def world_features_for(vlm, scenes, device, cache_dir=None):
    from step6_vlm.loop import world_features
    from step6_vlm.vision import image_size, load_vision_encoder
    vision, proc = load_vision_encoder(vlm.config.vision_encoder, device)
    feats, _ = world_features(vision, proc, scenes, vlm.config.vision_encoder, vlm.config.feature_layer, image_size(proc),
                              cache_root=cache_dir)
    return feats  # (N, P, D)


def write_eval_md(out: pathlib.Path, scenes, desc_questions, results, n_rows: int, header: str) -> pathlib.Path:
    """The two-stage table: picture | stage-1 output | stage-2 output, with pictures as PNG files beside it."""
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    stages = list(results)
    lines = [header, "", "| 图片 | 问题 | " + " | ".join(STAGE_TITLES.get(s, s) for s in stages) + " | 真实描述 (ground truth) |",
             "|---|---|" + "---|" * len(stages) + "---|"]
    shown = set()
    for k, (i, q) in enumerate(desc_questions):
        if i in shown or len(shown) >= n_rows:
            continue
        shown.add(i)
        big = render_scene(scenes[i]).resize((126, 126), 0)  # 2× nearest: the 63-pixel picture stays crisp
        big.save(img_dir / f"{i:03d}.png")
        truth = describe_scene(scenes[i], "zh" if re.search(r"[\u4e00-\u9fff]", q) else "en")
        cells = [results[s]["descriptions"][k].replace("|", "/").replace("\n", "↵") or "(empty)" for s in stages]
        lines.append(f"| <img src=\"images/{i:03d}.png\" width=\"126\"> | {q} | " + " | ".join(cells) + f" | {truth} |")
    lines.append("")
    path = out / "eval.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def main():
    p = course_parser("Evaluate the VLM per question type, stage 1 beside stage 2, and hallucination (评估)",
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
    paths = {}
    if args.compare:
        if (pathlib.Path(args.compare) / "config.json").is_file():
            paths["pretrain"] = pathlib.Path(args.compare)
        else:
            print(f"note: no stage-1 checkpoint at {args.compare}, so the table has no stage-1 column; make it with: "
                  f"{MAKE} --stage pretrain", file=sys.stderr)
    if not (main_path / "config.json").is_file():
        raise CourseError(f"no VLM checkpoint at {main_path}; make it with: {MAKE}")
    paths["sft"] = main_path
    models = {s: load_vlm(path, dev, with_vision=False) for s, path in paths.items()}
    vlm, tok, ckpt = models["sft"]
    ta = ckpt.train_args
    n_test = args.eval_images or (40 if ta.get("quick") else ta.get("eval_images", 400))
    n_combo = 30 if ta.get("quick") else 300
    seed = ta.get("seed", args.seed)
    sp = world_splits(0, n_test, n_combo, seed=seed)  # test pictures are drawn first: n_train does not change them
    scenes = sp.test + sp.combo
    feats = world_features_for(vlm, scenes, dev, args.cache_dir)
    items = eval_items(sp.test, seed)
    combo = [dict(it, image=it["image"] + n_test) for it in eval_items(sp.combo, seed, combo=True) if it["type"] != "describe"]
    # the same two description prompts for both stages: stage 1's caption prompt and stage 2's describe prompt
    lang = {it["image"]: it["lang"] for it in items}
    desc_q = ([(i, DESCRIBE_PROMPTS[lang[i]]) for i in range(n_test)] +
              [(i, CAPTION_PROMPTS[lang[i]]) for i in range(n_test)])
    results, summary = {}, {}
    for stage, (m, _, _) in models.items():
        results[stage] = r = evaluate_checkpoint(m, tok, items, desc_q, scenes, feats, dev)
        c = accuracy_by_type(combo, generate_answers(m, tok, [(it["image"], it["question"]) for it in combo], feats,
                                                     max_new_tokens=16, device=dev))
        pre = "" if stage == "sft" else "pretrain_"
        summary.update({f"{pre}vqa_accuracy": r["accuracy"]["vqa_accuracy"], f"{pre}vqa_accuracy_by_type": r["accuracy"]["by_type"],
                        f"{pre}heldout_combo_accuracy": c["vqa_accuracy"], f"hallucination_rate_{stage}": r["hallucination"]["hallucination_rate"],
                        f"answers_with_hallucination_{stage}": r["hallucination"]["answers_with_hallucination"],
                        f"object_error_rate_{stage}": r["hallucination"]["object_error_rate"],
                        f"mean_answer_chars_{stage}": r["hallucination"]["mean_answer_chars"],
                        f"hallucination_by_prompt_{stage}": {k: r["hallucination"][f"{k}_prompt"] for k in ("describe", "caption")}})
        print(f"[{stage}] {paths[stage]}: VQA {r['accuracy']['vqa_accuracy']:.1%} {r['accuracy']['by_type']}  "
              f"held-out combinations {c['vqa_accuracy']:.1%}  hallucination {r['hallucination']}", file=sys.stderr)
    summary.setdefault("hallucination_rate_pretrain", None)
    out = pathlib.Path(args.out) if args.out else RUNS_DIR / "vlm_eval"
    head = (f"# VLM evaluation on held-out pictures\n\n{len(desc_q)} descriptions of {len(desc_q) // 2} held-out pictures "
            f"per stage; hallucination rate = mentioned colours/shapes/positions/counts not in the scene ÷ all mentioned.\n\n"
            + "\n".join(f"- {s}: `{paths[s]}` VQA {results[s]['accuracy']['vqa_accuracy']:.1%}, hallucination rate "
                        f"{results[s]['hallucination']['hallucination_rate']:.1%}, mean answer length "
                        f"{results[s]['hallucination']['mean_answer_chars']} characters" for s in results))
    md = write_eval_md(out, scenes, desc_q, results, args.rows, head)
    print(f"table with pictures: {md}", file=sys.stderr)
    summary.update({"vqa_questions": sum(it["type"] != "describe" for it in items),
                    "descriptions_per_stage": len(desc_q), "eval_md": str(md), "wall_s": round(time.perf_counter() - t0, 1)})
    print_summary(**summary)


if __name__ == "__main__":
    run(main)
