"""Instruction data for SFT: bilingual conversations from the data world, a held-out split per task, real
conversations through the course's one `--data` reader, and length-bucketed batches.

    python data.py          # one conversation per task and language, and what a batch looks like

Tasks (every one in Chinese and English, 1 in 5 with a system prompt):
  story      an arithmetic story in the prompt, a question about it      小明有5个苹果，送出2个。小明还剩几个苹果？ → 3个。
  scene      a scene description, a colour/shape/count/position question (the text twin of step 6's questions)
  fact       colour mixing, arithmetic, comparisons, translation of world words (zh ↔ en)
  multiturn  a follow-up that only makes sense with the first turn        它是什么颜色？
  idk        a question about something the prompt does not contain     → 我不知道。 / I don't know.
The split is a stable hash of the user turns: a question (its template, entities and numbers together) is
either in train or held out, never both, whatever the seed or the order of generation.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import hashlib

import torch

from common.datasources import conversation, expand_paths, records
from common.device import named_rng
from common.errors import CourseError
from common.world import (BY_SIZE, COLORS, MIXES, PEOPLE_EN, PEOPLE_ZH, SHAPES, SIZES, THINGS, Thing, describe_scene,
                          question, random_scene)

TASKS = ("story", "scene", "fact", "multiturn", "idk")
LANGS = ("zh", "en")
IDK = {"zh": "我不知道。", "en": "I don't know."}
SYSTEM = {"zh": "你是一个乐于助人的助手。", "en": "You are a helpful assistant."}
HELDOUT_PERCENT = 10


# ----------------------------------------------------------------------------------------------------
# The tasks: each returns (user, assistant) or a list of (role, content) turns


def _story(rng, lang):
    """An arithmetic story about one owner and one thing → (story, owner, thing, the count it ends with)."""
    zh = lang == "zh"
    who, thing = rng.choice(PEOPLE_ZH if zh else [p for p, _ in PEOPLE_EN]), rng.choice(THINGS)
    a = rng.randint(2, 9)
    if rng.random() < 0.5:
        b = rng.randint(1, a)
        n = a - b
        story = f"{who}有{a}{thing[1]}{thing[0]}，送出{b}{thing[1]}。" if zh else f"{who} has {a} {thing[3]}. {who} gives away {b}."
    else:
        b = rng.randint(1, 9)
        n = a + b
        story = f"{who}有{a}{thing[1]}{thing[0]}，又得到{b}{thing[1]}。" if zh else f"{who} has {a} {thing[3]}. {who} gets {b} more."
    return story, who, thing, n


def _how_many(who, thing, lang):
    return f"{who}现在有几{thing[1]}{thing[0]}？" if lang == "zh" else f"How many {thing[3]} does {who} have now?"


def story_qa(rng, lang):
    story, who, thing, n = _story(rng, lang)
    return story + ("" if lang == "zh" else " ") + _how_many(who, thing, lang), f"{n}{thing[1]}。" if lang == "zh" else f"{n}."


def _with_scene(things, lang, q):
    return describe_scene(things, lang) + ("" if lang == "zh" else " ") + q


def scene_qa(rng, lang):
    things = random_scene(rng)
    while True:
        qa = question(rng.choice(("color", "shape", "count", "position")), things, rng, lang)
        if qa:
            return _with_scene(things, lang, qa[0]), qa[1]


# Each fact has several phrasings: a held-out question is a phrasing the model never saw with that fact, while the
# fact itself is taught by the other phrasings. (Numbers and pairs stay small: knowing them is the base model's job,
# asking and answering is SFT's.)
FACT_TEMPLATES = {
    "mix": {"zh": ["{a}和{b}混在一起是什么颜色？", "把{a}和{b}混合，会得到什么颜色？", "{a}加上{b}是什么颜色？"],
            "en": ["What color do {a} and {b} make?", "What do you get if you mix {a} and {b}?",
                   "Mix {a} with {b}: what color is it?"]},
    "plus": {"zh": ["{a}加{b}等于几？", "{a}加上{b}是多少？", "算一算：{a}+{b}=？"],
             "en": ["What is {a} plus {b}?", "How much is {a} and {b} together?", "Compute {a} + {b}."]},
    "minus": {"zh": ["{a}减{b}等于几？", "{a}减去{b}是多少？", "算一算：{a}-{b}=？"],
              "en": ["What is {a} minus {b}?", "How much is {a} take away {b}?", "Compute {a} - {b}."]},
    "bigger": {"zh": ["{a}和{b}哪个大？", "{a}和{b}，哪一个更大？", "比一比：{a}还是{b}大？"],
               "en": ["Which is bigger, {a} or {b}?", "Between {a} and {b}, which one is bigger?", "Is {a} or {b} bigger?"]},
    "to_en": {"zh": ["“{a}”的英文是什么？", "“{a}”用英文怎么说？", "把“{a}”翻译成英文。"]},
    "to_zh": {"en": ['What is "{a}" in Chinese?', 'How do you say "{a}" in Chinese?', 'Translate "{a}" into Chinese.']},
}
WORDS = [(c.zh, c.en) for c in COLORS] + SHAPES + [(t[0], t[2]) for t in THINGS]


def fact_qa(rng, lang):
    zh = lang == "zh"
    kind = rng.choice(("mix", "plus", "minus", "bigger", "bigger", "to_en" if zh else "to_zh"))
    template = rng.choice(FACT_TEMPLATES[kind][lang])
    if kind == "mix":
        m = rng.choice(MIXES)
        return (template.format(a=m[0], b=m[1]), f"{m[2]}。") if zh else (template.format(a=m[3], b=m[4]), f"{m[5].capitalize()}.")
    if kind in ("plus", "minus"):
        a, b = rng.randint(0, 10), rng.randint(0, 10)
        a, b = (a, b) if kind == "plus" else (max(a, b), min(a, b))
        n = a + b if kind == "plus" else a - b
        return template.format(a=a, b=b), f"{n}。" if zh else f"{n}."
    if kind == "bigger":
        if rng.random() < 0.5:
            a, b = rng.sample(range(21), 2)
            return template.format(a=a, b=b), f"{max(a, b)}。" if zh else f"{max(a, b)}."
        i, j = rng.sample(range(len(BY_SIZE)), 2)
        x, y, big = BY_SIZE[i], BY_SIZE[j], BY_SIZE[max(i, j)]
        return (template.format(a=x[0], b=y[0]), f"{big[0]}。") if zh else \
            (template.format(a=f"the {x[1]}", b=f"the {y[1]}"), f"The {big[1]}.")
    word_zh, word_en = rng.choice(WORDS)
    return (template.format(a=word_zh), word_en) if zh else (template.format(a=word_en), word_zh)


def multiturn(rng, lang):
    """Two turns: the follow-up ("它是什么颜色？") names nothing, so only the first turn says what "it" is."""
    things = random_scene(rng, 1, 3)
    t = rng.choice(things)
    zh = lang == "zh"
    q1, a1 = question("shape", things, rng, lang, target=t)
    if rng.random() < 0.5:
        q2, a2 = ("它是什么颜色？", t.color.zh) if zh else ("What color is it?", t.color.en)
    else:
        q2, a2 = ("它是大的还是小的？", f"{t.size[0]}的。") if zh else ("Is it big or small?", f"{t.size[1].capitalize()}.")
    return [("user", _with_scene(things, lang, q1)), ("assistant", a1), ("user", q2), ("assistant", a2)]


def idk_qa(rng, lang):
    """A question the prompt cannot answer: an empty cell of the scene, or a person or thing the story never
    mentions. The same templates as the answerable tasks, so only the content decides."""
    if rng.random() < 0.5:
        things = random_scene(rng, 1, 3)
        r, c = rng.choice([(r, c) for r in range(3) for c in range(3) if all((t.row, t.col) != (r, c) for t in things)])
        qtype = "color" if rng.random() < 0.5 else "shape"
        # The scene questions' own wording, pointed at the empty cell (only the target's cell is read).
        q, _ = question(qtype, things, rng, lang, target=Thing(COLORS[0], SHAPES[0], SIZES[0], r, c))
        return _with_scene(things, lang, q), IDK[lang]
    story, who, thing, _ = _story(rng, lang)
    people = PEOPLE_ZH if lang == "zh" else [p for p, _ in PEOPLE_EN]
    if rng.random() < 0.5:
        who = rng.choice([p for p in people if p != who])
    else:
        thing = rng.choice([t for t in THINGS if t != thing])
    return story + ("" if lang == "zh" else " ") + _how_many(who, thing, lang), IDK[lang]


MAKERS = {"story": story_qa, "scene": scene_qa, "fact": fact_qa, "multiturn": multiturn, "idk": idk_qa}


def make_conversation(task, rng, lang, system_share=0.2):
    out = MAKERS[task](rng, lang)
    turns = out if isinstance(out, list) else [("user", out[0]), ("assistant", out[1])]
    msgs = [{"role": r, "content": c} for r, c in turns]
    if rng.random() < system_share:
        msgs.insert(0, {"role": "system", "content": SYSTEM[lang]})
    return msgs


def is_heldout(msgs, percent=HELDOUT_PERCENT) -> bool:
    key = "\n".join(m["content"] for m in msgs if m["role"] == "user")
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") % 100 < percent


def world_conversations(n, seed, split="train"):
    """n conversations of one split ("train" or "heldout"), the tasks and languages in turn."""
    rng = named_rng(seed, f"sft-{split}")
    out, k = [], 0
    while len(out) < n:
        task, lang = TASKS[k % len(TASKS)], LANGS[(k // len(TASKS)) % 2]
        msgs = make_conversation(task, rng, lang)
        if is_heldout(msgs) == (split == "heldout"):
            out.append({"task": task, "lang": lang, "messages": msgs})
            k += 1
    return out


# ----------------------------------------------------------------------------------------------------
# Real data and tokens


def read_conversations(items):
    """Real data (`--data`): minimind `conversations` [{role, content}], ShareGPT/LLaVA [{from, value}] or OpenAI
    `messages`, in .jsonl or .json files → [{"task": "data", "lang": "", "messages": [...]}]."""
    out = []
    for path in expand_paths(items, suffixes=(".jsonl", ".json")):
        for where, obj in records(path):
            msgs = conversation(obj, where)
            if not any(m["role"] == "assistant" for m in msgs):
                raise CourseError(f"{where}: the conversation has no assistant turn, so there is nothing to learn")
            out.append({"task": "data", "lang": "", "messages": msgs})
    if not out:
        raise CourseError(f"no conversation in {' '.join(map(str, items))}")
    return out


def encode_conversations(tok, convs, block_size, say=print):
    """Step 1's chat template → [(ids, mask)]; a conversation longer than the context is skipped and counted
    (cutting it could drop the very answer it teaches)."""
    out = [tok.render_conversation(c["messages"]) for c in convs]
    kept = [ex for ex in out if len(ex[0]) <= block_size + 1]
    if len(kept) < len(out) and say:
        say(f"skipped {len(out) - len(kept)} of {len(out)} conversation(s) longer than the context "
            f"({block_size + 1} tokens)")
    if not kept:
        raise CourseError(f"no conversation fits the context of {block_size + 1} tokens")
    return kept


def make_batch(examples, pad_id):
    """Right-padded (x, y) for next-token training: y is the next token where the mask says "assistant"
    (its content and <|im_end|>), else -100, which the loss ignores."""
    T = max(len(ids) for ids, _ in examples) - 1
    x = torch.full((len(examples), T), pad_id, dtype=torch.long)      # (B, T)
    y = torch.full((len(examples), T), -100, dtype=torch.long)        # (B, T)
    for b, (ids, mask) in enumerate(examples):
        ids_t = torch.tensor(ids)                                     # (n+1,)
        n = len(ids) - 1
        x[b, :n] = ids_t[:-1]
        y[b, :n] = torch.where(torch.tensor(mask[1:], dtype=torch.bool), ids_t[1:], -100)
    return x, y


def pretrain_text(base_path):
    """The token streams (train, val) of the run that made the checkpoint at `base_path`, read exactly as step
    3's train.py read them (its data, its tokenizer, its cached token file), and that run's window length."""
    from common.checkpoint import load_checkpoint
    from step3_pretrain.data import prepare_data
    a = load_checkpoint(base_path).train_args or {}
    _, data, _ = prepare_data(a.get("data"), str(base_path), False, a.get("cache_dir"), a.get("world_mb", 4.0),
                              a.get("seed", 1337))
    return data, a.get("seq_len", 128), a.get("eval_windows", 64)


class LengthBuckets:
    """Batches of similar length, so little of a batch is padding. Every epoch sorts the examples by length
    (ties broken at random), cuts that order into batches and shuffles the batches. Batch `step` depends only on
    (seed, step), so a resumed run draws exactly the batches the uninterrupted one would have."""

    def __init__(self, lengths, batch_size, seed):
        if len(lengths) < batch_size:
            raise CourseError(f"{len(lengths)} conversations are fewer than one batch of {batch_size}")
        self.lengths, self.batch_size, self.seed = list(lengths), batch_size, seed
        self.per_epoch = len(lengths) // batch_size
        self._epoch, self._batches = None, None

    def indices(self, step):
        epoch, k = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            rng = named_rng(self.seed, f"sft-epoch-{epoch}")
            order = sorted(range(len(self.lengths)), key=lambda i: (self.lengths[i], rng.random()))
            bs = self.batch_size
            self._batches = [order[i * bs:(i + 1) * bs] for i in range(self.per_epoch)]
            rng.shuffle(self._batches)
            self._epoch = epoch
        return self._batches[k]


if __name__ == "__main__":
    for c in world_conversations(len(TASKS) * 2, 1337):
        print(f"[{c['task']}/{c['lang']}]", " | ".join(f"{m['role']}: {m['content']}" for m in c["messages"]))
    print(f"held out: {HELDOUT_PERCENT}% of questions by a hash of the user turns (python data.py shows train ones)")
