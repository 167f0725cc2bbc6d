"""Chat with the SFT model in the terminal; tokens stream as they come, the history is kept.

    python demo.py                              # multi-turn chat with runs/sft; /reset clears, /quit leaves
    python demo.py --prompt "2加3等于几？"       # one turn
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

from common import RUNS_DIR
from common.cli import course_parser
from common.device import pick_device, seed_everything
from step2_gpt.model import GPT_STEPS, load_gpt
from step4_sft.chat import add_chat_flags, chat


def main():
    p = course_parser("Step 4: chat with the fine-tuned model.", "device", "seed", "init", init=str(RUNS_DIR / "sft"))
    add_chat_flags(p)
    args = p.parse_args()
    seed_everything(args.seed)
    device = pick_device(args.device)
    model, tok, _ = load_gpt(args.init, expect_steps=GPT_STEPS, device=device, hint="python step4_sft/train.py")
    chat(model, tok, device, args.prompt, args.temperature, args.top_p)


if __name__ == "__main__":
    from common.cli import run
    run(main)
