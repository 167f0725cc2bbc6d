"""Train the byte-level BPE tokenizer — the fast, incremental way — and save it to runs/tokenizer/.

    python train.py                          # the data world (4 MB), vocab 2048 → runs/tokenizer/
    python train.py --data my.txt --vocab-size 8192 --out runs/my_tok

The textbook loop (minbpe's) recounts every pair of the whole corpus for each of the thousands of merges.
Here we count once and then only touch what a merge changes:
  1. pre-split every text with the regex and keep each DISTINCT chunk once, with its count
     (" the" may occur 60 000 times but is processed once, weighted by 60 000);
  2. count all adjacent pairs, and remember for each pair which chunks contain it (pair → chunks index);
  3. repeat: take the most frequent pair from a priority queue, merge it in just the chunks that contain
     it, and adjust the counts of the few pairs around each merge.
The queue is a "lazy" heap: when a count goes down we leave the old entry in place and fix it when it
reaches the top (it is popped, found stale, and pushed back with its true count).
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import heapq
import time
from collections import Counter, defaultdict
from pathlib import Path

from common.errors import CourseError
from step1_tokenizer.model import DEFAULT_TOKENIZER_DIR, SPECIAL_TOKENS, SPLIT_RE, Tokenizer

# The data world has ~100 English words and ~150 Han characters: with one Han character per chunk (model.py)
# it supports only ~1 000 tokens in all, and 896 already gives 99.8% of the best compression (README table).
DEFAULT_VOCAB = 896


def count_chunks(texts) -> Counter:
    """Distinct pre-split chunks → how often each occurs in the corpus."""
    if isinstance(texts, (str, bytes)):
        raise CourseError("train_bpe expects a list (or any iterable) of texts, not one single string")
    counts = Counter()
    for text in texts:
        if not isinstance(text, str):
            raise CourseError(f"train_bpe expects texts as str, got {type(text).__name__}")
        counts.update(SPLIT_RE.findall(text))
    return counts


def train_bpe(texts, vocab_size: int, special_tokens=SPECIAL_TOKENS, progress=None,
              allow_smaller: bool = True) -> Tokenizer:
    """Learn merges until the vocabulary (256 bytes + merges + special tokens) has `vocab_size` entries.
    Deterministic: the most frequent pair wins, and among equally frequent pairs the one with the smallest
    (left id, right id) — so the same texts always give the same tokenizer, whatever the text order.
    When every chunk has become one token there is nothing left to merge: training ends there with a smaller
    vocabulary (Hugging Face's behaviour; check `tok.vocab_size`), or, with allow_smaller=False, that is an
    error saying how large a vocabulary this corpus supports."""
    special_tokens = list(special_tokens)
    target = vocab_size - len(special_tokens)  # number of non-special tokens to reach
    if target < 256:
        raise CourseError(f"vocab size {vocab_size} is too small: it needs at least 256 byte tokens + "
                          f"{len(special_tokens)} special tokens = {256 + len(special_tokens)}")
    chunks = count_chunks(texts)
    # Sorted, so chunk indices (and everything after) do not depend on the order the texts came in.
    words = [list(c.encode("utf-8")) for c in sorted(chunks)]
    freqs = [chunks[c] for c in sorted(chunks)]
    if sum(len(w) for w in words) == 0:
        raise CourseError("the training corpus is empty: give some text (--data FILE) or use the data world")

    pair_count = defaultdict(int)   # (a, b) → how often a is directly followed by b, over the whole corpus
    where = defaultdict(set)        # (a, b) → indices of the chunks that contain it (may hold stale entries)
    for w, word in enumerate(words):
        for pair in zip(word, word[1:]):
            pair_count[pair] += freqs[w]
            where[pair].add(w)
    heap = [(-c, pair) for pair, c in pair_count.items()]  # heapq is a min-heap: store -count
    heapq.heapify(heap)

    vocab = [bytes([b]) for b in range(256)]   # id → bytes, grown as merges are learned
    ids_of = {t: i for i, t in enumerate(vocab)}
    merges, merged = [], set()
    while len(vocab) < target:
        if not heap:
            if allow_smaller and merges:
                break
            raise CourseError(f"the corpus is too small for vocab size {vocab_size}: every chunk of it is already "
                              f"a single token after {len(merges)} merges ({len(chunks)} distinct chunks); give "
                              f"more text or ask for at most --vocab-size {len(vocab) + len(special_tokens)}")
        neg, pair = heapq.heappop(heap)
        true = pair_count.get(pair, 0)
        if -neg != true:  # stale entry: the count went down since it was pushed
            if true > 0:
                heapq.heappush(heap, (-true, pair))
            continue
        a, b = pair
        new_bytes = vocab[a] + vocab[b]
        new = ids_of.get(new_bytes)
        if new is None:
            new = ids_of[new_bytes] = len(vocab)
            vocab.append(new_bytes)
        if pair not in merged:  # a pair can come back only through a reused id; the encoder merges it anyway
            merges.append(pair)
            merged.add(pair)
        delta = defaultdict(int)  # net change of each pair's count caused by this merge
        for w in sorted(where.pop(pair)):
            word, f = words[w], freqs[w]
            out, i, n = [], 0, len(word)
            while i < n:  # replace every (a, b) left to right ("aaa" with a+a → "aa","a")
                if i + 1 < n and word[i] == a and word[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            if len(out) == n:
                continue  # stale index entry: an earlier merge already consumed this pair here
            for p in zip(word, word[1:]):
                delta[p] -= f
            for p in zip(out, out[1:]):
                delta[p] += f
                where[p].add(w)
            words[w] = out
        for p, d in delta.items():
            if d == 0:
                continue
            c = pair_count[p] = pair_count[p] + d
            if c <= 0:
                del pair_count[p]
            elif d > 0:  # a count that went up needs a fresh heap entry; one that went down is fixed lazily
                heapq.heappush(heap, (-c, p))
        if progress is not None:
            progress(len(vocab), target)
    return Tokenizer(merges, special_tokens)


def read_text_files(paths) -> list:
    """Lines of the given files (folders: their .txt/.jsonl files). Invalid UTF-8 is an error that names the
    file and the byte offset, rather than a silent replacement that would teach the tokenizer garbage."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix in (".txt", ".jsonl", ".md"))
        elif p.is_file():
            files.append(p)
        else:
            raise CourseError(f"--data {p}: no such file or folder")
    if not files:
        raise CourseError(f"--data {' '.join(map(str, paths))}: no .txt/.jsonl/.md files found")
    lines = []
    for f in files:
        raw = f.read_bytes()
        try:
            lines += raw.decode("utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise CourseError(f"{f} is not valid UTF-8 at byte offset {e.start} "
                              f"(bytes {raw[e.start:e.start + 4]!r}); convert it to UTF-8 first") from None
    return lines


def bytes_per_token(tok: Tokenizer, texts) -> float:
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(tok.encode(t)) for t in texts)
    return n_bytes / max(1, n_tokens)


