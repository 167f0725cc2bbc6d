"""Numbers in text as `<num><value>`: split them out into token ids + a values tensor, and put them back.

"红色柱子是<num><12.5>。" → ids [..., <num>, 。] and values [..., 12.5, 0]: the `<num>` token marks *that* a number
stands here; its value travels beside the ids, as a float, never as digit tokens.
"""
import math
import re

from common.errors import CourseError

NUM = "<num>"
NUM_RE = re.compile(r"<num><([^<>]*)>")            # <num><12.5>; the value is checked by parse_value
BARE_NUM_RE = re.compile(r"<num>(?!<[^<>]*>)")      # a <num> with no <value> after it
FLOAT_RE = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def parse_value(s: str, where: str = "") -> float:
    """The value inside `<num><...>`: a finite decimal number, else one clear sentence."""
    at = f" in {where}" if where else ""
    if not FLOAT_RE.fullmatch(s.strip()):
        raise CourseError(f"malformed number <num><{s}>{at}: write a finite decimal number such as <num><12.5>")
    v = float(s)
    if not math.isfinite(v):
        raise CourseError(f"number <num><{s}>{at} is not finite")
    return v


def split_numbers(text: str, where: str = "") -> tuple:
    """Text → (pieces, values): the text between numbers (len(values) + 1 pieces) and the numbers' values."""
    bare = BARE_NUM_RE.search(text)
    if bare:
        raise CourseError(f"a <num> without a value{' in ' + where if where else ''} (at character {bare.start()}): "
                          f"write <num><value>, e.g. <num><12.5>")
    pieces, values, last = [], [], 0
    for m in NUM_RE.finditer(text):
        pieces.append(text[last:m.start()])
        values.append(parse_value(m.group(1), where))
        last = m.end()
    return pieces + [text[last:]], values


def format_value(v: float, decimals: int | None = 1) -> str:
    """A number as the text shows it (one decimal by default; None: as short as Python writes it)."""
    return f"{v:.{decimals}f}" if decimals is not None else repr(float(v))


def as_digits(text: str, decimals: int | None = 1) -> str:
    """The `--numbers text` baseline: every `<num><v>` written as plain digits ("<num><12.5>" → "12.5")."""
    split_numbers(text)  # the same checks as the numeric path
    return NUM_RE.sub(lambda m: format_value(float(m.group(1)), decimals), text)


def encode_text(tok, text: str, role: str = "assistant", where: str = "") -> tuple:
    """One message's content → (ids, values), values 0.0 except at `<num>` ids. In a user turn `<image>` becomes
    the image id (as the chat template does); the rest is ordinary text (typed special strings stay text)."""
    pieces, nums = split_numbers(text, where)
    ids, values = [], []
    for k, piece in enumerate(pieces):
        parts = piece.split("<image>") if role == "user" else [piece]
        for j, part in enumerate(parts):
            if j:
                ids.append(tok.image_id)
                values.append(0.0)
            enc = tok.encode_ordinary(part)
            ids += enc
            values += [0.0] * len(enc)
        if k < len(nums):
            ids.append(tok.num_id)
            values.append(nums[k])
    return ids, values


def render_numeric(tok, messages, add_generation_prompt: bool = False, where: str = "") -> tuple:
    """ChatML like the tokenizer's render_conversation, with numbers split out → (ids, mask, values).
    The template around each content comes from render_conversation itself (an empty content), so the two
    never disagree; mask = 1 on the assistant's content and its <|im_end|>."""
    ids, mask, values = [], [], []
    for msg in messages:
        t_ids, t_mask = tok.render_conversation([dict(msg, content="")])   # <|im_start|>role\n <|im_end|> \n
        body, vals = encode_text(tok, msg["content"], msg["role"], where)
        cut = t_ids.index(tok.im_end_id)                                      # the content goes before <|im_end|>
        ids += t_ids[:cut] + body + t_ids[cut:]
        mask += t_mask[:cut] + [t_mask[cut]] * len(body) + t_mask[cut:]
        values += [0.0] * cut + vals + [0.0] * (len(t_ids) - cut)
    if add_generation_prompt:
        g_ids, _ = tok.render_conversation([], add_generation_prompt=True)
        ids, mask, values = ids + g_ids, mask + [0] * len(g_ids), values + [0.0] * len(g_ids)
    return ids, mask, values


def decode_numeric(tok, ids, values, decimals: int | None = 1, skip_special: bool = True) -> str:
    """ids + values → text with `<num><value>` where the ids have `<num>` (the inverse of encode_text)."""
    out, run = [], []
    for i, v in zip(ids, values):
        if int(i) == tok.num_id:
            out.append(tok.decode(run, skip_special=skip_special) + f"<num><{format_value(float(v), decimals)}>")
            run = []
        else:
            run.append(int(i))
    return "".join(out) + tok.decode(run, skip_special=skip_special)


def numbers_in(text: str) -> list:
    """The numbers a text shows: `<num><v>` values when it has any, else its plain decimal numbers (digits)."""
    if NUM in text:
        return split_numbers(text)[1]
    return [float(m.group(0)) for m in FLOAT_RE.finditer(text)]
