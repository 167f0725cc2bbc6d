"""One table, the same held-out prompts for every model: the SFT model, DPO, PPO, GRPO and the default chain.

    python eval.py                          # every one of runs/sft, runs/dpo, runs/ppo, runs/grpo, runs/rlhf that exists
    python eval.py --models ../runs/sft ../runs/grpo --n 100

Columns: the reward model's win rate against SFT (held-out preference prompts; a tie counts half), verifiable
accuracy on held-out stories (the checker), step 4's held-out exact match (what alignment costs), KL to SFT per
answer, mean answer length in tokens, and the training time each run recorded. Also the reward model's held-out
pair accuracy per kind of bad answer.
Last line, one JSON object with the keys: rm_pair_accuracy, rm_pair_accuracy_by_kind, models ({name: {win_rate,
verifiable_accuracy, exact_match, kl_to_sft, answer_tokens, train_s}}), n, reward_model.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

from pathlib import Path

from common import RUNS_DIR
from common.cli import course_parser
from common.device import pick_device, seed_everything
from common.errors import CourseError
from common.training import print_summary
from step2_gpt.model import load_gpt
from step4_sft.data import world_conversations
from step4_sft.scoring import score
from step5_rlhf.data import story_prompts, world_pairs
from step5_rlhf.model import load_reward_model
from step5_rlhf.scoring import kl_to, pair_accuracy, verifiable_accuracy, win_rate

MODELS = ("sft", "dpo", "ppo", "grpo", "rlhf")


def main():
    p = course_parser("Step 5: SFT, DPO, PPO, GRPO and the chain on the same held-out prompts.", "device", "seed")
    p.add_argument("--models", nargs="+", default=None, help="模型 checkpoint folders, the SFT one first "
                   "(default: those of runs/" + ", runs/".join(MODELS) + " that exist)")
    p.add_argument("--reward-model", default=str(RUNS_DIR / "reward"), help="奖励模型 the judge of the win rate")
    p.add_argument("--n", type=int, default=200, help="每项留出数 held-out prompts per measurement")
    args = p.parse_args()
    seed_everything(args.seed)
    device = pick_device(args.device)
    folders = [Path(m) for m in args.models] if args.models else \
        [RUNS_DIR / m for m in MODELS if (RUNS_DIR / m / "config.json").is_file()]
    if not folders:
        raise CourseError("no model to evaluate in runs/; make them with: python step5_rlhf/train.py")
    sft, tok, _ = load_gpt(folders[0], expect_steps=("sft", "rlhf"), device=device, hint="python step4_sft/train.py")
    rm = load_reward_model(args.reward_model, tok, device)
    pairs = world_pairs(args.n, args.seed, "heldout")
    stories = story_prompts(args.n, args.seed, "heldout")
    convs = world_conversations(args.n, args.seed, "heldout")
    rm_acc, rm_by_kind = pair_accuracy(rm, tok, pairs, device)
    print(f"reward model {args.reward_model}: held-out pair accuracy {rm_acc:.1%}; "
          + ", ".join(f"{k} {v:.1%}" for k, v in rm_by_kind.items()) + "\n")
    table = {}
    for folder in folders:
        model, model_tok, ckpt = load_gpt(folder, expect_steps=("sft", "rlhf"), device=device, hint="python step5_rlhf/train.py")
        if model_tok.vocab_size != tok.vocab_size:
            raise CourseError(f"{folder} has another vocabulary than {folders[0]}; compare models made from one SFT run")
        acc, length = verifiable_accuracy(model, tok, stories, device)
        table[folder.name] = dict(
            win_rate=win_rate(rm, tok, model, sft, pairs, device), verifiable_accuracy=acc,
            exact_match=score(model, tok, convs, device)["mean"], kl_to_sft=kl_to(model, sft, tok, stories[:50], device),
            answer_tokens=length, train_s=ckpt.metrics.get("train_s"))
    print(f"{'model':<8} {'RM win vs SFT':>13} {'verifiable':>10} {'step-4 EM':>9} {'KL to SFT':>9} {'tokens':>6} {'train s':>7}")
    for name, r in table.items():
        print(f"{name:<8} {r['win_rate']:>13.1%} {r['verifiable_accuracy']:>10.1%} {r['exact_match']:>9.1%} "
              f"{r['kl_to_sft']:>9.3f} {r['answer_tokens']:>6.1f} {r['train_s'] if r['train_s'] is not None else '-':>7}")
    print_summary(rm_pair_accuracy=rm_acc, rm_pair_accuracy_by_kind=rm_by_kind, models=table, n=args.n,
                  reward_model=args.reward_model)


if __name__ == "__main__":
    from common.cli import run
    run(main)
