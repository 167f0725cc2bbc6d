"""The data world (玩具世界): a seeded, bilingual little world and the text corpus about it.

Every step draws on the same world, so the words a model learns in step 3 are the words its VLM uses in
step 6: the COLORS, SHAPES, SIZES and grid POSITIONS below are both written about here and drawn as
pictures later. A `Scene` is a few shapes on a 3×3 grid; `describe_scene` is its caption.

    python -m common.world --preview            # samples and statistics
    python -m common.world --size-mb 4 --seed 1337 --out runs/world/text   # write train.txt / val.txt

One document is one line. The split is made by a stable hash of the document, so a document can never be
in both train and val, and the split does not depend on the generation order.
"""
import argparse
import hashlib
import random
import re
from dataclasses import dataclass
from pathlib import Path

from common import RUNS_DIR
from common.errors import CourseError
from common.files import atomic_write_text

# ----------------------------------------------------------------------------------------------------
# The things in the world: (中文, English, ...). RGB values are what step 6 paints with.


@dataclass(frozen=True)
class Color:
    zh: str
    en: str
    rgb: tuple


COLORS = [Color("红色", "red", (220, 30, 30)), Color("绿色", "green", (30, 170, 50)),
          Color("蓝色", "blue", (30, 70, 220)), Color("黄色", "yellow", (240, 210, 20)),
          Color("紫色", "purple", (140, 40, 180)), Color("橙色", "orange", (250, 130, 0)),
          Color("黑色", "black", (20, 20, 20)), Color("白色", "white", (250, 250, 250))]
SHAPES = [("圆形", "circle"), ("正方形", "square"), ("三角形", "triangle"), ("星形", "star"),
          ("菱形", "diamond"), ("六边形", "hexagon")]
SIDES = {"circle": 0, "square": 4, "triangle": 3, "star": 10, "diamond": 4, "hexagon": 6}
SIZES = [("大", "big"), ("小", "small")]
# POSITIONS[row][col]: the 3×3 grid, read like a page.
POSITIONS = [[("左上", "top left"), ("上方", "top"), ("右上", "top right")],
             [("左边", "left"), ("中间", "center"), ("右边", "right")],
             [("左下", "bottom left"), ("下方", "bottom"), ("右下", "bottom right")]]
MIXES = [("红色", "黄色", "橙色", "red", "yellow", "orange"), ("蓝色", "黄色", "绿色", "blue", "yellow", "green"),
         ("红色", "蓝色", "紫色", "red", "blue", "purple"), ("黑色", "白色", "灰色", "black", "white", "gray"),
         ("红色", "白色", "粉色", "red", "white", "pink")]

PEOPLE_ZH = ["小明", "小红", "小华", "小刚", "小丽", "小军", "小芳", "小强"]
PEOPLE_EN = [("Tom", "he"), ("Amy", "she"), ("Lily", "she"), ("Jack", "he"), ("Sam", "he"), ("Lucy", "she"),
             ("Ben", "he"), ("Emma", "she")]
# (中文, 量词, English singular, plural): the measure word must agree with the noun, the plural with the count.
THINGS = [("苹果", "个", "apple", "apples"), ("香蕉", "根", "banana", "bananas"), ("梨", "个", "pear", "pears"),
          ("桃子", "个", "peach", "peaches"), ("糖", "颗", "candy", "candies"), ("书", "本", "book", "books"),
          ("铅笔", "支", "pencil", "pencils"), ("球", "个", "ball", "balls"), ("花", "朵", "flower", "flowers"),
          ("杯子", "个", "cup", "cups")]
ANIMALS = [("猫", "只", "cat", "cats"), ("狗", "条", "dog", "dogs"), ("兔子", "只", "rabbit", "rabbits"),
           ("鸭子", "只", "duck", "ducks"), ("鸟", "只", "bird", "birds"), ("鱼", "条", "fish", "fish"),
           ("熊猫", "只", "panda", "pandas"), ("羊", "只", "sheep", "sheep")]
# Ordered small → large, for comparison facts.
BY_SIZE = [("蚂蚁", "ant"), ("老鼠", "mouse"), ("兔子", "rabbit"), ("猫", "cat"), ("狗", "dog"), ("羊", "sheep"),
           ("熊猫", "panda"), ("老虎", "tiger"), ("马", "horse"), ("大象", "elephant")]
PLACES = [("草地上", "on the grass"), ("桌子上", "on the table"), ("篮子里", "in the basket"),
          ("花园里", "in the garden"), ("盒子里", "in the box"), ("河边", "by the river")]


