"""Held-out exact match per task and language: the SFT model vs the pretrained model prompted few-shot.

    python eval.py                         # runs/sft vs runs/pretrain
    python eval.py --n 50                  # fewer held-out conversations

Last line, one JSON object with the keys: sft_exact_match, pretrain_exact_match ({task: {lang: value}}), eos_rate,
idk_rate_unanswerable, idk_rate_answerable, forgetting_val_loss ([before, after]).
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

from collections import defaultdict

import numpy as np
import torch

from common import RUNS_DIR
from common.cli import course_parser
from common.device import pick_device
from common.world import corpus_files
from step2_gpt.model import GPT_STEPS, load_gpt
from step3_pretrain.model import eval_offsets, evaluate
from step4_sft.data import IDK, world_conversations


def answers(model, tok, conv, shots, device):
    """Greedy answer to every assistant turn (earlier turns given as the reference); (predicted, wanted, eos)."""
    out, msgs = [], conv["messages"]
    for k, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        ids, _ = tok.render_conversation(shots + msgs[:k], add_generation_prompt=True)
        new = model.generate(torch.tensor([ids[-model.config.block_size + 32:]], device=device), max_new_tokens=32,
                             temperature=0, eos_id=tok.im_end_id)[0].tolist()
        eos = bool(new) and new[-1] == tok.im_end_id
        out.append((tok.decode([i for i in new if i != tok.im_end_id], skip_special=True).strip(), m["content"], eos))
    return out


def score(model, tok, convs, shots_of, device):
    hits, eos, idk = defaultdict(list), [], {"unanswerable": [], "answerable": []}
    for c in convs:
        for pred, want, e in answers(model, tok, c, shots_of(c), device):
            hits[(c["task"], c["lang"])].append(pred == want)
            eos.append(e)
            idk["unanswerable" if want == IDK[c["lang"]] else "answerable"].append(pred == IDK[c["lang"]])
    table = defaultdict(dict)
    for (task, lang), h in sorted(hits.items()):
        table[task][lang] = round(sum(h) / len(h), 4)
    mean = lambda v: round(sum(v) / max(1, len(v)), 4)
    return dict(table), mean(eos), mean(idk["unanswerable"]), mean(idk["answerable"])


def val_loss(model, tok, device):
    _, val_path = corpus_files(4.0, 1337)
    stream = np.array(tok.encode(val_path.read_text(encoding="utf-8")), dtype=np.int64)
    return evaluate(model, stream, eval_offsets(len(stream), 128, 64), 128, 16, device, torch.float32, 0, 1)


def main():
    from common.training import print_summary
    p = course_parser("Step 4: held-out exact match, SFT vs pretrained few-shot.", "device", "seed", "init",
                      init=str(RUNS_DIR / "sft"))
    p.add_argument("--base", default=str(RUNS_DIR / "pretrain"), help="预训练模型 the pretrained checkpoint")
    p.add_argument("--n", type=int, default=200, help="held-out conversations")
    args = p.parse_args()
    device = pick_device(args.device)
    sft, tok, _ = load_gpt(args.init, expect_steps=("sft",), device=device, hint="python step4_sft/train.py")
    base, _, _ = load_gpt(args.base, expect_steps=GPT_STEPS, device=device)
    held = world_conversations(args.n, args.seed, "heldout")
    pool = world_conversations(50, args.seed + 1)
    def shots_of(c):  # two solved examples of the same task and language, before the question
        same = [s for s in pool if s["task"] == c["task"] and s["lang"] == c["lang"]][:2]
        return [m for s in same for m in s["messages"] if m["role"] != "system"]
    s_tab, eos, idk_u, idk_a = score(sft, tok, held, lambda c: [], device)
    p_tab, _, _, _ = score(base, tok, held, shots_of, device)
    print(f"{'task':<10} {'lang':<4} {'sft':>6} {'pretrain':>9}")
    for task in s_tab:
        for lang in s_tab[task]:
            print(f"{task:<10} {lang:<4} {s_tab[task][lang]:>6.1%} {p_tab[task][lang]:>9.1%}")
    print_summary(sft_exact_match=s_tab, pretrain_exact_match=p_tab, eos_rate=eos, idk_rate_unanswerable=idk_u,
                  idk_rate_answerable=idk_a, forgetting_val_loss=[round(val_loss(base, tok, device), 4),
                                                                 round(val_loss(sft, tok, device), 4)])


if __name__ == "__main__":
    from common.cli import run
    run(main)
