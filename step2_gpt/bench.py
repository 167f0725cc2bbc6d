"""Step-2 benchmark: KV-cache decode speed, training throughput per preset, and parity + speed against the
same weights exported to transformers' LlamaForCausalLM. Random weights: speed does not depend on training.

    flock /tmp/cpu.lock python bench.py               # CPU (2 cores: ~1–2 minutes)
    python bench.py --device cuda                     # GPU: bf16 training, fp32 parity

Last line: one JSON object with hf_max_abs_diff, kv_cache_speedup, kv_cache_same_tokens,
train_tokens_per_s (per preset), speed_ratio_vs_hf_llama, ...
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import statistics
import tempfile
import time

import torch

from common.cli import course_parser
from common.device import autocast, pick_device, pick_dtype, seed_everything
from common.training import print_summary
from step2_gpt.export_hf import compare_logits, export_model, load_hf, same_greedy_tokens
from step2_gpt.model import GPT, GPTConfig


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeat=1):
    """Median wall time of fn() over `repeat` runs (after the caller's warm-up)."""
    times = []
    for _ in range(repeat):
        sync(device)
        t = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def bench_decode(device, new_tokens, prompt_len):
    """Greedy decoding of `new_tokens` tokens from the tiny preset, with and without the KV cache."""
    model = GPT(GPTConfig.preset("tiny")).to(device).eval()
    prompt = torch.randint(0, model.config.vocab_size, (1, prompt_len), device=device)
    model.generate(prompt, max_new_tokens=8, temperature=0)                   # warm-up
    model.generate(prompt, max_new_tokens=8, temperature=0, use_cache=False)
    t_cache, with_cache = timed(lambda: model.generate(prompt, new_tokens, temperature=0), device)
    t_full, without = timed(lambda: model.generate(prompt, new_tokens, temperature=0, use_cache=False), device)
    return {"decode_tokens_per_s_cache": new_tokens / t_cache, "decode_tokens_per_s_no_cache": new_tokens / t_full,
            "kv_cache_speedup": t_full / t_cache, "kv_cache_same_tokens": torch.equal(with_cache, without)}


def bench_train(name, device, dtype, batch, seq, steps):
    """Tokens/s of forward + backward (no optimizer step) on random tokens."""
    model = GPT(GPTConfig.preset(name, block_size=seq)).to(device).train()
    idx = torch.randint(0, model.config.vocab_size, (batch, seq + 1), device=device)

    def step():
        with autocast(device, dtype):
            _, loss = model(idx[:, :-1], targets=idx[:, 1:])
        loss.backward()
        model.zero_grad(set_to_none=True)

    step()  # warm-up: allocations, kernel selection
    t, _ = timed(step, device, repeat=steps)
    return batch * seq / t


def bench_vs_hf(name, device, batch, seq, repeat, tmp):
    """Max |logit diff| and forward time: our GPT vs the exported LlamaForCausalLM, fp32, same input."""
    extra = {"vocab_size": 2048} if name == "tiny" else {}
    model = GPT(GPTConfig.preset(name, block_size=seq, **extra)).eval()
    with torch.no_grad():  # non-unit norm gains, so every weight's export is exercised
        for n, p in model.named_parameters():
            if "norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    hf = load_hf(export_model(model, pathlib.Path(tmp) / name)).to(device)
    model.to(device)
    idx = torch.randint(0, model.config.vocab_size, (batch, seq), device=device)
    diff = compare_logits(model, hf, idx)
    same = same_greedy_tokens(model, hf, idx[:1, :16], 32)
    with torch.no_grad():
        model(idx), hf(input_ids=idx)  # warm-up
        t_ours, t_hf = [], []
        for _ in range(repeat):  # interleaved, so a busy moment on a shared machine hits both alike
            t_ours.append(timed(lambda: model(idx), device)[0])
            t_hf.append(timed(lambda: hf(input_ids=idx, use_cache=False), device)[0])
    return diff, same, min(t_hf) / min(t_ours)  # best of n: least disturbed run


def main():
    p = course_parser("Benchmark the step-2 GPT: KV cache, training speed, parity and speed vs transformers.",
                      "device", "dtype", "seed", "quick")
    p.add_argument("--new-tokens", type=int, default=256, help="生成长度 tokens generated in the decode benchmark")
    p.add_argument("--prompt-len", type=int, default=16, help="提示长度 prompt tokens in the decode benchmark")
    p.add_argument("--presets", default="tiny,small,base", help="训练速度测哪些规模 presets for training tokens/s")
    p.add_argument("--threads", type=int, default=None, help="CPU 线程数 torch threads (default: torch's choice)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    device = pick_device(args.device)
    dtype = pick_dtype(args.dtype, device)
    gpu = device.type == "cuda"
    quick = args.quick
    print(f"device: {device} ({torch.cuda.get_device_name() if gpu else f'{torch.get_num_threads()} CPU threads'}), "
          f"train dtype: {dtype}, torch {torch.__version__}")

    dec = bench_decode(device, 32 if quick else args.new_tokens, args.prompt_len)
    print(f"decode {args.new_tokens if not quick else 32} tokens (tiny): KV cache {dec['decode_tokens_per_s_cache']:.0f} tok/s, "
          f"no cache {dec['decode_tokens_per_s_no_cache']:.0f} tok/s → {dec['kv_cache_speedup']:.1f}× "
          f"(same tokens: {dec['kv_cache_same_tokens']})")

    # CPU shapes are small so the whole benchmark stays around a minute on 2 cores; GPUs get real batches.
    shapes = {"tiny": (8, 256, 5), "small": (4, 256, 3), "base": (1, 128, 2)}
    if gpu:
        shapes = {"tiny": (64, 512, 20), "small": (32, 512, 20), "base": (16, 1024, 10)}
    if quick:
        shapes = {k: (1, 32, 1) for k in shapes}
    train_tps = {}
    for name in [s.strip() for s in args.presets.split(",") if s.strip()]:
        if name not in shapes:
            raise_unknown(name)
        b, t, n = shapes[name]
        train_tps[name] = round(bench_train(name, device, dtype, b, t, n))
        print(f"train fwd+bwd {name:<5} batch {b}×{t}: {train_tps[name]:,} tokens/s")

    diffs, same, ratios = {}, {}, {}
    hf_shapes = {"tiny": (4, 256, 10), "small": (2, 256, 5)} if not gpu else {"tiny": (32, 512, 20), "small": (16, 512, 20)}
    if quick:
        hf_shapes = {"tiny": (1, 64, 1)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (b, t, n) in hf_shapes.items():
            diffs[name], same[name], ratios[name] = bench_vs_hf(name, device, b, t, n, tmp)
            print(f"vs LlamaForCausalLM {name:<5} batch {b}×{t}: max |logit diff| {diffs[name]:.1e}, "
                  f"greedy same: {same[name]}, our forward {ratios[name]:.2f}× transformers' speed")
    import transformers
    print_summary(device=str(device), cpu_threads=torch.get_num_threads(), torch=torch.__version__,
                  transformers=transformers.__version__, hf_max_abs_diff=max(diffs.values()), hf_greedy_same=all(same.values()),
                  kv_cache_speedup=round(dec["kv_cache_speedup"], 2),
                  kv_cache_same_tokens=dec["kv_cache_same_tokens"],
                  decode_tokens_per_s_cache=round(dec["decode_tokens_per_s_cache"], 1),
                  decode_tokens_per_s_no_cache=round(dec["decode_tokens_per_s_no_cache"], 1),
                  train_tokens_per_s=train_tps,
                  speed_ratio_vs_hf_llama=round(min(ratios.values()), 3),
                  speed_ratio_vs_hf_llama_by_preset={k: round(v, 3) for k, v in ratios.items()})


def raise_unknown(name):
    from common.errors import CourseError
    raise CourseError(f"unknown preset {name!r} in --presets; choose from tiny, small, base")


if __name__ == "__main__":
    from common.cli import run
    run(main)
