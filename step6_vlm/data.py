"""Step 6 data: the data world drawn as pictures (common/world.py), its captions and questions, and loaders for
real image–text data (LLaVA-style JSON, a folder with captions.json, a Hugging Face dataset by name).

The pictures are made so that CLIP's patch grid and the scene's 3×3 grid agree: a 63×63 image cut into
21-pixel patches gives exactly one patch per grid cell, so each image token carries one cell's content.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import argparse
import hashlib
import json
import math
import random
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError

from common.errors import CourseError
from common.world import (COLORS, DESCRIBE_PROMPTS, POSITIONS, QUESTION_TYPES, SHAPES, SIZES, Color, Thing,
                          describe_scene, question, random_scene, unique_things)

IMAGE_SIZE = 63            # pixels per side
GRID = 3                   # the world's 3×3 grid
CELL = IMAGE_SIZE // GRID  # 21 pixels: one CLIP patch per cell
BACKGROUND = (128, 128, 128)  # mid grey: both black and white shapes stand out
RENDER_VERSION = "world-v1"   # part of the feature-cache key of world images: bump it when drawing changes
SUPERSAMPLE = 4               # draw 4× larger, then shrink: smooth edges, like a real photo's

# Attribute combinations that never appear in any training image (stage 0, 1 or 2): each color and each
# shape is still seen, only these pairs are new at test time. Honest test of compositional generalization.
HELDOUT_COMBOS = {("red", "star"), ("green", "hexagon"), ("blue", "triangle"), ("yellow", "circle"),
                  ("purple", "diamond"), ("orange", "square")}

CAPTION_PROMPTS = {"zh": "这个图像中有什么内容？", "en": "What is in this image?"}


# Where the picture goes in a user turn. LLaVA puts it first ("<image>\n question"): in a causal LM the image
# tokens then cannot see the question, and finding the asked-about cell is left to the few tokens after them.
# With the question first, every image token attends to the question, so each can already say "I am the cell
# asked about". Measured (README problem 7, lookup.py --question-first): the lookup is learned 4–7× sooner.
LAYOUTS = ("question-first", "image-first")


def user_turn(text: str, layout: str = "question-first") -> str:
    """A user message with the picture's `<image>` placeholder where `layout` says."""
    if layout == "question-first":
        return text + "\n<image>"
    if layout == "image-first":
        return "<image>\n" + text
    raise CourseError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")


def allowed_in_training(color, shape) -> bool:
    return (color.en, shape[1]) not in HELDOUT_COMBOS


def scene_key(things) -> str:
    """A stable identity of a scene (and so of its picture): used for splits and the feature cache.
    An off-world paint has no name, so its RGB value stands for it."""
    return ";".join(f"{t.row}{t.col}:{t.color.en or '#%02x%02x%02x' % t.color.rgb}:{t.shape[1]}:{t.size[1]}"
                    for t in things)


# ----------------------------------------------------------------------------------------------------
# Drawing


def _polygon(cx, cy, r, n, phase=-math.pi / 2, inner=None):
    """Regular polygon (or a star when `inner` radius is given) centred at (cx, cy)."""
    pts = []
    steps = 2 * n if inner else n
    for i in range(steps):
        rad = inner if inner and i % 2 else r
        a = phase + 2 * math.pi * i / steps
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def draw_shape(draw: ImageDraw.ImageDraw, shape_en: str, cx: float, cy: float, r: float, fill) -> None:
    if shape_en == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape_en == "square":
        s = r * 0.85  # same visual weight as the circle
        draw.rectangle([cx - s, cy - s, cx + s, cy + s], fill=fill)
    elif shape_en == "triangle":
        draw.polygon(_polygon(cx, cy + r * 0.15, r * 1.05, 3), fill=fill)
    elif shape_en == "star":
        draw.polygon(_polygon(cx, cy, r * 1.05, 5, inner=r * 0.45), fill=fill)
    elif shape_en == "diamond":
        draw.polygon([(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)], fill=fill)
    elif shape_en == "hexagon":
        draw.polygon(_polygon(cx, cy, r, 6, phase=0.0), fill=fill)
    else:
        raise CourseError(f"unknown shape {shape_en!r}; the world has {[s[1] for s in SHAPES]}")


