"""Benchmark: our BPE against Hugging Face `tokenizers` on the same corpus and vocabulary size — training time,
encode throughput, bytes per token — and the parity check of the exported tokenizer.json.

    python bench.py                   # a generated ~10 MB data-world corpus, vocab 8192
    python bench.py --quick           # ~1 MB
    python bench.py --text book.txt --vocab-size 8192

Last line: one JSON object (train_s_ours, train_s_hf, train_time_ratio_vs_hf, bytes_per_token_ours/_hf,
hf_parity, encode throughput ...). hf_parity = fraction of val lines whose ids from our encoder equal those of
the exported tokenizer.json loaded by transformers.PreTrainedTokenizerFast (special tokens included).
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import os
import tempfile
import time

from common.errors import CourseError
from common.datasources import read_lines
from step1_tokenizer.bpe import bytes_per_token
from step1_tokenizer.hf_bpe import train_hf_bpe
from step1_tokenizer.model import Tokenizer, train_bpe


def timed(fn, *args, **kw):
    t0 = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t0


def main():
    from common.cli import course_parser
    from common.training import print_summary
    from common.world import generate_docs, is_val

    p = course_parser("Benchmark our BPE tokenizer against Hugging Face tokenizers (time, compression, parity).",
                      "seed", "quick")
    p.add_argument("--text", default=None, help="语料文件 a UTF-8 text file, one document per line (default: data world)")
    p.add_argument("--mb", type=float, default=10.0, help="生成语料大小 size of the generated world corpus (MB)")
    p.add_argument("--vocab-size", type=int, default=8192, help="词表大小 vocabulary size for both trainers")
    args = p.parse_args()
    if args.quick:
        args.mb = min(args.mb, 1.0)
    if args.text:
        docs, source = read_lines(args.text), args.text
        val = docs[::50]  # every 50th line held out
        train = [d for i, d in enumerate(docs) if i % 50]
    else:
        docs, source = generate_docs(int(args.mb * 1e6), args.seed), f"data world {args.mb:g} MB, seed {args.seed}"
        train = [d for d in docs if not is_val(d)]
        val = [d for d in docs if is_val(d)]
    if not val:
        raise CourseError(f"{source}: too few lines to hold out a validation set (need at least 50)")
    mb = sum(len(d.encode("utf-8")) for d in train) / 1e6
    threads = os.environ.get("RAYON_NUM_THREADS", str(os.cpu_count()))
    print(f"corpus: {source} — train {len(train)} lines ({mb:.2f} MB), val {len(val)} lines; vocab {args.vocab_size}; "
          f"HF uses {threads} threads, ours 1")

    ours, train_s_ours = timed(train_bpe, train, args.vocab_size)
    hf, train_s_hf = timed(train_hf_bpe, train, args.vocab_size)
    if ours.vocab_size < args.vocab_size:
        print(f"note: this corpus only supports {ours.vocab_size} tokens (ours) / {hf.get_vocab_size()} (HF) — every "
              f"chunk is one token by then; both trainers stop there")

    # Encode throughput on a fresh tokenizer (empty chunk cache), over ~2 MB of training text plus val.
    sample = val + train[: max(1, len(train) * 2 // max(1, int(mb)))] if mb > 2 else val + train
    sample_mb = sum(len(d.encode("utf-8")) for d in sample) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        ours.save(tmp)
        fresh = Tokenizer.load(tmp)
        from transformers import PreTrainedTokenizerFast
        exported = PreTrainedTokenizerFast(tokenizer_file=os.path.join(tmp, "tokenizer.json"))
    _, enc_s_ours = timed(lambda: [fresh.encode(d) for d in sample])
    _, enc_s_hf = timed(lambda: hf.encode_batch(sample, add_special_tokens=False))
    _, enc_s_hf1 = timed(lambda: [hf.encode(d, add_special_tokens=False) for d in sample])

    bpt_ours = bytes_per_token(val, ours.encode)
    bpt_hf = bytes_per_token(val, lambda t: hf.encode(t, add_special_tokens=False).ids)
    same = sum(exported.encode(d, add_special_tokens=False) == ours.encode(d, allow_special=True) for d in val)
    wrapped = [f"<|bos|>{d}<|eos|><|im_start|>user\n<image>{d}<|im_end|>" for d in val]
    same_sp = sum(exported.encode(d, add_special_tokens=False) == ours.encode(d, allow_special=True) for d in wrapped)

    rows = [("train time (s)", f"{train_s_ours:.2f}", f"{train_s_hf:.2f}"),
            ("vocab reached", ours.vocab_size, hf.get_vocab_size()),
            ("bytes/token (val)", f"{bpt_ours:.4f}", f"{bpt_hf:.4f}"),
            (f"encode MB/s ({sample_mb:.1f} MB)", f"{sample_mb / enc_s_ours:.2f}",
             f"{sample_mb / enc_s_hf:.2f} batch, {sample_mb / enc_s_hf1:.2f} one by one")]
    print(f"\n{'':28s} {'ours':>10s}   Hugging Face")
    for name, a, b in rows:
        print(f"{name:28s} {a!s:>10s}   {b}")
    print(f"parity with the exported tokenizer.json: {same}/{len(val)} val lines, "
          f"{same_sp}/{len(val)} with special tokens")
    print_summary(bench="tokenizer", corpus=source, train_mb=round(mb, 2), vocab_size=args.vocab_size,
                  vocab_reached_ours=ours.vocab_size, vocab_reached_hf=hf.get_vocab_size(),
                  train_s_ours=round(train_s_ours, 3), train_s_hf=round(train_s_hf, 3),
                  train_time_ratio_vs_hf=round(train_s_ours / train_s_hf, 2),
                  bytes_per_token_ours=round(bpt_ours, 4), bytes_per_token_hf=round(bpt_hf, 4),
                  bytes_per_token_gap=round(abs(bpt_ours - bpt_hf) / bpt_hf, 4),
                  encode_mb_s_ours=round(sample_mb / enc_s_ours, 2), encode_mb_s_hf=round(sample_mb / enc_s_hf, 2),
                  encode_mb_s_hf_single=round(sample_mb / enc_s_hf1, 2),
                  hf_parity=round(same / len(val), 4), hf_parity_with_specials=round(same_sp / len(val), 4))


if __name__ == "__main__":
    from common.cli import run
    run(main)
