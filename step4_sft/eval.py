"""Held-out exact match per task and language: the SFT model against the pretrained model prompted few-shot
(the fair baseline: it has never seen a question, so it is shown two solved ones first), the "I don't know"
rates, and what SFT cost the base model (its loss on step 3's validation text, before → after).

    python eval.py                              # runs/sft against runs/pretrain, 200 held-out conversations
    python eval.py --init /tmp/sft_lora --n 100

Last line, one JSON object with the keys: sft_exact_match, pretrain_exact_match ({task: {lang: share}}),
sft_mean, pretrain_mean, eos_rate, idk_rate_unanswerable, idk_rate_answerable, forgetting_val_loss
([before, after]), n, init, base.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

from common import RUNS_DIR
from common.cli import course_parser
from common.device import pick_device, seed_everything
from common.training import print_summary
from step2_gpt.model import GPT_STEPS, load_gpt
from step4_sft.data import pretrain_text, world_conversations
from step4_sft.scoring import few_shot, pretrain_val_loss, score


def main():
    p = course_parser("Step 4: held-out exact match, SFT against the pretrained model few-shot.", "device", "seed",
                      "init", init=str(RUNS_DIR / "sft"))
    p.add_argument("--base", default=str(RUNS_DIR / "pretrain"), help="预训练模型 the pretrained checkpoint")
    p.add_argument("--n", type=int, default=200, help="留出对话数 held-out conversations")
    args = p.parse_args()
    seed_everything(args.seed)
    device = pick_device(args.device)
    sft, tok, _ = load_gpt(args.init, expect_steps=("sft", "rlhf"), device=device, hint="python step4_sft/train.py")
    base, base_tok, _ = load_gpt(args.base, expect_steps=GPT_STEPS, device=device)
    heldout = world_conversations(args.n, args.seed, "heldout")
    s = score(sft, tok, heldout, device)
    b = score(base, base_tok, heldout, device, shots_of=few_shot(args.seed))
    print(f"{'task':<10} {'lang':<4} {'SFT':>7} {'pretrained few-shot':>20}")
    for task, langs in s["exact_match"].items():
        for lang, v in langs.items():
            print(f"{task:<10} {lang:<4} {v:>7.1%} {b['exact_match'][task][lang]:>20.1%}")
    print(f"{'mean':<15} {s['mean']:>7.1%} {b['mean']:>20.1%}")
    for task, ex in s["examples"].items():
        q, want, got = ex[0]
        print(f"  [{task}] {q[-60:]!r} → {got!r} (want {want!r})")
    text = pretrain_text(args.base)  # read once, scored with both models
    before, after = pretrain_val_loss(base, text, device), pretrain_val_loss(sft, text, device)
    print(f"step 3 validation loss: {before:.4f} before SFT → {after:.4f} after (forgetting {after - before:+.4f})")
    print_summary(sft_exact_match=s["exact_match"], pretrain_exact_match=b["exact_match"], sft_mean=s["mean"],
                  pretrain_mean=b["mean"], eos_rate=s["eos_rate"], idk_rate_unanswerable=s["idk_rate_unanswerable"],
                  idk_rate_answerable=s["idk_rate_answerable"], forgetting_val_loss=[round(before, 4), round(after, 4)],
                  n=args.n, init=args.init, base=args.base)


if __name__ == "__main__":
    from common.cli import run
    run(main)