def render_scene(things, size: int = IMAGE_SIZE) -> Image.Image:
    """Draw a scene: each thing centred in its grid cell, big or small. Deterministic for a scene."""
    big = size * SUPERSAMPLE
    img = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(img)
    cell = big / GRID
    for t in things:
        r = cell * (0.42 if t.size[1] == "big" else 0.26)
        draw_shape(draw, t.shape[1], (t.col + 0.5) * cell, (t.row + 0.5) * cell, r, t.color.rgb)
    return img.resize((size, size), Image.LANCZOS)


# ----------------------------------------------------------------------------------------------------
# Texts about a scene: captions (stage 1) and questions with exactly one right answer (stage 2, eval)


def caption_messages(things, lang: str, layout: str = "question-first", prompt: str | None = None) -> list:
    return [{"role": "user", "content": user_turn(prompt or CAPTION_PROMPTS[lang], layout)},
            {"role": "assistant", "content": describe_scene(things, lang)}]


def caption_conversations(scenes, layout: str = "question-first", rng: random.Random | None = None) -> list:
    """Stage 1 on the data world: each picture's description in both languages, as (scene index, messages).
    The instruction is "what is in this image?" or "describe this image" at random (with `rng`; without, always
    the first), so stage 1 already answers the request a user types first."""
    return [(i, caption_messages(s, lang, layout, rng.choice([CAPTION_PROMPTS[lang], DESCRIBE_PROMPTS[lang]])
                                 if rng else None)) for i, s in enumerate(scenes) for lang in ("zh", "en")]


def qa_examples(things, rng: random.Random, layout: str = "question-first", per_image: int = 3,
                describe_p: float = 0.15, types=("color", "shape", "count", "position")) -> list:
    """Stage-2 conversations about one image: up to `per_image` different question types (a description
    among them with probability `describe_p`), each its own one-question conversation in a random language,
    so every question sits where the layout puts it next to the picture. Evaluation asks one question too."""
    types = list(types) + (["describe"] if rng.random() < describe_p else [])
    rng.shuffle(types)
    convs = []
    for qt in types[:per_image]:
        qa = question(qt, things, rng, rng.choice(["zh", "en"]))
        if qa:  # a position question has no single answer when the scene has two things alike
            convs.append([{"role": "user", "content": user_turn(qa[0], layout)}, {"role": "assistant", "content": qa[1]}])
    return convs


# Stage 2's curriculum on the data world: two short drills, then the full mix of four question types. Each drill
# teaches one direction of the lookup alone, which the full mix learns late or not at all:
# - colour/shape questions ("What shape is at the top left?"): find the cell the question names, read its content;
# - position questions ("Where is the red star?" → "The red star is at the top left."): find the thing by its
#   content, say its cell. Drilled after the first, with the full mix only afterwards.
# The drills ask in both languages: an English-only position drill teaches English cell names only, and position
# questions ended at 59.7% after the full mix; with both languages (and loop.batches mixing question types) 93.0%
# (README 问题 7, item 13: stage 2 from stage 1's checkpoint, seed 1337). The position drill is 30% of the steps: with
# the repainted pictures below in the mix, a 25% drill (500 of 2000 steps) ended at 69% and the full mix never
# lifted it (72.0%), a 30% one ended at 87% and reached 96.5% (README 问题 8).
CURRICULUM = ((("color", "shape"), 0.2), (("position",), 0.3))   # (question types, share of the stage's steps)


