"""How well a VLM answers about held-out pictures (train.py, eval.py, the lab):

- short answers (colour, shape, count, position): exact match, computed in one teacher-forced pass;
- descriptions: greedy answers read back with the world's grammar (common.world.parse_description) into
  (colour, shape, size, position) things and compared with the scene — precision, recall, F1, the share of
  exactly right descriptions and the hallucination rate (described things that are not in the picture).
"""
from collections import Counter

import torch

from common.world import DESCRIBE_PROMPTS, parse_description, scene_facts
from step6_vlm.data import user_turn
from step6_vlm.loop import collate, encode
from step6_vlm.model import VLM, build_example


@torch.no_grad()
def exact_match(vlm: VLM, examples, feats, pad_id: int, batch_size: int = 256, device="cpu") -> list:
    """One bool per example: does greedy decoding reproduce the answer exactly (and stop)? Computed in one
    teacher-forced pass: greedy decoding writes the answer iff at every answer position the most likely
    next token is the answer's token (by induction over positions), including the closing <|im_end|>."""
    vlm.eval()
    out = []
    for k in range(0, len(examples), batch_size):
        x, y, idx = collate(examples[k:k + batch_size], pad_id)
        logits, _ = vlm(x.to(device), image_features=feats[idx].to(device))
        ok = (logits.argmax(-1).cpu() == y) | (y == -100)    # (B, T)
        out += ok.all(1).tolist()
    return out


def score(vlm, tokenizer, items, feats, device="cpu") -> dict:
    """Exact-match accuracy overall and per question type of eval items ({"image", "type", "question", "answer"})."""
    convs = [(it["image"], [{"role": "user", "content": user_turn(it["question"], vlm.config.layout)},
                            {"role": "assistant", "content": it["answer"]}]) for it in items]
    ok = exact_match(vlm, encode(vlm, tokenizer, convs), feats, tokenizer.pad_id, device=device)
    by_type = {}
    for it, good in zip(items, ok):
        by_type.setdefault(it["type"], []).append(good)
    return {"n": len(ok), "overall": sum(ok) / max(1, len(ok)),
            "by_type": {t: round(sum(v) / len(v), 4) for t, v in by_type.items()}}


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


def description_scores(answers, scenes) -> dict:
    """Micro-averaged over all pictures: a said thing is right when the picture has a thing with the same
    colour, shape, size and position (each true thing matched once). Unparsable pieces count as said and wrong."""
    said_n = true_n = right_n = exact = count_ok = 0
    for text, things in zip(answers, scenes):
        count, said = parse_description(text)
        truth = Counter(scene_facts(things))
        right = sum((Counter(s for s in said if s is not None) & truth).values())
        said_n, true_n, right_n = said_n + len(said), true_n + len(things), right_n + right
        exact += right == len(said) == len(things) and count == len(things)
        count_ok += count == len(things)
    p, r = right_n / max(1, said_n), right_n / max(1, true_n)
    return {"n": len(scenes), "precision": p, "recall": r, "f1": 2 * p * r / max(1e-9, p + r),
            "exact": exact / max(1, len(scenes)), "hallucination_rate": 1 - p if said_n else 0.0,
            "count_accuracy": count_ok / max(1, len(scenes)),
            "mean_chars": sum(len(a) for a in answers) / max(1, len(answers))}


def describe(vlm, tokenizer, scenes, images, langs, feats, device="cpu", prompts=DESCRIBE_PROMPTS) -> tuple:
    """Describe each picture (feature row images[k]) in its language, prompts[lang]; returns (answers, scores)."""
    answers = generate_answers(vlm, tokenizer, [(i, prompts[l]) for i, l in zip(images, langs)], feats, device=device)
    return answers, description_scores(answers, scenes)
