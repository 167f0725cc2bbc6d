"""Generate text from a checkpoint, streamed token by token, then once more without the KV cache to show
what the cache buys.

    python demo.py --prompt "小明有3个苹果，"
    python demo.py --init ../runs/pretrain --prompt "There are 2 shapes:" --temperature 0 --max-new-tokens 200
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import time

import torch

from common.cli import course_parser
from common.device import pick_device
from common.errors import CourseError
from step2_gpt.model import GPT_STEPS, load_gpt, newest_gpt_checkpoint
from step2_gpt.stream import TextStreamer

def main():
    p = course_parser("Generate from a course GPT checkpoint, with and without the KV cache.", "device", "seed",
                      "init", seed=0)
    p.add_argument("--prompt", default="小明有3个苹果，", help="提示 the text to continue")
    p.add_argument("--max-new-tokens", type=int, default=100, help="最多生成多少 token")
    p.add_argument("--temperature", type=float, default=0.8, help="温度 0 = greedy")
    p.add_argument("--top-k", type=int, default=20, help="只在最可能的 k 个里采样")
    p.add_argument("--top-p", type=float, default=None, help="核采样 nucleus sampling mass")
    p.add_argument("--no-compare", action="store_true", help="不做无缓存对比 skip the run without KV cache")
    args = p.parse_args()
    device = pick_device(args.device)
    init = args.init or newest_gpt_checkpoint()
    model, tok, ckpt = load_gpt(init, expect_steps=GPT_STEPS, device=device)
    eos = tok.eos_id
    if ckpt.step in ("sft", "rlhf"):  # chat models expect the ChatML layout and end a turn with <|im_end|>
        ids, _ = tok.render_conversation([{"role": "user", "content": args.prompt}], add_generation_prompt=True)
        eos = tok.im_end_id
    else:
        ids = tok.encode(args.prompt)
    if not ids:
        raise CourseError("the prompt is empty")
    prompt = torch.tensor([ids], device=device)  # (1, T)
    kw = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
              top_p=args.top_p, eos_id=eos)
    print(f"model: {init} (step {ckpt.step!r}, {model.num_params_by_component()['total']:,} parameters), "
          f"prompt: {len(ids)} tokens\n")

    runs = [("with KV cache", True)] + ([] if args.no_compare else [("without KV cache", False)])
    results = {}
    for label, use_cache in runs:
        torch.manual_seed(args.seed)  # same sampling noise → the same text, so only the speed differs
        streamer = TextStreamer(tok, lambda piece: print(piece, end="", flush=True)) if use_cache else None
        if streamer:
            print(args.prompt, end="", flush=True)
        t = time.perf_counter()
        new = model.generate(prompt, use_cache=use_cache, on_token=streamer, **kw)
        if device.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
        if streamer:
            streamer.finish()
            print()
        results[label] = (new, dt)
    print()
    for label, (new, dt) in results.items():
        print(f"{label:<17} {new.shape[1]:>4} tokens in {dt:6.2f} s = {new.shape[1] / dt:8.1f} tokens/s")
    if len(results) == 2:
        (a, ta), (b, tb) = results.values()
        print(f"KV cache speedup: {tb / ta:.1f}×; same tokens: {torch.equal(a, b)}")


if __name__ == "__main__":
    from common.cli import run
    run(main)
