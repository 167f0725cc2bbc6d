"""Train the byte-level BPE tokenizer (bpe.py learns the merges) and save it to runs/tokenizer/.

    python train.py                          # the data world (4 MB), vocab 896 → runs/tokenizer/
    python train.py --data my.txt --vocab-size 8192 --out runs/my_tok

--data: .txt/.jsonl/.md files or folders, one document per line; every 50th line is held out to measure
compression on unseen text. Last line, one JSON object with the keys
    step, vocab_size, merges, train_s, bytes_per_token_val, out
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import time

from common.datasources import expand_paths, read_lines
from common.errors import CourseError
from common.files import atomic_folder
from step1_tokenizer.bpe import bytes_per_token
from step1_tokenizer.model import DEFAULT_TOKENIZER_DIR, DEFAULT_VOCAB, SPECIAL_TOKENS, train_bpe


def read_documents(items) -> list:
    """The lines of the --data files (folders: their .txt/.jsonl/.md files), each line one document."""
    return [ln for f in expand_paths(items, suffixes=(".txt", ".jsonl", ".md")) for ln in read_lines(f)]


def main():
    from common.cli import course_parser
    from common.training import print_summary, progress
    from common.world import build_corpus

    p = course_parser("Train the byte-level BPE tokenizer (step 1) on the data world or on --data files.",
                      "seed", "data", "out", "quick", out=str(DEFAULT_TOKENIZER_DIR))
    p.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB, help="词表大小 256 bytes + merges + specials")
    p.add_argument("--world-mb", type=float, default=4.0, help="数据世界大小 size of the generated corpus (MB)")
    p.add_argument("--extra-special", nargs="*", default=[], help="额外特殊 token extra special tokens, e.g. <|tool|>")
    args = p.parse_args()
    if args.quick:
        args.world_mb = min(args.world_mb, 0.3)
    specials = list(SPECIAL_TOKENS)
    for s in args.extra_special:
        if not (len(s) > 2 and s[0] == "<" and s[-1] == ">" and not any(ch.isspace() for ch in s)) or s in specials:
            raise CourseError(f"--extra-special {s!r}: a special token name looks like <name> or <|name|>, has no "
                              f"spaces and is not one of {specials}")
        specials.append(s)

    if args.data:
        lines = read_documents(args.data)
        val = lines[::50]  # every 50th line held out to measure compression on unseen text
        train = [ln for i, ln in enumerate(lines) if i % 50]
        source = " ".join(args.data)
    else:
        train, val = build_corpus(args.world_mb, args.seed)
        source = f"data world {args.world_mb:g} MB, seed {args.seed}"
    print(f"training on {source}: {len(train)} documents, {sum(len(t.encode()) for t in train) / 1e6:.2f} MB")

    t0 = time.perf_counter()
    bar = progress(args.vocab_size - len(specials) - 256, "merges", delay=1)  # delay: a failing run shows only its error
    tok = train_bpe(train, args.vocab_size, specials, progress=lambda n, target: bar.update(n - 256 - bar.n),
                    allow_smaller=False)
    bar.close()
    train_s = time.perf_counter() - t0
    with atomic_folder(args.out) as tmp:  # a killed run never leaves half a tokenizer
        tok.save(tmp)

    show = lambda i: "'" + tok.token_str(i).replace("\n", "\\n") + "'"
    print(f"\ntrained in {train_s:.2f} s: {len(tok.merges)} merges, vocab_size {tok.vocab_size}, saved to {args.out}")
    print("first merges:  " + ", ".join(f"{show(a)}+{show(b)}" for a, b in tok.merges[:12]))
    print("               (\\x.. is one byte of a multi-byte character: a Han character is 3 bytes, e.g. 中 = e4 b8 ad)")
    longest = sorted(range(256, len(tok.vocab)), key=lambda i: (-len(tok.vocab[i]), i))[:12]
    print("longest tokens: " + ", ".join(show(i) for i in longest))
    bpt_train, bpt_val = bytes_per_token(train[:2000], tok.encode), bytes_per_token(val, tok.encode)
    print(f"bytes per token: {bpt_val:.3f} on val ({len(val)} documents), {bpt_train:.3f} on train")
    print_summary(step="tokenizer", vocab_size=tok.vocab_size, merges=len(tok.merges), train_s=round(train_s, 3),
                  bytes_per_token_val=round(bpt_val, 4), out=str(args.out))


if __name__ == "__main__":
    from common.cli import run
    run(main)