def main():
    from tqdm import tqdm
    from common.cli import course_parser
    from common.training import print_summary
    from common.world import build_corpus

    p = course_parser("Train the byte-level BPE tokenizer (step 1) on the data world or on --data files.",
                      out=str(DEFAULT_TOKENIZER_DIR))
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
        lines = read_text_files(args.data)
        val = lines[::50]  # every 50th line held out to measure compression on unseen text
        train = [ln for i, ln in enumerate(lines) if i % 50]
        source = " ".join(args.data)
    else:
        train, val = build_corpus(args.world_mb, args.seed)
        source = f"data world {args.world_mb:g} MB, seed {args.seed}"
    print(f"training on {source}: {len(train)} documents, {sum(len(t.encode()) for t in train) / 1e6:.2f} MB")

    t0 = time.perf_counter()
    bar = tqdm(total=args.vocab_size - len(specials) - 256, desc="merges", file=sys.stderr,
               mininterval=0.5, delay=1)  # delay: a run that fails at once shows only its error line
    tok = train_bpe(train, args.vocab_size, specials, progress=lambda n, target: bar.update(n - 256 - bar.n),
                    allow_smaller=False)
    bar.close()
    train_s = time.perf_counter() - t0
    tok.save(args.out)

    show = lambda i: "'" + tok.token_str(i).replace("\n", "\\n") + "'"
    print(f"\ntrained in {train_s:.2f} s: {len(tok.merges)} merges, vocab_size {tok.vocab_size}, saved to {args.out}")
    print("first merges:  " + ", ".join(f"{show(a)}+{show(b)}" for a, b in tok.merges[:12]))
    print("               (\\x.. is one byte of a multi-byte character: a Han character is 3 bytes, e.g. 中 = e4 b8 ad)")
    longest = sorted(range(256, len(tok.vocab)), key=lambda i: (-len(tok.vocab[i]), i))[:12]
    print("longest tokens: " + ", ".join(show(i) for i in longest))
    bpt_train, bpt_val = bytes_per_token(tok, train[:2000]), bytes_per_token(tok, val)
    print(f"bytes per token: {bpt_val:.3f} on val ({len(val)} documents), {bpt_train:.3f} on train")
    print_summary(step="tokenizer", vocab_size=tok.vocab_size, merges=len(tok.merges), train_s=round(train_s, 3),
                  bytes_per_token_val=round(bpt_val, 4), out=str(args.out))


if __name__ == "__main__":
    from common.cli import run
    run(main)
