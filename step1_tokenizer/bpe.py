"""Byte-pair encoding, the algorithm: the pre-split rule, and learning merges — the fast, incremental way.

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
import heapq
from collections import Counter, defaultdict

import regex  # the `regex` package: \p{...} Unicode classes and possessive quantifiers, like Hugging Face's Oniguruma

from common.errors import CourseError

# Pre-split pattern (GPT-4 style, plus Chinese). BPE never merges across chunk borders, so this decides what a
# token may span. Alternatives, in order: English contractions ('s 're); ONE Han character (Chinese has no spaces,
# so a Han run is a whole clause: on our small, templated world BPE would turn "左下是一个大的红色圆形" into one
# token, or into pieces like "是一个大的红" that cut words in half; one character per chunk keeps "红色" reusable
# everywhere); a run of other letters with at most one leading non-letter (" the", "'hello"); 1–3 digits
# (numbers split into ≤3-digit groups); punctuation runs with an optional leading space; newlines; other
# whitespace (the last space before a word is left to that word: `\s+(?!\S)`).
SPLIT_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|\p{Han}|[^\r\n\p{L}\p{N}]?+[^\p{Han}\P{L}]+|\p{N}{1,3}"""
                 r"""| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+""")
SPLIT_RE = regex.compile(SPLIT_PATTERN)


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


def learn_merges(texts, vocab_size: int, n_special: int, progress=None, allow_smaller: bool = True) -> list:
    """Learn merges until the vocabulary (256 bytes + merges + `n_special` special tokens) has `vocab_size`
    entries; returns the merges [(left id, right id)] in rank order (model.train_bpe wraps them in a Tokenizer).
    Deterministic: the most frequent pair wins, and among equally frequent pairs the one with the smallest
    (left id, right id) — so the same texts always give the same tokenizer, whatever the text order.
    When every chunk has become one token there is nothing left to merge: training ends there with a smaller
    vocabulary (Hugging Face's behaviour; check `tok.vocab_size`), or, with allow_smaller=False, that is an
    error saying how large a vocabulary this corpus supports."""
    target = vocab_size - n_special  # number of non-special tokens to reach
    if target < 256:
        raise CourseError(f"vocab size {vocab_size} is too small: it needs at least 256 byte tokens + "
                          f"{n_special} special tokens = {256 + n_special}")
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
                              f"more text or ask for at most --vocab-size {len(vocab) + n_special}")
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
    return merges


def bytes_per_token(texts, encode) -> float:
    """UTF-8 bytes per token over some texts, `encode(text) -> ids`: higher = shorter sequences for the model."""
    return sum(len(t.encode("utf-8")) for t in texts) / max(1, sum(len(encode(t)) for t in texts))


def bytes_per_token(texts, encode) -> float:
    """UTF-8 bytes per token over some texts, `encode(text) -> ids`: higher = shorter sequences for the model."""
    return sum(len(t.encode("utf-8")) for t in texts) / max(1, sum(len(encode(t)) for t in texts))
