"""Talk to the pretrained model: it continues your text, token by token, as it streams out.

    python demo.py --prompt "小明有3个苹果，"
    python demo.py --prompt "There are" --temperature 0.7 --top-k 20 --n 3
    python demo.py --temperature 0            # greedy: always the most likely next token
A pretrained model is not a chat model yet: it continues text in the style of its corpus (step 4 teaches it
to answer).
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import torch

from common import RUNS_DIR
from common.cli import course_parser
from common.device import pick_device
from common.errors import CourseError
from step2_gpt.model import load_gpt
from step2_gpt.stream import TextStreamer


def main():
    p = course_parser("Sample from the pretrained model (step 3) with streaming output.", "device", "seed", "init",
                      init=str(RUNS_DIR / "pretrain"))
    p.add_argument("--prompt", default="小明有", help="提示词 text to continue")
    p.add_argument("--max-new-tokens", type=int, default=80, help="最多生成 tokens to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="温度 0 = greedy; higher = more random")
    p.add_argument("--top-k", type=int, default=50, help="只从最可能的 k 个里采样 sample among the k likeliest")
    p.add_argument("--top-p", type=float, default=None, help="核采样 sample among the tokens covering this mass")
    p.add_argument("--n", type=int, default=1, help="样本数 how many continuations")
    args = p.parse_args()
    torch.manual_seed(args.seed)
    device = pick_device(args.device)
    model, tok, ckpt = load_gpt(args.init, device=device)
    ids = tok.encode(args.prompt)
    if not ids:
        raise CourseError("--prompt is empty: give some text to continue")
    print(f"[{ckpt.path}: step {ckpt.step!r}, val loss {ckpt.metrics.get('val_loss')}, "
          f"temperature {args.temperature}, top-k {args.top_k}, top-p {args.top_p}]")
    for i in range(args.n):
        print(f"\n--- {i + 1}: {args.prompt}", end="", flush=True)
        stream = TextStreamer(tok, lambda piece: print(piece, end="", flush=True))
        model.generate(torch.tensor([ids], device=device), max_new_tokens=args.max_new_tokens,
                       temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                       eos_id=tok.eos_id, on_token=stream)
        stream.finish()
        print()


if __name__ == "__main__":
    from common.cli import run
    run(main)
