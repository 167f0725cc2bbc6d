"""Numeric pictures of the data world and their conversations: bar charts (2–5 coloured bars, one-decimal values)
and gauges, drawn with PIL at the small CLIP's 63×63; questions whose answers carry numbers as `<num><value>`;
stored as JSON conversations (`id`, `conversations` with `from`/`value`, `image`) + an `images/` folder.

    python data.py --out runs/numeric_data      # writes train.json, test_in_range.json, test_out_of_range.json, images/

The axis of every picture runs from 0 to 100. Training values lie in [20, 80] (IN_RANGE); the out-of-range split
asks about values in (80, 100]: taller bars and needles further right than any training picture, an honest test of
whether a model extrapolates.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))  # repo root: common/ and earlier steps

import json
import math
import random
from pathlib import Path

from PIL import Image, ImageDraw

from common import RUNS_DIR
from common.datasources import conversation, records
from common.device import named_rng
from common.errors import CourseError
from common.files import atomic_folder
from common.world import COLORS
from step6_vlm.data import BACKGROUND, IMAGE_SIZE, load_image, user_turn

DATA_DIR = RUNS_DIR / "numeric_data"
AXIS_MAX = 100.0                 # the top of every picture's scale
IN_RANGE = (20.0, 80.0)          # values of the training pictures and of the in-range test
OUT_RANGE = (80.1, 100.0)        # asked-about values of the out-of-range test
SPLITS = {"train": 4000, "test_in_range": 300, "test_out_of_range": 300}  # pictures per split
GAUGE_SHARE = 0.25               # share of the pictures that are gauges; the rest are bar charts
MIN_GAP = 3.0                    # "which is larger and by how much" only asks about bars at least this far apart
SUPERSAMPLE = 4
TITLES = [("水果销量", "Fruit sales"), ("一月气温", "January temperatures"), ("班级成绩", "Class scores"),
          ("每日步数", "Daily steps"), ("城市降雨", "City rainfall"), ("图书借阅", "Library loans")]


def one_decimal(rng: random.Random, lo: float, hi: float) -> float:
    return round(rng.uniform(lo, hi), 1)


# ----------------------------------------------------------------------------------------------------
# Drawing


def render_bars(values, colors, size: int = IMAGE_SIZE) -> Image.Image:
    """Vertical bars side by side, heights value / AXIS_MAX of the picture, on the world's grey background."""
    big = size * SUPERSAMPLE
    img = Image.new("RGB", (big, big), BACKGROUND)
    d = ImageDraw.Draw(img)
    slot = big / len(values)
    for k, (v, c) in enumerate(zip(values, colors)):
        top = big * (1 - v / AXIS_MAX)
        d.rectangle([k * slot + 0.15 * slot, top, (k + 0.85) * slot, big], fill=c.rgb)
    return img.resize((size, size), Image.LANCZOS)  # the antialiased top edge keeps sub-pixel height


