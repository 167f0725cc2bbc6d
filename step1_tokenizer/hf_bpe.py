"""Hugging Face's Rust BPE trainer configured like ours, for side-by-side comparisons (demo.py, bench.py, the notebook).

"Configured like ours" = same corpus, same vocabulary size, same regex pre-split, bytes as the base alphabet,
same special tokens. The two learn almost the same merges; they differ only where pair counts tie.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

from step1_tokenizer.bpe import SPLIT_PATTERN, bytes_per_token
from step1_tokenizer.model import CHAR_TO_BYTE, SPECIAL_TOKENS, train_bpe


def train_hf_bpe(texts, vocab_size: int, special_tokens=SPECIAL_TOKENS):
    """Hugging Face's Rust BPE trainer, configured like ours: our split regex, then bytes as characters,
    all 256 bytes in the alphabet from the start, the special tokens reserved."""
    from tokenizers import Regex, Tokenizer as HFTokenizer, decoders, models, pre_tokenizers, trainers
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=0)
    hf.train_from_iterator(texts, trainer)
    return hf


def compression_curve(train, val, vocab_sizes):
    """[(vocab, ours, hf)] bytes/token on val for each vocabulary size (training stops early, like HF's, where
    the corpus has nothing left to merge: the curve then flattens)."""
    rows = []
    for v in vocab_sizes:
        ours = train_bpe(train, v)
        hf = train_hf_bpe(train, v)
        rows.append((v, bytes_per_token(val, ours.encode),
                     bytes_per_token(val, lambda t: hf.encode(t, add_special_tokens=False).ids)))
    return rows


def hf_piece(hf, i: int) -> str:
    """One HF token shown like ours: its text, or its raw bytes when it is only part of a character."""
    s = hf.id_to_token(i)
    if s in SPECIAL_TOKENS:
        return s
    raw = bytes(CHAR_TO_BYTE[c] for c in s)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return repr(raw)[2:-1]
