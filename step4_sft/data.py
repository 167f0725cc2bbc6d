"""Instruction data for SFT: bilingual conversations generated from the data world, each task with a held-out
split, and real conversations (`--data`) through the course's one reader.

    python data.py          # one sample conversation per task and language, and the split sizes

Tasks: story QA (arithmetic stories), scene QA from a text description (the text twin of step 6's questions),
facts and translation, multi-turn follow-ups, and "我不知道 / I don't know" for what the prompt does not contain.
The split is by a stable hash of the user turns, so a question (template + entities + numbers) never lands in
both train and held-out.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import hashlib
import random

from common.datasources import conversation, expand_paths, records
from common.device import named_rng
from common.errors import CourseError
from common.world import (COLORS, MIXES, PEOPLE_EN, PEOPLE_ZH, SHAPES, THINGS, describe_scene, question,
                          random_scene)

TASKS = ("story", "scene", "fact", "multiturn", "idk")
LANGS = ("zh", "en")
IDK = {"zh": "我不知道。", "en": "I don't know."}
SYSTEM = {"zh": "你是一个乐于助人的助手。", "en": "You are a helpful assistant."}


def story_qa(rng, lang):
    who = rng.choice(PEOPLE_ZH) if lang == "zh" else rng.choice(PEOPLE_EN)
    thing = rng.choice(THINGS)
    a, b = rng.randint(2, 9), 0
    if rng.random() < 0.5:
        b = rng.randint(1, a)
        if lang == "zh":
            return f"{who}有{a}{thing[1]}{thing[0]}，送出{b}{thing[1]}。{who}还剩几{thing[1]}{thing[0]}？", f"{a - b}{thing[1]}。"
        name, _ = who
        return f"{name} has {a} {thing[3]}. {name} gives away {b}. How many {thing[3]} does {name} have now?", f"{a - b}."
    b = rng.randint(1, 9)
    if lang == "zh":
        return f"{who}有{a}{thing[1]}{thing[0]}，又得到{b}{thing[1]}。{who}现在有几{thing[1]}{thing[0]}？", f"{a + b}{thing[1]}。"
    name, _ = who
    return f"{name} has {a} {thing[3]}. {name} gets {b} more. How many {thing[3]} does {name} have now?", f"{a + b}."


def scene_qa(rng, lang):
    things = random_scene(rng)
    while True:
        qa = question(rng.choice(("color", "shape", "count", "position")), things, rng, lang)
        if qa:
            return describe_scene(things, lang) + ("\n" if lang == "en" else "") + qa[0], qa[1]


def fact_qa(rng, lang):
    kind = rng.choice(("mix", "translate", "math"))
    if kind == "mix":
        m = rng.choice(MIXES)
        return (f"{m[0]}和{m[1]}混在一起是什么颜色？", f"{m[2]}。") if lang == "zh" else \
            (f"What color do {m[3]} and {m[4]} make?", f"{m[5].capitalize()}.")
    if kind == "math":
        a, b = rng.randint(0, 20), rng.randint(0, 20)
        return (f"{a}加{b}等于几？", f"{a + b}。") if lang == "zh" else (f"What is {a} plus {b}?", f"{a + b}.")
    zh, en = rng.choice([(c.zh, c.en) for c in COLORS] + SHAPES + [(t[0], t[2]) for t in THINGS])
    return (f"“{zh}”的英文是什么？", en) if lang == "zh" else (f'What is "{en}" in Chinese?', zh)


def multiturn(rng, lang):
    """Two turns: the follow-up ("它是什么颜色？") only makes sense with the first."""
    things = random_scene(rng, 1, 3)
    t = rng.choice(things)
    desc = describe_scene(things, lang)
    if lang == "zh":
        q1, a1 = f"{desc}\n{t.position[0]}的图形是什么形状？", t.shape[0]
        q2, a2 = "它是什么颜色？", t.color.zh
    else:
        q1, a1 = f"{desc}\nWhat shape is at the {t.position[1]}?", t.shape[1]
        q2, a2 = "What color is it?", t.color.en
    return [("user", q1), ("assistant", a1), ("user", q2), ("assistant", a2)]


def idk_qa(rng, lang):
    """A question about a cell the description leaves empty, or a person the story never names."""
    things = random_scene(rng, 1, 3)
    empty = [(r, c) for r in range(3) for c in range(3) if all((t.row, t.col) != (r, c) for t in things)]
    from common.world import POSITIONS
    r, c = rng.choice(empty)
    pos = POSITIONS[r][c]
    q = (f"{pos[0]}的图形是什么颜色？" if lang == "zh" else f"What color is the shape at the {pos[1]}?")
    return describe_scene(things, lang) + ("\n" if lang == "en" else "") + q, IDK[lang]


MAKERS = {"story": story_qa, "scene": scene_qa, "fact": fact_qa, "multiturn": multiturn, "idk": idk_qa}


def make_conversation(task, rng, lang, system_share=0.2):
    out = MAKERS[task](rng, lang)
    turns = out if isinstance(out, list) else [("user", out[0]), ("assistant", out[1])]
    msgs = [{"role": r, "content": c} for r, c in turns]
    if rng.random() < system_share:
        msgs.insert(0, {"role": "system", "content": SYSTEM[lang]})
    return msgs


def is_heldout(msgs, percent=10) -> bool:
    key = "\n".join(m["content"] for m in msgs if m["role"] == "user")
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") % 100 < percent


def world_conversations(n, seed, split="train"):
    """n conversations (tasks and languages in turn) of one split: "train" or "heldout"."""
    rng = named_rng(seed, f"sft-{split}")
    out, k = [], 0
    while len(out) < n:
        task, lang = TASKS[k % len(TASKS)], LANGS[(k // len(TASKS)) % 2]
        msgs = make_conversation(task, rng, lang)
        if is_heldout(msgs) == (split == "heldout"):
            out.append({"task": task, "lang": lang, "messages": msgs})
            k += 1
    return out


def read_conversations(items):
    """Real data: minimind / ShareGPT / OpenAI JSONL or JSON → [{"task": "data", "lang": "", "messages"}]."""
    out = []
    for path in expand_paths(items, suffixes=(".jsonl", ".json")):
        for where, obj in records(path):
            msgs = conversation(obj, where)
            if not any(m["role"] == "assistant" for m in msgs):
                raise CourseError(f"{where}: the conversation has no assistant turn, so nothing to learn from")
            out.append({"task": "data", "lang": "", "messages": msgs})
    return out


def encode_examples(tok, convs, block_size, say=print):
    """Render with step 1's chat template → (ids, mask) pairs; longer than the context: skipped and counted."""
    out, skipped = [], 0
    for c in convs:
        ids, mask = tok.render_conversation(c["messages"])
        if len(ids) > block_size + 1:
            skipped += 1
            continue
        out.append((ids, mask))
    if skipped and say:
        say(f"skipped {skipped} conversation(s) longer than the context ({block_size + 1} tokens)")
    if not out:
        raise CourseError("no conversation fits the context; shorten them or use a longer block_size")
    return out


if __name__ == "__main__":
    for c in world_conversations(10, 1337, "heldout"):
        print(c["task"], c["lang"], c["messages"])
