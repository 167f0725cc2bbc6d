"""Reading the numbers a NumericVLM answers with, and scoring them (train.py's check, eval.py's table).

A number counts as right under the relaxed rule when it is within 5% of the true value (ChartQA's rule), and as
exact when it equals the true value at the precision the answer shows (one decimal). MAE is the mean absolute
error; an answer without a number counts as predicting 0 (the whole value is missed)."""
import torch

from step6_vlm.numeric.model import NumericVLM
from step6_vlm.numeric.processor import NUM_RE, decode_numeric, numbers_in, render_numeric

RELAXED = 0.05


def prompt_ids(model: NumericVLM, tok, messages) -> list:
    """The prompt (every turn but the last answer) with the assistant's turn opened, `<image>` expanded."""
    ids, mask, _ = render_numeric(tok, messages[:-1], add_generation_prompt=True)
    return model.vlm.expand(ids, mask)[0]


@torch.no_grad()
def answers(model: NumericVLM, tok, samples, feats, batch_size: int = 128, max_new_tokens: int = 24) -> list:
    """Greedy answers to samples ({"messages", "image_index"}) → [(text, numbers)]. The numbers: the head's
    values at `<num>` in "num" mode, the digits the text spells in "text" mode."""
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for k in range(0, len(samples), batch_size):
        chunk = samples[k:k + batch_size]
        idx = torch.tensor([s["image_index"] for s in chunk])
        gen = model.generate([prompt_ids(model, tok, s["messages"]) for s in chunk], feats[idx].to(dev),
                             max_new_tokens, eos_id=tok.im_end_id)
        for ids, vals in gen:
            text = decode_numeric(tok, ids, vals, decimals=None)
            nums = [v for i, v in zip(ids, vals) if i == tok.num_id] if model.numbers == "num" else numbers_in(text)
            out.append((text, nums))
    return out


def gold_numbers(sample) -> list:
    return [float(m.group(1)) for m in NUM_RE.finditer(sample["messages"][-1]["content"])]


def score(preds, samples) -> dict:
    """MAE, relaxed and exact accuracy over every gold number (paired with the answer's numbers in order)."""
    err, relaxed, exact, n = 0.0, 0, 0, 0
    by_type = {}
    for (_, nums), s in zip(preds, samples):
        for j, g in enumerate(gold_numbers(s)):
            p = nums[j] if j < len(nums) else 0.0
            ok = abs(p - g) <= RELAXED * abs(g)
            err, relaxed, exact, n = err + abs(p - g), relaxed + ok, exact + (round(p, 1) == round(g, 1)), n + 1
            by_type.setdefault(s["type"], []).append(ok)
    n = max(n, 1)
    return {"n": n, "mae": round(err / n, 4), "relaxed": round(relaxed / n, 4), "exact": round(exact / n, 4),
            "relaxed_by_type": {t: round(sum(v) / len(v), 4) for t, v in by_type.items()}}