def sft_phases(scenes, rng: random.Random, layout: str = "question-first", drills=CURRICULUM, describe_p: float = 0.15,
               painted=(), offworld=()) -> list:
    """Stage 2 on the data world as [(conversations, share of the stage's steps)]: each drill (one question of
    each of its types per picture, random language), then the full mix for the rest of the steps. drills=() is
    no curriculum. In every phase a picture also gets "describe this picture" with probability `describe_p`:
    stage 1 taught descriptions, and phases without them unlearn it (README 两阶段对比). Conversations are
    (scene index, messages). `painted` = [(feature index, repainted scene)] adds one shape question per
    repainted picture to each phase that asks shape questions; `offworld` (feature indices of pictures from
    outside the world) adds one "I don't know" question per picture to the full mix."""
    def phase(types, per_image):
        out = []
        for i, s in enumerate(scenes):
            out += [(i, c) for c in qa_examples(s, rng, layout, per_image=per_image, describe_p=0.0, types=types)]
            if rng.random() < describe_p:
                out += [(i, c) for c in qa_examples(s, rng, layout, per_image=1, describe_p=1.0, types=())]
        return out + (painted_shape_questions(painted, rng, layout) if "shape" in types else [])
    full = ("color", "shape", "count", "position")
    return [(phase(types, len(types)), share) for types, share in drills] + \
           [(phase(full, 3) + offworld_questions(offworld, rng, layout), 1.0 - sum(share for _, share in drills))]


# Off-world paints: shape apart from colour. The world's training pictures never show a red star, so whatever reads
# the image tokens can learn "red, so not a star" as well as the shape itself; on a held-out combination that
# shortcut answers wrong (trained without the pictures below, the model called all 60 orange squares of the held-out
# combinations circles and 38 of 39 red stars diamonds). So some training pictures are
# drawn again with things in paints the world does not have (≥ 80 RGB units from every world colour and from the
# background, so never close to a held-out combination), and each is asked the shape of a repainted thing: colour
# then says nothing about shape. README 问题 8 measures it.
PAINT_SHARE = 0.5    # share of the training pictures drawn again with off-world paints (stage 2's shape questions)


def offworld_color(rng: random.Random, min_dist: float = 80.0) -> Color:
    """A paint far from every world colour and from the grey background. It has no name: it is never asked about."""
    taken = [c.rgb for c in COLORS] + [BACKGROUND]
    while True:
        rgb = tuple(rng.randrange(256) for _ in range(3))
        if min(math.dist(rgb, t) for t in taken) >= min_dist:
            return Color("", "", rgb)


def painted_scenes(scenes, share: float = PAINT_SHARE, seed: int = 0, paint=offworld_color) -> list:
    """Copies of the first `share` of the scenes with at least one thing (each other thing with probability 1/2)
    in a colour drawn by `paint(rng)` (default: an off-world paint); size, shape and place are kept."""
    rng = random.Random(seed + 8)
    out = []
    for things in scenes[:round(share * len(scenes))]:
        keep = rng.randrange(len(things))
        out.append([replace(t, color=paint(rng)) if i == keep or rng.random() < 0.5 else t
                    for i, t in enumerate(things)])
    return out


def painted_shape_questions(painted, rng: random.Random, layout: str = "question-first") -> list:
    """One shape question per repainted picture, about a repainted thing: [(feature index, messages)] for
    `painted` = [(feature index, scene)]."""
    convs = []
    for i, things in painted:
        target = rng.choice([t for t in things if not t.color.en])
        q, a = question("shape", things, rng, rng.choice(["zh", "en"]), target)
        convs.append((i, [{"role": "user", "content": user_turn(q, layout)}, {"role": "assistant", "content": a}]))
    return convs


# Pictures from outside the world. A real photo is none of the world's 3×3 scenes, yet a model that has only ever
# seen scenes describes one anyway, inventing shapes and places. So stage 2 also shows pictures drawn outside the
# world's grammar (a colour field, blobs and strokes of any size anywhere, grain) and answers every question
# about them with step 4's "I don't know": the model learns when its world ends. README 真实照片.
OFFWORLD_TRAIN = 1000   # such pictures in stage 2's full mix, one question each (recipe.offworld)


