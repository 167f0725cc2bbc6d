"""Preference data and a verifiable task, both from the data world, where the right answer is known.

    python data.py          # one pair per kind of bad answer, and a few verifiable prompts

Pairs (prompt, chosen, rejected): the prompt is a step-4 conversation without its last answer, chosen is that
answer (correct and concise), rejected is one named kind of bad answer:
  wrong     one fact changed: another number, colour, shape, size, position or word      小明有5个苹果…  3个。 ≻ 4个。
  rambling  the right answer buried in filler and said again and again                   3个。 ≻ 嗯，让我想想。3个。3个，就是3个。
  rude      the right answer, said rudely                                                 3个。 ≻ 这都不会？3个。
  invented  an answer made up where the prompt does not say, instead of "I don't know"    我不知道。 ≻ 4个。
  refused   "I don't know" where the prompt does say                                    3个。 ≻ 我不知道。
Without the last kind "I don't know" would only ever win, and a reward model would learn to like it everywhere.
The held-out pairs come from step 4's held-out questions, and rude and rambling phrasings of their own, so a
held-out pair shares neither its question nor its bad phrasing with training.

The verifiable family (for PPO and GRPO): step 4's arithmetic stories, "小明有5个苹果，送出2个。小明现在有几个苹果？".
A program checks an answer: it is right when it states exactly the story's number and the reply ended
(<|im_end|> before the length limit). Picked because the SFT model gets about half of them right (the lesson's
README has the measured share): RL can only reinforce answers the model sometimes gives.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import re

from common.datasources import conversation, expand_paths, records
from common.device import named_rng
from common.errors import CourseError
from common.world import BY_SIZE, COLORS, POSITIONS, SHAPES, SIZES, THINGS
from step4_sft.data import IDK, LANGS, TASKS, is_heldout, make_conversation, story_qa

KINDS = ("wrong", "rambling", "rude", "invented", "refused")
# The last phrasing of each list is kept for held-out pairs.
RUDE = {"zh": ["这都不会？", "烦死了，", "自己不会看吗？", "真笨，"],
        "en": ["Obviously. ", "Ugh, that's easy: ", "Can't you read? ", "Figure it out yourself. "]}
FILLER = {"zh": ["嗯，让我想想。", "这个问题嘛，", "好的，我来回答一下。", "我想了很久，"],
          "en": ["Hmm, let me think. ", "Well, so, ", "OK, I will answer that. ", "After a long think, "]}

# Words that can be swapped for another of the same class to make a wrong answer (longest first, so "右上"
# is replaced whole before "上方" could match inside something longer).
_CLASSES = [[c.zh for c in COLORS], [c.en for c in COLORS], [c.en.capitalize() for c in COLORS],
            [s[0] for s in SHAPES], [s[1] for s in SHAPES], [s[0] for s in SIZES], [s[1].capitalize() for s in SIZES],
            [p[0] for row in POSITIONS for p in row], [b[0] for b in BY_SIZE], [b[1] for b in BY_SIZE],
            [t[0] for t in THINGS], [t[2] for t in THINGS]]


def wrong_answer(answer, rng, question=""):
    """The answer with one fact changed (a number, or a world word for another of its kind); None if it has none.
    A word the question itself names ("白色的六边形在哪里？") is left alone: the fact to change is the one asked for."""
    m = re.search(r"\d+", answer)
    if m:
        n = int(m.group())
        other = rng.choice([k for k in range(max(0, n - 3), n + 4) if k != n])
        return answer[:m.start()] + str(other) + answer[m.end():]
    hits = [(answer.find(w), -len(w), w, cls) for cls in _CLASSES for w in cls if w in answer]
    hits = [h for h in hits if h[2] not in question] or hits
    if not hits:
        return None
    pos, _, word, cls = min(hits)
    return answer[:pos] + rng.choice([w for w in cls if w != word]) + answer[pos + len(word):]


def _phrase(options, rng, heldout):
    return options[-1] if heldout else rng.choice(options[:-1])


def bad_answer(kind, chosen, lang, rng, heldout=False, question=""):
    """A rejected answer of `kind` for `question` whose right answer is `chosen`."""
    if kind == "wrong":
        return wrong_answer(chosen, rng, question)
    if kind == "refused":
        return IDK[lang]
    if kind == "rude":
        return _phrase(RUDE[lang], rng, heldout) + chosen
    if kind == "rambling":
        bare = chosen.rstrip("。.")
        again = f"{bare}，{bare}，就是{chosen}" if lang == "zh" else f"{chosen} {bare}, it is {chosen}"
        return _phrase(FILLER[lang], rng, heldout) + again
    # invented: a confident answer of the kind the question asks for, where the prompt does not say
    if re.search("几|How many", question):
        return f"{rng.randint(1, 9)}个。" if lang == "zh" else f"{rng.randint(1, 9)}."
    if re.search("形状|shape", question):
        return rng.choice(SHAPES)[0 if lang == "zh" else 1]
    return rng.choice(COLORS).zh if lang == "zh" else rng.choice(COLORS).en


def world_pairs(n, seed, split="train"):
    """n preference pairs of one split: {"kind", "task", "lang", "prompt" (messages), "chosen", "rejected"}.
    The kinds come in turn; an "I don't know" conversation is always an "invented" pair and only those are."""
    rng = named_rng(seed, f"rlhf-pairs-{split}")
    heldout, out, k = split == "heldout", [], 0
    while len(out) < n:
        kind, lang = KINDS[k % len(KINDS)], LANGS[(k // len(KINDS)) % 2]
        task = "idk" if kind == "invented" else rng.choice([t for t in TASKS if t != "idk"])
        msgs = make_conversation(task, rng, lang)
        if is_heldout(msgs) != heldout:
            continue
        question = re.split(r"(?<=[。.])\s*", msgs[-2]["content"].strip())[-1]  # the last sentence asks
        rejected = bad_answer(kind, msgs[-1]["content"], lang, rng, heldout, question)
        if rejected is None or rejected == msgs[-1]["content"]:
            continue  # no fact to change in this answer: draw another conversation
        out.append({"kind": kind, "task": task, "lang": lang, "prompt": msgs[:-1], "chosen": msgs[-1]["content"],
                    "rejected": rejected})
        k += 1
    return out


# ----------------------------------------------------------------------------------------------------
# The verifiable task


def story_prompts(n, seed, split="train"):
    """n arithmetic-story prompts of one split → [{"lang", "prompt" (messages), "truth" (int), "answer"}]."""
    rng = named_rng(seed, f"rlhf-story-{split}")
    out = []
    while len(out) < n:
        lang = LANGS[len(out) % 2]
        user, answer = story_qa(rng, lang)
        msgs = [{"role": "user", "content": user}]
        if is_heldout(msgs) == (split == "heldout"):
            out.append({"lang": lang, "prompt": msgs, "truth": int(re.match(r"\d+", answer).group()), "answer": answer})
    return out


def check_answer(text, ended, truth) -> bool:
    """The programmatic checker: the reply ended, and the only number it states is the story's."""
    return ended and re.findall(r"\d+", text) == [str(truth)]