def render_gauge(value: float, size: int = IMAGE_SIZE) -> Image.Image:
    """A half dial (0 on the left, 100 on the right) with a black needle from the centre of its base."""
    big = size * SUPERSAMPLE
    img = Image.new("RGB", (big, big), BACKGROUND)
    d = ImageDraw.Draw(img)
    cx, cy, r = big / 2, big * 0.8, big * 0.46
    d.pieslice([cx - r, cy - r, cx + r, cy + r], 180, 360, fill=(250, 250, 250))
    a = math.pi * (1 - value / AXIS_MAX)                  # 0 → left (π), 100 → right (0)
    d.line([cx, cy, cx + r * 0.95 * math.cos(a), cy - r * 0.95 * math.sin(a)], fill=(20, 20, 20), width=big // 20)
    return img.resize((size, size), Image.LANCZOS)


# ----------------------------------------------------------------------------------------------------
# Pictures and their questions


def bar_chart(rng: random.Random, out_of_range: bool) -> dict:
    n = rng.randint(2, 5)
    colors = rng.sample(COLORS, n)
    values = [one_decimal(rng, *IN_RANGE) for _ in range(n)]
    if out_of_range:  # one bar taller than any training bar: the one the questions ask about
        values[rng.randrange(n)] = one_decimal(rng, *OUT_RANGE)
    return {"kind": "bar", "values": values, "colors": colors, "title": rng.choice(TITLES)}


def bar_questions(chart: dict, rng: random.Random, out_of_range: bool) -> list:
    """(qtype, lang, question, answer) about a chart: one bar's value, and (when two bars differ enough) which of
    two is larger and by how much. Out of range, every question involves the tall bar."""
    vals, cols, (tz, te) = chart["values"], chart["colors"], chart["title"]
    ask = [k for k, v in enumerate(vals) if v > IN_RANGE[1]] if out_of_range else list(range(len(vals)))
    k = rng.choice(ask)
    out = []
    lang = rng.choice(["zh", "en"])
    c = cols[k]
    out.append(("bar_value", lang,
                f"《{tz}》中{c.zh}柱子的数值是多少？" if lang == "zh" else f'In "{te}", what is the value of the {c.en} bar?',
                f"{c.zh}柱子是<num><{vals[k]:.1f}>。" if lang == "zh" else f"The {c.en} bar is <num><{vals[k]:.1f}>."))
    others = [j for j in range(len(vals)) if j != k and abs(vals[j] - vals[k]) >= MIN_GAP]
    if others:
        j = rng.choice(others)
        a, b = (k, j) if rng.random() < 0.5 else (j, k)
        hi = a if vals[a] > vals[b] else b
        gap = round(abs(vals[a] - vals[b]), 1)
        lang = rng.choice(["zh", "en"])
        out.append(("bar_diff", lang,
                    f"《{tz}》中{cols[a].zh}和{cols[b].zh}柱子哪个更高？高多少？" if lang == "zh" else
                    f'In "{te}", which is larger, the {cols[a].en} bar or the {cols[b].en} bar, and by how much?',
                    f"{cols[hi].zh}柱子更高，高<num><{gap:.1f}>。" if lang == "zh" else
                    f"The {cols[hi].en} bar is larger, by <num><{gap:.1f}>."))
    return out


def gauge(rng: random.Random, out_of_range: bool) -> dict:
    return {"kind": "gauge", "values": [one_decimal(rng, *(OUT_RANGE if out_of_range else IN_RANGE))],
            "title": rng.choice(TITLES)}


def gauge_questions(g: dict, rng: random.Random) -> list:
    (tz, te), v, lang = g["title"], g["values"][0], rng.choice(["zh", "en"])
    return [("gauge", lang, f"《{tz}》仪表的读数是多少？" if lang == "zh" else f'What does the gauge "{te}" read?',
             f"读数是<num><{v:.1f}>。" if lang == "zh" else f"It reads <num><{v:.1f}>.")]


def make_split(name: str, n_pictures: int, seed: int) -> list:
    """[(PIL image, [samples in the JSON format])] of one split, deterministic for (name, seed)."""
    rng = named_rng(seed, f"numeric-{name}")
    oor = name == "test_out_of_range"
    out = []
    for i in range(n_pictures):
        if rng.random() < GAUGE_SHARE:
            pic = gauge(rng, oor)
            img, qs = render_gauge(pic["values"][0]), gauge_questions(pic, rng)
        else:
            pic = bar_chart(rng, oor)
            img, qs = render_bars(pic["values"], pic["colors"]), bar_questions(pic, rng, oor)
        image = f"{name}_{i:05d}.png"
        samples = [{"id": f"{name}_{i:05d}_{q}", "image": image, "type": qt, "lang": lang,
                    "title": pic["title"][0 if lang == "zh" else 1],
                    "conversations": [{"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]}
                   for q, (qt, lang, question, answer) in enumerate(qs)]
        out.append((image, img, samples))
    return out


def write_dataset(folder=DATA_DIR, seed: int = 1337, sizes=None) -> Path:
    """Write every split as <split>.json + the pictures in images/ (atomically: a killed run leaves none)."""
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        (tmp / "images").mkdir()
        for name, n in (sizes or SPLITS).items():
            samples = []
            for image, img, s in make_split(name, n, seed):
                img.save(tmp / "images" / image)
                samples += s
            (tmp / f"{name}.json").write_text(json.dumps(samples, ensure_ascii=False, indent=1), encoding="utf-8")
    return folder


def ensure_dataset(folder=DATA_DIR, seed: int = 1337, sizes=None) -> Path:
    folder = Path(folder)
    if not (folder / "train.json").is_file():
        print(f"writing the numeric charts to {folder}", file=sys.stderr)
        write_dataset(folder, seed, sizes)
    return folder


# ----------------------------------------------------------------------------------------------------
# Loading (the world's files or anyone's in the same format)


def load_samples(path, layout: str = "question-first", load_images: bool = True) -> list:
    """A JSON file of samples ({"id", "conversations": [{"from", "value"}], "image"}) → [{"id", "image" (PIL),
    "messages", "type"}]. Images are looked up in images/ next to the file, then next to the file itself. The
    human turn's `<image>` is moved where the VLM's layout puts it."""
    path = Path(path)
    if not path.is_file():
        raise CourseError(f"numeric data file {path} does not exist (make the world's with: python step6_vlm/numeric/data.py)")
    out = []
    for where, obj in records(path):
        if not isinstance(obj, dict):
            raise CourseError(f"{where}: expected an object with id, conversations and image")
        missing = [k for k in ("id", "conversations", "image") if k not in obj]
        if missing:
            raise CourseError(f"{where} (id {obj.get('id', '?')!r}): missing {', '.join(missing)}; each entry needs "
                              f'"id", "conversations" [{{"from", "value"}}] and "image"')
        messages = conversation(obj, where)
        for m in messages:
            if m["role"] == "user":
                if m["content"].count("<image>") > 1:
                    raise CourseError(f"{where}: a human turn has more than one <image>; one picture per sample")
                m["content"] = user_turn(m["content"].replace("<image>", "").strip(), layout)
                break
        img_path = next((p for p in (path.parent / "images" / obj["image"], path.parent / obj["image"]) if p.is_file()),
                        path.parent / "images" / obj["image"])
        out.append({"id": obj["id"], "where": where, "type": obj.get("type", "numeric"), "messages": messages,
                    "image": load_image(img_path) if load_images else img_path})
    if not out:
        raise CourseError(f"{path} holds no samples")
    return out


def main():
    import argparse
    p = argparse.ArgumentParser(description="Write the numeric charts and gauges (数值图表数据)")
    p.add_argument("--out", default=str(DATA_DIR), help="输出目录 folder for the JSON files and images/")
    p.add_argument("--seed", type=int, default=1337, help="随机种子 seed")
    a = p.parse_args()
    folder = write_dataset(a.out, a.seed)
    for name in SPLITS:
        print(f"{name}: {len(json.loads((folder / f'{name}.json').read_text()))} samples")


if __name__ == "__main__":
    from common.cli import run
    run(main)
