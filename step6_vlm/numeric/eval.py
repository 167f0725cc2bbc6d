"""Score the numeric VLM and its digits baseline side by side, in range and out of range.

    python eval.py                                   # runs/vlm_numeric vs runs/vlm_numeric_digits on runs/numeric_data
    python eval.py --num runs/vlm_numeric --digits runs/vlm_numeric_digits --limit 200

MAE, relaxed accuracy (within 5%) and exact accuracy at the shown precision (one decimal), per split; the relaxed
accuracy per question type below. A variant whose checkpoint is missing is left out (its keys are null).
Final JSON keys: num_head_in_range_relaxed, num_head_in_range_mae, num_head_in_range_exact, digits_in_range_relaxed,
digits_in_range_mae, digits_in_range_exact, num_head_out_of_range_relaxed, num_head_out_of_range_mae,
num_head_out_of_range_exact, digits_out_of_range_relaxed, digits_out_of_range_mae, digits_out_of_range_exact,
value_range, samples_in_range, samples_out_of_range.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # repo root: common/ and earlier steps

import argparse

from common import RUNS_DIR
from common.cli import run
from common.device import pick_device
from common.errors import CourseError
from common.training import print_summary
from step6_vlm.numeric.data import DATA_DIR, IN_RANGE, ensure_dataset, load_samples
from step6_vlm.numeric.images import all_features, index_images
from step6_vlm.numeric.model import load_numeric
from step6_vlm.numeric.scoring import answers, score
from step6_vlm.vision import load_image_processor

SPLITS = {"in_range": "test_in_range.json", "out_of_range": "test_out_of_range.json"}
VARIANTS = {"num_head": "vlm_numeric", "digits": "vlm_numeric_digits"}


def main():
    p = argparse.ArgumentParser(description="Numeric VLM vs digits as text (数值头 vs 数字文本)")
    p.add_argument("--num", default=str(RUNS_DIR / VARIANTS["num_head"]), help="<num> 头检查点 the numeric-head checkpoint")
    p.add_argument("--digits", default=str(RUNS_DIR / VARIANTS["digits"]), help="基线检查点 the digits baseline checkpoint")
    p.add_argument("--data", default=str(DATA_DIR), help="数据目录 folder with test_in_range.json / test_out_of_range.json")
    p.add_argument("--limit", type=int, default=None, help="每个划分最多样本数 samples per split (default all)")
    p.add_argument("--device", default="auto", help="设备 device: auto, cpu, cuda, mps")
    a = p.parse_args()
    dev = pick_device(a.device)
    paths = {"num_head": a.num, "digits": a.digits}
    have = {k: v for k, v in paths.items() if (pathlib.Path(v) / "config.json").is_file()}
    if not have:  # checked before the charts are drawn: a missing model is the one thing to say
        raise CourseError(f"no checkpoint at {a.num} or {a.digits}; train them with python step6_vlm/numeric/train.py "
                          f"(and --numbers text for the baseline)")
    folder = ensure_dataset(a.data) if pathlib.Path(a.data) == DATA_DIR else pathlib.Path(a.data)
    figures, rows = {}, []
    for variant, path in have.items():
        model, tok, _ = load_numeric(path, dev)
        proc = load_image_processor(model.vlm.config.vision_encoder)
        for split, fname in SPLITS.items():
            samples = load_samples(folder / fname, model.vlm.config.layout, load_images=False)[:a.limit]
            feats = all_features(model, index_images(samples, proc))
            s = score(answers(model, tok, samples, feats), samples)
            figures.update({f"{variant}_{split}_{k}": s[k] for k in ("relaxed", "mae", "exact")})
            figures[f"samples_{split}"] = s["n"]
            rows.append((variant, split, s))
    print(f"\n{'variant':<10}{'split':<14}{'relaxed(5%)':>12}{'exact':>8}{'MAE':>8}   relaxed by question type")
    for variant, split, s in rows:
        types = "  ".join(f"{t} {v:.1%}" for t, v in sorted(s["relaxed_by_type"].items()))
        print(f"{variant:<10}{split:<14}{s['relaxed']:>12.1%}{s['exact']:>8.1%}{s['mae']:>8.3f}   {types}")
    span = IN_RANGE[1] - IN_RANGE[0]
    print(f"\nvalue range of the training pictures: {IN_RANGE[0]:g}–{IN_RANGE[1]:g} (MAE bar: 1% of it = {span / 100:g})")
    keys = [f"{v}_{s}_{k}" for s in SPLITS for v in VARIANTS for k in ("relaxed", "mae", "exact")]
    print_summary(**{k: figures.get(k) for k in keys}, value_range=span,
                  samples_in_range=figures.get("samples_in_range"), samples_out_of_range=figures.get("samples_out_of_range"))


if __name__ == "__main__":
    run(main)