# ----------------------------------------------------------------------------------------------------
# Scenes: what step 6 draws, and the captions this corpus shares with it.


@dataclass(frozen=True)
class Thing:
    color: Color
    shape: tuple   # (zh, en)
    size: tuple    # (zh, en)
    row: int
    col: int

    @property
    def position(self) -> tuple:
        return POSITIONS[self.row][self.col]


def random_scene(rng: random.Random, min_things: int = 1, max_things: int = 4, allowed=None) -> list:
    """1–4 things in distinct grid cells, in reading order. `allowed(color, shape)` can veto combinations
    (step 6 holds some out)."""
    n = rng.randint(min_things, max_things)
    cells = sorted(rng.sample(range(9), n))
    things = []
    for cell in cells:
        while True:
            color, shape = rng.choice(COLORS), rng.choice(SHAPES)
            if allowed is None or allowed(color, shape):
                break
        things.append(Thing(color, shape, rng.choice(SIZES), cell // 3, cell % 3))
    return things


def describe_thing(t: Thing, lang: str) -> str:
    if lang == "zh":
        return f"{t.position[0]}是一个{t.size[0]}的{t.color.zh}{t.shape[0]}"
    return f"a {t.size[1]} {t.color.en} {t.shape[1]} at the {t.position[1]}"


def describe_scene(things: list, lang: str) -> str:
    """The canonical caption of a scene: count first, then each thing in reading order."""
    n = len(things)
    if lang == "zh":
        return f"图中有{n}个图形：" + "，".join(describe_thing(t, "zh") for t in things) + "。"
    parts = [describe_thing(t, "en") for t in things]
    listed = parts[0] if n == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"There {'is 1 shape' if n == 1 else f'are {n} shapes'}: {listed}."


def _alt(words) -> str:
    return "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))  # longest first: 右上 before 上


_CELLS = [p for row in POSITIONS for p in row]
_ZH_THING = re.compile(f"^({_alt(p[0] for p in _CELLS)})是一个({_alt(s[0] for s in SIZES)})的"
                       f"({_alt(c.zh for c in COLORS)})({_alt(s[0] for s in SHAPES)})$")
_EN_THING = re.compile(f"^an? ({_alt(s[1] for s in SIZES)}) ({_alt(c.en for c in COLORS)}) "
                       f"({_alt(s[1] for s in SHAPES)}) at the ({_alt(p[1] for p in _CELLS)})$")


def parse_description(text: str) -> tuple:
    """describe_scene read backwards, with the world's own grammar: text → (count said or None, things said).
    Each thing said is (colour, shape, size, position) in English words, or None for a piece that does not
    parse (it still counts as something said, so a garbled description cannot score by saying little)."""
    text = text.strip()
    zh = re.match(r"^图中有(\d+)个图形：(.*?)。?$", text, re.S)
    en = None if zh else re.match(r"^There (?:is|are) (\d+) shapes?: (.*?)\.?$", text, re.S)
    if not (zh or en):
        return None, ([None] if text else [])
    count, body = int((zh or en).group(1)), (zh or en).group(2)
    pieces = body.split("，") if zh else re.split(r", and |, | and ", body)
    said = []
    for piece in (p.strip() for p in pieces if p.strip()):
        m = (_ZH_THING if zh else _EN_THING).match(piece)
        if m is None:
            said.append(None)
        elif zh:
            pos, size, color, shape = m.groups()
            said.append((next(c.en for c in COLORS if c.zh == color), next(s[1] for s in SHAPES if s[0] == shape),
                         next(s[1] for s in SIZES if s[0] == size), next(p[1] for p in _CELLS if p[0] == pos)))
        else:
            said.append(m.groups()[1:3] + m.groups()[:1] + m.groups()[3:])  # (colour, shape, size, position)
    return count, said


def scene_facts(things) -> list:
    """The (colour, shape, size, position) of each thing, in English words: what parse_description returns."""
    return [(t.color.en, t.shape[1], t.size[1], t.position[1]) for t in things]


# Questions about a scene, each with exactly one right answer (step 4 asks them about a description, step 6 about
# the picture itself).

DESCRIBE_PROMPTS = {"zh": "描述这张图片", "en": "Describe this image."}
QUESTION_TYPES = ("color", "shape", "count", "position", "describe")


def unique_things(things):
    """Things whose color+shape pair occurs once in the scene: "where is the red star" has one answer."""
    return [t for t in things if sum((o.color, o.shape) == (t.color, t.shape) for o in things) == 1]


def question(qtype: str, things, rng: random.Random, lang: str, target: Thing | None = None) -> tuple:
    """(question, answer) of one type, or None when it has no single answer. Colour/shape questions point at a
    cell that holds a thing, position questions name a thing that is unique in the scene, so every question has
    exactly one right answer. Step 6 asks them about a picture, step 4 about the scene's description."""
    zh = lang == "zh"
    if qtype in ("color", "shape"):
        t = target or rng.choice(things)
        pos = t.position[0] if zh else t.position[1]
        if qtype == "color":
            q = f"{pos}的图形是什么颜色？" if zh else f"What color is the shape at the {pos}?"
            return q, t.color.zh if zh else t.color.en
        q = f"{pos}的图形是什么形状？" if zh else f"What shape is at the {pos}?"
        return q, t.shape[0] if zh else t.shape[1]
    if qtype == "count":
        return ("图中有几个图形？", f"{len(things)}个") if zh else ("How many shapes are there?", str(len(things)))
    if qtype == "position":
        if target is None and not unique_things(things):
            return None  # e.g. two red stars: "where is the red star" has no single answer, so it is not asked
        t = target or rng.choice(unique_things(things))
        # The answer restates the thing ("The red star is at the top left."), so the cell word is predicted right
        # after the words that name what to look for: a one-hop lookup instead of a two-hop one.
        if zh:
            return f"{t.color.zh}的{t.shape[0]}在哪里？", f"{t.color.zh}的{t.shape[0]}在{t.position[0]}。"
        return f"Where is the {t.color.en} {t.shape[1]}?", f"The {t.color.en} {t.shape[1]} is at the {t.position[1]}."
    if qtype == "describe":
        return DESCRIBE_PROMPTS[lang], describe_scene(things, lang)
    raise CourseError(f"unknown question type {qtype!r}; choose from {QUESTION_TYPES}")


# ----------------------------------------------------------------------------------------------------
# Text documents. Each generator returns one document (one line) in one language.


def _count_zh(n: int, thing: tuple) -> str:
    return f"{n}{thing[1]}{thing[0]}"


def _count_en(n: int, thing: tuple) -> str:
    return f"{n} {thing[2] if n == 1 else thing[3]}"


def doc_scene(rng, lang):
    things = random_scene(rng)
    lead = rng.choice(["", "这是一幅画。", "看这张图片。"] if lang == "zh" else ["", "This is a picture. ", "Look at the image. "])
    text = lead + describe_scene(things, lang)
    # A follow-up sentence only about a thing that the sentence names unambiguously (its color is unique).
    unique = [t for t in things if sum(o.color == t.color for o in things) == 1 and sum(o.shape == t.shape for o in things) == 1]
    if not unique:
        return text
    t = rng.choice(unique)
    if lang == "zh":
        text += rng.choice([f"{t.color.zh}的图形是{t.shape[0]}。", f"{t.shape[0]}在{t.position[0]}。",
                            f"{t.position[0]}的图形是{t.color.zh}的。", ""])
    else:
        text += rng.choice([f" The {t.color.en} shape is a {t.shape[1]}.", f" The {t.shape[1]} is at the {t.position[1]}.",
                            f" The shape at the {t.position[1]} is {t.color.en}.", ""])
    return text


# The words of a story in each language: the draws are the same, only the sentences differ.
EDIBLE = ("apple", "banana", "pear", "peach", "candy")
STORY_VERBS = {"zh": (["吃了", "送给朋友", "弄丢了"], ["送给朋友", "弄丢了"]),
               "en": (["eats", "gives away", "loses"], ["gives away", "loses"])}


def doc_story(rng, lang):
    """Counting and arithmetic stories whose numbers are always right."""
    thing = rng.choice(THINGS + ANIMALS)
    is_animal = thing in ANIMALS
    a = rng.randint(1, 9)
    kind = rng.choice(["take", "add", "two_step"])
    b = rng.randint(1, a) if kind == "take" else rng.randint(1, 9)
    zh = lang == "zh"
    n = (lambda k: _count_zh(k, thing)) if zh else (lambda k: _count_en(k, thing))
    people = PEOPLE_ZH if zh else [p for p, _ in PEOPLE_EN]
    who = rng.choice(PEOPLE_ZH) if zh else rng.choice(PEOPLE_EN)
    who, pron = (who, None) if zh else who
    if is_animal:
        place = rng.choice(PLACES)[0 if zh else 1]
        if kind == "take":
            if zh:
                return f"{place}有{n(a)}，走了{b}{thing[1]}，还剩{n(a - b)}。"
            return (f"There {'is' if a == 1 else 'are'} {n(a)} {place}. {b} {'goes' if b == 1 else 'go'} away. "
                    f"Now there {'is' if a - b == 1 else 'are'} {n(a - b)} left.")
        if zh:
            s = f"{place}有{n(a)}，又来了{b}{thing[1]}，现在一共有{n(a + b)}。"
            return s + (f"{who}数了数，一共是{a + b}{thing[1]}。" if kind == "two_step" else "")
        s = f"There {'is' if a == 1 else 'are'} {n(a)} {place}. {b} more {'comes' if b == 1 else 'come'}. Now there are {n(a + b)}."
        return s + (f" {who} counts them: {a + b}." if kind == "two_step" else "")
    if kind == "take":
        verb = rng.choice(STORY_VERBS[lang][0] if thing[2] in EDIBLE else STORY_VERBS[lang][1])
        if zh:
            return f"{who}有{n(a)}，{verb}{b}{thing[1]}，还剩{n(a - b)}。"
        return f"{who} has {n(a)}. {pron.capitalize()} {verb} {b}. Now {pron} has {n(a - b)}."
    other = rng.choice([p for p in people if p != who])
    s = (f"{who}有{n(a)}，{other}又给了{who}{b}{thing[1]}，现在{who}有{n(a + b)}。" if zh else
         f"{who} has {n(a)}. {other} gives {'him' if pron == 'he' else 'her'} {b} more. Now {who} has {n(a + b)}.")
    if kind == "two_step":
        c = rng.randint(1, a + b)
        s += (f"后来{who}送出{c}{thing[1]}，还剩{n(a + b - c)}。" if zh else
              f" Then {pron} gives away {c}, so {pron} has {n(a + b - c)}.")
    return s


def doc_fact(rng, lang):
    """True facts: color mixing, arithmetic, comparisons, shapes' sides, translations of world words."""
    kind = rng.choice(["mix", "math", "math", "compare", "size", "sides", "translate"])
    if kind == "mix":
        m = rng.choice(MIXES)
        return f"{m[0]}和{m[1]}混在一起是{m[2]}。" if lang == "zh" else f"{m[3].capitalize()} and {m[4]} make {m[5]}."
    if kind == "math":
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        if rng.random() < 0.5:
            return f"{a}加{b}等于{a + b}。" if lang == "zh" else f"{a} plus {b} is {a + b}."
        a, b = max(a, b), min(a, b)
        return f"{a}减{b}等于{a - b}。" if lang == "zh" else f"{a} minus {b} is {a - b}."
    if kind == "compare":
        a, b = rng.sample(range(0, 30), 2)
        if lang == "zh":
            return f"{a}比{b}{'大' if a > b else '小'}。"
        return f"{a} is {'greater' if a > b else 'less'} than {b}."
    if kind == "size":
        i, j = rng.sample(range(len(BY_SIZE)), 2)
        x, y = BY_SIZE[i], BY_SIZE[j]
        if lang == "zh":
            return f"{x[0]}比{y[0]}{'大' if i > j else '小'}。"
        return f"A {x[1]} is {'bigger' if i > j else 'smaller'} than a{'n' if y[1][0] in 'aeiou' else ''} {y[1]}."
    if kind == "sides":
        zh, en = rng.choice(SHAPES)
        n = SIDES[en]
        if lang == "zh":
            return f"{zh}没有角。" if n == 0 else f"{zh}有{n}条边。"
        return f"A {en} has no corners." if n == 0 else f"A {en} has {n} sides."
    zh, en = rng.choice([(c.zh, c.en) for c in COLORS] + SHAPES + [(t[0], t[2]) for t in THINGS + ANIMALS])
    return f"“{zh}”的英文是“{en}”。" if lang == "zh" else f'"{en}" in Chinese is "{zh}".'


def doc_dialogue(rng, lang):
    """Two people talk about something in the world; the answer always matches the question."""
    thing = rng.choice(THINGS)
    color = rng.choice(COLORS)
    n = rng.randint(1, 9)
    kind = rng.choice(["count", "color", "where"])
    zh = lang == "zh"
    a, b = rng.sample(PEOPLE_ZH, 2) if zh else [p for p, _ in rng.sample(PEOPLE_EN, 2)]
    place = rng.choice(PLACES)[0 if zh else 1] if kind == "where" else None
    said = {("zh", "count"): (f"你有几{thing[1]}{thing[0]}？", f"我有{_count_zh(n, thing)}。"),
            ("zh", "color"): (f"你的{thing[0]}是什么颜色的？", f"我的{thing[0]}是{color.zh}的。"),
            ("zh", "where"): (f"{thing[0]}在哪里？", f"{thing[0]}在{place}。"),
            ("en", "count"): (f"How many {thing[3]} do you have?", f"I have {_count_en(n, thing)}."),
            ("en", "color"): (f"What color is your {thing[2]}?", f"My {thing[2]} is {color.en}."),
            ("en", "where"): (f"Where is the {thing[2]}?", f"The {thing[2]} is {place}.")}[(lang, kind)]
    return f"{a}问：“{said[0]}”{b}说：“{said[1]}”" if zh else f'{a} asks, "{said[0]}" {b} says, "{said[1]}"'


DOC_KINDS = {"scene": (doc_scene, 3), "story": (doc_story, 4), "fact": (doc_fact, 3), "dialogue": (doc_dialogue, 2)}


def random_doc(rng: random.Random) -> str:
    """One document of a random kind (weighted) in a random language; sometimes 2–3 sentences joined."""
    kinds = list(DOC_KINDS)
    weights = [DOC_KINDS[k][1] for k in kinds]
    lang = rng.choice(["zh", "en"])
    parts = [DOC_KINDS[k][0](rng, lang) for k in rng.choices(kinds, weights, k=rng.choice([1, 1, 2, 3]))]
    return ("" if lang == "zh" else " ").join(parts)


def generate_docs(n_bytes: int, seed: int) -> list:
    """Documents until their UTF-8 size reaches n_bytes; the same seed always gives the same list."""
    rng = random.Random(seed)
    docs, total = [], 0
    while total < n_bytes:
        d = random_doc(rng)
        docs.append(d)
        total += len(d.encode("utf-8")) + 1
    return docs


def is_val(doc: str, val_percent: int = 2) -> bool:
    """Stable hash split: the same text is always on the same side, whatever the seed or order."""
    return int.from_bytes(hashlib.blake2b(doc.encode("utf-8"), digest_size=8).digest(), "little") % 100 < val_percent


def build_corpus(size_mb: float = 4.0, seed: int = 1337, val_percent: int = 2) -> tuple:
    """(train_docs, val_docs) of the text world, about size_mb megabytes in all."""
    docs = generate_docs(int(size_mb * 1e6), seed)
    train = [d for d in docs if not is_val(d, val_percent)]
    val = [d for d in docs if is_val(d, val_percent)]
    return train, val


def corpus_files(size_mb: float = 4.0, seed: int = 1337, out_dir=None) -> tuple:
    """Paths of train.txt and val.txt for this size and seed, written once and reused by later runs."""
    out = Path(out_dir) if out_dir else RUNS_DIR / "world" / f"text-{size_mb:g}mb-seed{seed}"
    train_path, val_path = out / "train.txt", out / "val.txt"
    if not (train_path.is_file() and val_path.is_file()):
        train, val = build_corpus(size_mb, seed)
        for path, docs in ((train_path, train), (val_path, val)):
            atomic_write_text(path, "\n".join(docs) + "\n")
    return train_path, val_path


# ----------------------------------------------------------------------------------------------------


_HAN = re.compile(r"[\u4e00-\u9fff]")


def corpus_stats(docs: list) -> dict:
    text = "\n".join(docs)
    zh_docs = sum(1 for d in docs if _HAN.search(d))
    return {"documents": len(docs), "characters": len(text), "bytes": len(text.encode("utf-8")),
            "distinct_english_words": len(set(re.findall(r"[A-Za-z]+", text.lower()))),
            "distinct_chinese_characters": len(set(_HAN.findall(text))),
            "zh_share_of_documents": round(zh_docs / max(1, len(docs)), 3)}


def main():
    p = argparse.ArgumentParser(description="The course's data world: preview it or write its text corpus.")
    p.add_argument("--preview", action="store_true", help="print sample documents and statistics")
    p.add_argument("--size-mb", type=float, default=4.0, help="corpus size in megabytes")
    p.add_argument("--seed", type=int, default=1337, help="seed: the same seed gives the same corpus")
    p.add_argument("--out", default=None, help="folder for train.txt/val.txt (default runs/world/...)")
    args = p.parse_args()
    if args.preview:
        rng = random.Random(args.seed)
        for kind, (make, _) in DOC_KINDS.items():
            for lang in ("zh", "en"):
                print(f"[{kind}/{lang}] {make(rng, lang)}")
        train, val = build_corpus(args.size_mb, args.seed)
        print(f"\ntrain: {corpus_stats(train)}\nval:   {corpus_stats(val)}")
        return
    train_path, val_path = corpus_files(args.size_mb, args.seed, args.out)
    print(f"wrote {train_path} and {val_path}")


if __name__ == "__main__":
    main()