def offworld_picture(n: int, size: int = IMAGE_SIZE) -> Image.Image:
    """Picture number `n` from outside the world (the same n draws the same picture): a two-colour gradient,
    3–12 ellipses and strokes off the grid, then grain. Training uses n ≥ 0, evaluation n < 0."""
    rng = random.Random(f"offworld:{n}")
    big = size * SUPERSAMPLE
    a, b = [tuple(rng.randrange(256) for _ in range(3)) for _ in range(2)]
    ramp = np.linspace(0, 1, big)[:, None, None] * np.ones((1, big, 1))       # (H, W, 1), top to bottom
    img = Image.fromarray((np.array(a) * (1 - ramp) + np.array(b) * ramp).astype(np.uint8))
    img = img.rotate(rng.uniform(0, 360), fillcolor=a)
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(3, 12)):
        fill = tuple(rng.randrange(256) for _ in range(3))
        x, y = rng.uniform(-0.2, 1.0) * big, rng.uniform(-0.2, 1.0) * big
        w, h = rng.uniform(0.05, 0.7) * big, rng.uniform(0.05, 0.7) * big
        if rng.random() < 0.6:
            draw.ellipse([x, y, x + w, y + h], fill=fill)
        else:
            draw.line([(x, y), (x + rng.choice([-w, w]), y + rng.choice([-h, h]))], fill=fill,
                      width=rng.randint(2, big // 8))
    grain = np.random.default_rng(abs(n)).normal(0, rng.uniform(2, 30), (big, big, 3))
    img = Image.fromarray(np.clip(np.asarray(img, dtype=float) + grain, 0, 255).astype(np.uint8))
    return img.resize((size, size), Image.LANCZOS)


def offworld_items(indices, rng: random.Random) -> list:
    """One question per off-world picture, of any type, in a random language, answered "I don't know" /
    "我不知道" ({"image", "type", "lang", "question", "answer"}, as eval_items) for the pictures' feature
    `indices`. The questions are the world's own (about a random scene): only the picture says it cannot know."""
    from step4_sft.data import IDK
    items = []
    for i in indices:
        lang, scene, q = rng.choice(["zh", "en"]), random_scene(rng), None
        while q is None:  # a position question has no single answer when the scene has two things alike
            qtype = rng.choice(QUESTION_TYPES)
            q = question(qtype, scene, rng, lang)
        items.append({"image": i, "type": qtype, "lang": lang, "question": q[0], "answer": IDK[lang]})
    return items


def offworld_questions(indices, rng: random.Random, layout: str = "question-first") -> list:
    """offworld_items as training conversations: [(feature index, messages)]."""
    return [(it["image"], [{"role": "user", "content": user_turn(it["question"], layout)},
                           {"role": "assistant", "content": it["answer"]}]) for it in offworld_items(indices, rng)]


def cell_labels(scenes) -> torch.Tensor:
    """(N, 9, 3) per scene and grid cell (row-major): colour, shape, size class ids, 1-based; 0 = empty cell."""
    lab = torch.zeros(len(scenes), 9, 3, dtype=torch.long)
    for i, s in enumerate(scenes):
        for t in s:
            lab[i, t.row * 3 + t.col] = torch.tensor([COLORS.index(t.color) + 1, SHAPES.index(t.shape) + 1,
                                                      SIZES.index(t.size) + 1])
    return lab


# ----------------------------------------------------------------------------------------------------
# The world's splits


@dataclass
class WorldSplits:
    train: list                    # scenes (lists of Thing) for training: no held-out combination in them
    test: list                     # held-out images: never in training, same combinations as training
    combo: list                    # held-out combinations: each has ≥1 thing of a combination never trained on
    info: dict = field(default_factory=dict)
    val: list = field(default_factory=list)  # unseen pictures for choosing the best checkpoint (never the test ones)


def world_splits(n_train: int = 8000, n_test: int = 400, n_combo: int = 300, seed: int = 1337,
                 n_val: int = 0) -> WorldSplits:
    """Seeded splits. Test scenes are drawn first and their exact scenes are barred from training; validation
    scenes are drawn last (so they change no other split) and are neither trained on nor tested."""
    rng = random.Random(seed + 6)
    test, seen = [], set()
    while len(test) < n_test:
        s = random_scene(rng, allowed=allowed_in_training)
        if scene_key(s) not in seen:
            seen.add(scene_key(s))
            test.append(s)
    combo = []
    while len(combo) < n_combo:
        s = random_scene(rng)
        if any(not allowed_in_training(t.color, t.shape) for t in s) and scene_key(s) not in seen:
            seen.add(scene_key(s))
            combo.append(s)
    train = []
    while len(train) < n_train:
        s = random_scene(rng, allowed=allowed_in_training)
        if scene_key(s) not in seen:  # exact held-out pictures never appear in training
            train.append(s)
    seen |= {scene_key(s) for s in train}
    val = []
    while len(val) < n_val:
        s = random_scene(rng, allowed=allowed_in_training)
        if scene_key(s) not in seen:
            seen.add(scene_key(s))
            val.append(s)
    return WorldSplits(train, test, combo, {"n_train": n_train, "n_test": n_test, "n_combo": n_combo, "seed": seed,
                                            "n_val": n_val}, val)


def eval_items(scenes, seed: int, combo: bool = False) -> list:
    """Single-turn evaluation questions: per image one of each type (random language). For held-out
    combinations the color/shape/position questions ask about the never-trained thing itself."""
    rng = random.Random(seed + 99)
    items = []
    for i, s in enumerate(scenes):
        lang = rng.choice(["zh", "en"])
        novel = [t for t in s if not allowed_in_training(t.color, t.shape)]
        for qt in ("color", "shape", "count", "position", "describe"):
            target = None
            if combo and qt in ("color", "shape", "position"):
                cands = [t for t in novel if qt != "position" or t in unique_things(s)]
                if not cands:
                    continue
                target = rng.choice(cands)
            qa = question(qt, s, rng, lang, target)
            if qa:
                items.append({"image": i, "type": qt, "lang": lang, "question": qa[0], "answer": qa[1]})
    return items


# ----------------------------------------------------------------------------------------------------
# Real images: load any file safely, and the loaders for real data sets

MIN_SIDE, MAX_PIXELS = 8, 64_000_000


def load_image(path) -> Image.Image:
    """Open an image file as RGB, or raise a CourseError with one sentence saying what is wrong.
    Greyscale, palette, RGBA (laid on white), CMYK and 16-bit images are converted; tiny, huge, empty
    and unreadable files are refused."""
    path = Path(path)
    if not path.is_file():
        raise CourseError(f"image {path} does not exist")
    return decode_image(path, f"image {path}")


def decode_image(source, name: str = "the image") -> Image.Image:
    """A path or binary file object (an upload, a data URL's bytes) → RGB image, with load_image's checks;
    `name` says which image in the error sentence."""
    if (source.stat().st_size if isinstance(source, Path) else len(source.getbuffer())) == 0:
        raise CourseError(f"{name} is an empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(source)
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise CourseError(f"{name} is too large ({w}×{h} pixels); shrink it below {MAX_PIXELS:,} pixels")
            im.load()
    except CourseError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise CourseError(f"{name} is too large to open safely; shrink it first") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise CourseError(f"{name} cannot be read as an image (corrupt or unsupported format: {e})") from None
    if min(w, h) < MIN_SIDE:
        raise CourseError(f"{name} is too small ({w}×{h} pixels); it must be at least {MIN_SIDE}×{MIN_SIDE}")
    return to_rgb(im)


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode → 8-bit RGB. Transparent pixels become white (what a viewer shows), 16-bit values
    are scaled to 8 bits instead of being clipped (PIL's plain convert would turn them white)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode != "I" or a.max() > 255 else 255.0
        im = Image.fromarray(np.clip(a / top * 255.0, 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        a = (a - a.min()) / max(a.max() - a.min(), 1e-12)
        im = Image.fromarray((a * 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    return im.convert("RGB")  # L, CMYK, YCbCr, RGB...


def file_key(path) -> str:
    """Content hash of an image file: the feature cache's key for real images."""
    return "file:" + hashlib.sha1(Path(path).read_bytes()).hexdigest()


def _conv_from_llava(conversations) -> list:
    roles = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
    msgs = []
    for turn in conversations:
        who = turn.get("from", turn.get("role"))
        if who not in roles:
            raise CourseError(f"unknown speaker {who!r} in a LLaVA conversation (expected human/gpt)")
        msgs.append({"role": roles[who], "content": turn.get("value", turn.get("content", ""))})
    return msgs


def load_llava_json(path, image_root=None) -> list:
    """LLaVA-style `[{"image": "x.jpg", "conversations": [{"from": "human", "value": "<image>\\n…"}, …]}]`
    → [{"image": Path, "messages": [...]}]. Image paths are relative to `image_root` (default: the JSON's folder)."""
    path = Path(path)
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CourseError(f"{path} is not a readable JSON file ({e})") from None
    if isinstance(rows, dict):
        rows = [rows]
    root = Path(image_root) if image_root else path.parent
    out = []
    for r in rows:
        if "image" not in r or "conversations" not in r:
            raise CourseError(f"{path}: every entry needs 'image' and 'conversations' (LLaVA format)")
        out.append({"image": root / r["image"], "messages": _conv_from_llava(r["conversations"])})
    return out


def load_caption_folder(folder, lang: str = "zh") -> list:
    """A folder of images with `captions.json` (`{"cat.jpg": "一只橙色的猫…"}`, one common format) → the
    stage-1 caption conversation for each image."""
    folder = Path(folder)
    cap = folder / "captions.json"
    if not cap.is_file():
        raise CourseError(f"{folder} has no captions.json (expected {{\"image.jpg\": \"caption\", ...}})")
    try:
        caps = json.loads(cap.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CourseError(f"{cap} is not valid JSON ({e})") from None
    img_dir = folder / "images" if (folder / "images").is_dir() else folder
    return [{"image": img_dir / name, "messages": [{"role": "user", "content": CAPTION_PROMPTS[lang]},
                                                   {"role": "assistant", "content": text}]}
            for name, text in caps.items()]


IMAGE_COLUMNS, CAPTION_COLUMNS = ("image", "img", "jpg"), ("caption", "captions", "text", "sentences", "sentence")


def load_hf_captions(source: str, split: str | None = None, limit: int | None = None, image_column: str | None = None,
                     caption_column: str | None = None, lang: str = "en") -> list:
    """A Hugging Face image–caption dataset (common.datasources.hf_rows: the hub with network, or a folder saved
    with `save_to_disk`) → stage-1 conversations. A caption column may hold one string or a list of them (COCO,
    flickr30k: the first is used). Without --split: "train", or the only split a saved dataset has (hf_rows)."""
    from common.datasources import hf_rows
    name = source[3:] if source.startswith("hf:") else source
    rows = hf_rows(source, split, limit)
    first = next(rows, None)
    if first is None:
        raise CourseError(f"--data hf:{name} has no rows")
    img_col = image_column or next((c for c in IMAGE_COLUMNS if c in first), None)
    cap_col = caption_column or next((c for c in CAPTION_COLUMNS if c in first), None)
    for col, what, flag in ((img_col, "image", "--image-column"), (cap_col, "caption", "--caption-column")):
        if col is None or col not in first:
            raise CourseError(f"--data hf:{name} has no {what} column{f' {col!r}' if col else ''} (its columns: {sorted(first)}); "
                              f"name it with {flag}")
    out = []
    for i, row in enumerate([first, *rows]):
        cap = row[cap_col][0] if isinstance(row[cap_col], (list, tuple)) and row[cap_col] else row[cap_col]
        if not isinstance(cap, str) or not cap.strip():
            raise CourseError(f"--data hf:{name}: row {i} has an empty caption in column {cap_col!r}")
        im = row[img_col]
        if not isinstance(im, Image.Image):
            raise CourseError(f"--data hf:{name}: row {i}'s {img_col!r} is not an image ({type(im).__name__})")
        out.append({"image": to_rgb(im), "messages": [{"role": "user", "content": CAPTION_PROMPTS[lang]},
                                                      {"role": "assistant", "content": cap.strip()}]})
    return out


def image_key(image) -> str:
    """Feature-cache key of a real image: its file's bytes, or an in-memory picture's pixels."""
    if isinstance(image, Image.Image):
        return "pil:" + hashlib.sha1(image.tobytes() + repr((image.size, image.mode)).encode()).hexdigest()
    return file_key(image)


def one_image_placeholder(messages, where: str, layout: str = "question-first") -> list:
    """Exactly one <image> per sample (one image each): put it into the first user turn, where `layout` says,
    when it is missing (a captions folder has none); more than one is refused: one image cannot fill them."""
    n = sum(m["content"].count("<image>") for m in messages)
    if n > 1:
        raise CourseError(f"{where}: the conversation has {n} <image> placeholders but one image; use exactly one")
    if n == 0:
        k = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
        if k is None:
            raise CourseError(f"{where}: the conversation has no user turn to put the image in")
        messages = [dict(m, content=user_turn(m["content"], layout)) if i == k else m for i, m in enumerate(messages)]
    return messages


def load_real_data(sources, layout: str = "question-first", **hf) -> list:
    """`--data` entries: a LLaVA JSON file, a captions folder, or `hf:NAME` for a Hugging Face dataset (`hf`:
    load_hf_captions' split, limit and column names). A sample that places its own <image> keeps that place;
    the others get it where `layout` says."""
    out = []
    for src in sources:
        if str(src).startswith("hf:"):
            out += load_hf_captions(str(src), **hf)
        elif Path(src).is_dir():
            out += load_caption_folder(src)
        elif Path(src).is_file():
            out += load_llava_json(src)
        else:
            raise CourseError(f"--data {src}: no such file or folder (give a LLaVA .json, a folder with "
                              f"captions.json, or hf:NAME)")
    if not out:
        raise CourseError(f"--data {' '.join(map(str, sources))} holds no samples")
    return [dict(s, messages=one_image_placeholder(s["messages"], f"sample {i}", layout)) for i, s in enumerate(out)]


__all__ = ["IMAGE_SIZE", "CELL", "GRID", "HELDOUT_COMBOS", "CAPTION_PROMPTS", "DESCRIBE_PROMPTS", "QUESTION_TYPES",
           "LAYOUTS", "user_turn", "render_scene", "caption_messages", "caption_conversations", "question", "qa_examples", "CURRICULUM", "sft_phases", "PAINT_SHARE", "offworld_color", "painted_scenes", "painted_shape_questions", "OFFWORLD_TRAIN", "offworld_picture", "offworld_items", "offworld_questions", "world_splits", "eval_items",
           "load_image", "to_rgb", "load_llava_json", "load_caption_folder", "load_hf_captions", "load_real_data",
           "scene_key", "file_key", "allowed_in_training", "COLORS", "SHAPES", "SIZES", "POSITIONS"]


# ----------------------------------------------------------------------------------------------------
# python data.py --preview grid.png | --test-jpg test.jpg

TEST_SCENE = [Thing(COLORS[0], SHAPES[0], SIZES[0], 0, 0), Thing(COLORS[2], SHAPES[1], SIZES[1], 1, 1),
              Thing(COLORS[3], SHAPES[3], SIZES[0], 2, 2)]   # big red circle, small blue square, big yellow star


def main():
    p = argparse.ArgumentParser(description="Draw data-world pictures (画出玩具世界的图片)")
    p.add_argument("--preview", default=None, help="write a grid of 32 training pictures to this PNG")
    p.add_argument("--test-jpg", default=None, help="write the lesson's test.jpg (3 shapes, 252×252) to this path")
    args = p.parse_args()
    if args.test_jpg:
        render_scene(TEST_SCENE, 4 * IMAGE_SIZE).save(args.test_jpg, quality=95)
        print(f"wrote {args.test_jpg}: {describe_scene(TEST_SCENE, 'zh')}")
    if args.preview:
        sp = world_splits(32, 1, 1)
        grid = Image.new("RGB", (8 * IMAGE_SIZE, 4 * IMAGE_SIZE))
        for i, s in enumerate(sp.train):
            grid.paste(render_scene(s), ((i % 8) * IMAGE_SIZE, (i // 8) * IMAGE_SIZE))
        grid.save(args.preview)
        print(f"wrote {args.preview}")


if __name__ == "__main__":
    main()