# ----------------------------------------------------------------------------------------------------
# Real preference data


def _answer(value, where, field):
    """A chosen/rejected field: a string, or a message list whose last turn is the assistant's answer."""
    if isinstance(value, list):
        msgs = conversation({"messages": value}, where)
        if not msgs or msgs[-1]["role"] != "assistant":
            raise CourseError(f"{where}: `{field}` must end with an assistant message")
        return msgs[:-1], msgs[-1]["content"]
    if not isinstance(value, str):
        raise CourseError(f"{where}: `{field}` must be a string or a list of messages")
    return None, value


def read_pairs(items):
    """Real pairs (`--data`), .jsonl or .json: {"prompt": str | messages, "chosen": str, "rejected": str}, or
    chosen/rejected as message lists that share the prompt turns (then "prompt" may be left out)."""
    out = []
    for path in expand_paths(items, suffixes=(".jsonl", ".json")):
        for where, obj in records(path):
            if not isinstance(obj, dict) or "chosen" not in obj or "rejected" not in obj:
                raise CourseError(f"{where}: a preference pair needs `chosen` and `rejected`")
            p_c, chosen = _answer(obj["chosen"], where, "chosen")
            p_r, rejected = _answer(obj["rejected"], where, "rejected")
            prompt = obj.get("prompt", p_c)
            if isinstance(prompt, str):
                prompt = [{"role": "user", "content": prompt}]
            elif isinstance(prompt, list):
                prompt = conversation({"messages": prompt}, where)
            if not prompt:
                raise CourseError(f"{where}: the pair has no prompt")
            if p_c is not None and p_r is not None and p_c != p_r:
                raise CourseError(f"{where}: `chosen` and `rejected` answer different conversations")
            if not chosen.strip() or not rejected.strip():
                raise CourseError(f"{where}: an empty answer; both `chosen` and `rejected` need text")
            if chosen == rejected:
                raise CourseError(f"{where}: `chosen` equals `rejected`, so the pair prefers nothing")
            out.append({"kind": "data", "task": "data", "lang": "", "prompt": prompt, "chosen": chosen,
                        "rejected": rejected, "where": where})
    if not out:
        raise CourseError(f"no preference pair in {' '.join(map(str, items))}")
    return out


def encode_answer(tok, prompt, answer, block_size, where="a pair"):
    """(ids, mask) of the prompt followed by `answer`, the mask on the answer and its <|im_end|> (step 4's
    template); a conversation longer than the context is one clear error (cutting it would cut the answer)."""
    ids, mask = tok.render_conversation(prompt + [{"role": "assistant", "content": answer}])
    if len(ids) > block_size + 1:
        raise CourseError(f"{where} is {len(ids)} tokens long, more than the model's context of {block_size + 1}; "
                          "shorten the prompt")
    return ids, mask


if __name__ == "__main__":
    for p in world_pairs(len(KINDS) * 2, 1337):
        print(f"[{p['kind']}/{p['lang']}] {p['prompt'][-1]['content']}\n   chosen:   {p['chosen']}\n   rejected: {p['rejected']}")
    for s in story_prompts(2, 1337):
        print(f"[verifiable/{s['lang']}] {s['prompt'][-1]['content']} → {s['truth']}")
    print("held out: step 4's held-out questions, with the last rude and rambling phrasing")
