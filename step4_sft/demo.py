"""Chat with the SFT model in the terminal; tokens stream as they come, the history is kept.

    python demo.py                              # multi-turn chat with runs/sft; /reset clears, /quit leaves
    python demo.py --prompt "2加3等于几？"       # one turn
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import torch

from common import RUNS_DIR
from common.cli import course_parser
from common.device import pick_device, seed_everything
from step2_gpt.model import GPT_STEPS, load_gpt
from step2_gpt.stream import TextStreamer


def reply(model, tok, history, args, device):
    ids, _ = tok.render_conversation(history, add_generation_prompt=True)
    stream = TextStreamer(tok, lambda s: print(s, end="", flush=True), stop_ids=(tok.im_end_id, tok.eos_id))
    model.generate(torch.tensor([ids[-(model.config.block_size - 64):]], device=device), max_new_tokens=64,
                   temperature=args.temperature, top_p=args.top_p, eos_id=tok.im_end_id, on_token=stream)
    print()
    return stream.finish()


def main():
    p = course_parser("Step 4: chat with the fine-tuned model.", "device", "seed", "init", init=str(RUNS_DIR / "sft"))
    p.add_argument("--prompt", default=None, help="单轮提问 ask one question and exit")
    p.add_argument("--temperature", type=float, default=0.0, help="温度 0 = greedy")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling")
    args = p.parse_args()
    seed_everything(args.seed)
    device = pick_device(args.device)
    model, tok, _ = load_gpt(args.init, expect_steps=GPT_STEPS, device=device, hint="python step4_sft/train.py")
    history = []
    while True:
        text = args.prompt if args.prompt is not None else input("you> ").strip()
        if text in ("/quit", "/exit"):
            return
        if text == "/reset":
            history = []
            print("(history cleared)")
            continue
        history.append({"role": "user", "content": text})
        print("bot> ", end="", flush=True)
        history.append({"role": "assistant", "content": reply(model, tok, history, args, device)})
        if args.prompt is not None:
            return


if __name__ == "__main__":
    from common.cli import run
    run(main)
