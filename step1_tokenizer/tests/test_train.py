"""The fast trainer: golden merges, the same result as the slow textbook loop, determinism, bad input."""
import random
import subprocess
import sys
from collections import Counter

import pytest

from common import REPO_ROOT
from common.errors import CourseError
from step1_tokenizer.bpe import SPLIT_RE
from step1_tokenizer.model import SPECIAL_TOKENS
from step1_tokenizer.model import train_bpe
from step1_tokenizer.train import read_documents

SMALL = ["low low low lower lowest", "new newer newest wider", "小明有3个苹果。小红有5个苹果。"] * 3 + ["the cat sat on the mat"]


def test_golden_first_merges():
    # By hand: "l"+"o" and "o"+"w" both occur 15 times; the tie goes to the smaller pair (108, 111). Then
    # "lo"+"w" (15), " "+"low" (12), "e"+"r" and "e"+"w" (9, tie → smaller), "n"+"ew" (9), " "+"new" and
    # "e"+"s" (6, tie → smaller), then the bytes of the Chinese characters (6 each: 。 is E3 80 82).
    tok = train_bpe(SMALL, 256 + len(SPECIAL_TOKENS) + 12)
    assert tok.merges == [(108, 111), (256, 119), (32, 257), (101, 114), (101, 119), (110, 260), (32, 261),
                          (101, 115), (128, 130), (139, 185), (156, 137), (158, 156)]
    assert [tok.token_str(i) for i in range(256, 264)] == ["lo", "low", " low", "er", "ew", "new", " new", "es"]


def slow_bpe(texts, n_merges):
    """The textbook loop: recount every pair of every chunk for each merge (same tie rule, same id reuse)."""
    chunks = Counter(c for t in texts for c in SPLIT_RE.findall(t))
    words = {c: list(c.encode()) for c in chunks}
    vocab, merges = [bytes([b]) for b in range(256)], []
    while len(vocab) < 256 + n_merges:
        counts = Counter()
        for c, w in words.items():
            for p in zip(w, w[1:]):
                counts[p] += chunks[c]
        if not counts:
            break
        (a, b) = min(counts, key=lambda p: (-counts[p], p))
        new_bytes = vocab[a] + vocab[b]
        if new_bytes not in vocab:
            vocab.append(new_bytes)
        new = vocab.index(new_bytes)
        if (a, b) not in merges:
            merges.append((a, b))
        for c, w in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == (a, b):
                    out, i = out + [new], i + 2
                else:
                    out, i = out + [w[i]], i + 1
            words[c] = out
    return merges


def test_fast_trainer_equals_slow_loop(world_small):
    texts = world_small[1][:150]
    fast = train_bpe(texts, 256 + len(SPECIAL_TOKENS) + 300)
    assert fast.merges == slow_bpe(texts, 300)


def test_training_is_deterministic(world_small):
    texts = world_small[0][:800]
    a = train_bpe(texts, 700)
    shuffled = texts[:]
    random.Random(0).shuffle(shuffled)
    b = train_bpe(shuffled, 700)
    assert a.merges == b.merges and a.vocab == b.vocab and a.vocab_size == b.vocab_size == 700


def test_id_reuse_keeps_one_id_per_string():
    tok = train_bpe(["abc abc abc xbc", "ab ab", "bcd bcd bcd bcd"] * 5, 300)
    assert len(set(tok.vocab)) == len(tok.vocab)


# ---------------------------------------------------------------------------------------------- bad input
def test_empty_corpus():
    with pytest.raises(CourseError, match="the training corpus is empty"):
        train_bpe([], 512)
    with pytest.raises(CourseError, match="the training corpus is empty"):
        train_bpe(["", ""], 512)


def test_texts_must_be_strings():
    with pytest.raises(CourseError, match="not one single string"):
        train_bpe("just one string", 512)
    with pytest.raises(CourseError, match="texts as str"):
        train_bpe([b"bytes"], 512)


def test_tiny_corpus():
    with pytest.raises(CourseError, match="too small for vocab size 4096"):
        train_bpe(["hello world"], 4096, allow_smaller=False)
    with pytest.raises(CourseError, match="too small"):
        train_bpe(["a", "b", "c"], 512)  # nothing at all to merge


def test_vocab_smaller_than_bytes_plus_specials():
    with pytest.raises(CourseError, match="at least 256 byte tokens"):
        train_bpe(SMALL, 256)


def test_missing_data_file(tmp_path):
    with pytest.raises(CourseError, match="no such file"):
        read_documents([tmp_path / "nope.txt"])


def test_invalid_utf8_names_file_and_offset(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_bytes("好的 ok\n".encode() + b"\xff\xfe tail")
    with pytest.raises(CourseError, match=r"bad.txt is not valid UTF-8 at byte offset 10"):
        read_documents([f])


def _cli(*args, cwd=REPO_ROOT):
    return subprocess.run([sys.executable, "step1_tokenizer/train.py", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_cli_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"abc\xc3(")
    for args, words in [(["--data", str(bad)], "not valid UTF-8 at byte offset 3"),
                        (["--vocab-size", "100", "--extra-special", "tool"], "special token name")]:
        r = _cli(*args, "--out", str(tmp_path / "tok"))
        assert r.returncode == 2, r.stderr
        assert r.stderr.startswith("error: ") and words in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_cli_quick_trains_and_saves(tmp_path):
    r = _cli("--quick", "--extra-special", "<|tool|>", "--out", str(tmp_path / "tok"))
    assert r.returncode == 0, r.stderr
    import json
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["vocab_size"] == 896 and summary["bytes_per_token_val"] > 2.5
    from step1_tokenizer.model import load_tokenizer
    tok = load_tokenizer(tmp_path / "tok")
    assert tok.vocab_size == 896 and tok.special_id("<|tool|>") == 895
