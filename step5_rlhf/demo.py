"""The same held-out prompts answered by the SFT model and the aligned one, side by side, each answer with the
reward model's score and the checker's verdict; or a streaming chat with any checkpoint.

    python demo.py                          # runs/sft against runs/rlhf on 8 held-out prompts
    python demo.py --aligned ../runs/grpo   # another aligned model
    python demo.py --chat --init ../runs/rlhf               # multi-turn chat; /reset clears, /quit leaves
    python demo.py --chat --prompt "小明有3个苹果，又得到2个。小明现在有几个苹果？"
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

from pathlib import Path

from common import RUNS_DIR
from common.cli import course_parser
from common.device import pick_device, seed_everything
from step2_gpt.model import GPT_STEPS, load_gpt
from step4_sft.chat import add_chat_flags, chat
from step5_rlhf.data import check_answer, story_prompts, world_pairs
from step5_rlhf.model import load_reward_model
from step5_rlhf.scoring import greedy_answers, scores_of

HINT = "python step5_rlhf/train.py"


def main():
    p = course_parser("Step 5: SFT and aligned answers side by side, or chat.", "device", "seed", "init",
                      init=str(RUNS_DIR / "sft"))
    p.add_argument("--aligned", default=str(RUNS_DIR / "rlhf"), help="对齐后的模型 the aligned checkpoint")
    p.add_argument("--reward-model", default=str(RUNS_DIR / "reward"), help="奖励模型 scores every answer")
    p.add_argument("--n", type=int, default=4, help="每类提示数 held-out prompts of each kind (stories, pairs)")
    p.add_argument("--chat", action="store_true", help="对话 chat with --init instead")
    add_chat_flags(p)  # with --chat
    args = p.parse_args()
    seed_everything(args.seed)
    device = pick_device(args.device)
    if args.chat:
        model, tok, _ = load_gpt(args.init, expect_steps=GPT_STEPS, device=device, hint=HINT)
        return chat(model, tok, device, args.prompt, args.temperature, args.top_p)
    sft, tok, _ = load_gpt(args.init, expect_steps=("sft", "rlhf"), device=device, hint="python step4_sft/train.py")
    aligned, _, _ = load_gpt(args.aligned, expect_steps=("rlhf",), device=device, hint=HINT)
    rm = load_reward_model(args.reward_model, tok, device)
    prompts = story_prompts(args.n, args.seed, "heldout") + \
        [{"prompt": q["prompt"], "truth": None} for q in world_pairs(args.n, args.seed, "heldout")]
    rows = []
    for model in (sft, aligned):
        answers = greedy_answers(model, tok, prompts, device)
        rows.append(list(zip(answers, scores_of(rm, tok, answers, device))))
    print(f"SFT: {args.init}   aligned: {args.aligned}   scores: {args.reward_model}\n")
    for p, (a, sa), (b, sb) in zip(prompts, *rows):
        verdict = lambda ans: "" if p["truth"] is None else (" ✓" if check_answer(ans[2], ans[3], p["truth"]) else " ✗")
        print(f"prompt:  {p['prompt'][-1]['content']}")
        print(f"  SFT     {sa:+6.2f}  {a[2]!r}{verdict(a)}")
        print(f"  aligned {sb:+6.2f}  {b[2]!r}{verdict(b)}\n")


if __name__ == "__main__":
    from common.cli import run
    run(main)
