"""Our tokenizer next to Hugging Face `tokenizers` BPE trained the same way, on your text; and a plot of
compression (bytes per token) against vocabulary size.

    python demo.py --text "小明有3个苹果，Tom has 3 apples."
    echo "any text" | python demo.py
    python demo.py --quick          # smaller corpus and fewer plot points (seconds)

"Trained the same way" = same corpus, same vocabulary size, same regex pre-split, bytes as the base alphabet,
same special tokens. The two learn almost the same merges; they differ only where pair counts tie.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import time
from pathlib import Path

from common import RUNS_DIR
from common.errors import CourseError
from step1_tokenizer.model import (CHAR_TO_BYTE, DEFAULT_TOKENIZER_DIR, HF_FILE, SPECIAL_TOKENS, SPLIT_PATTERN, SPLIT_RE,
                                   load_tokenizer)
from step1_tokenizer.train import DEFAULT_VOCAB, train_bpe

DEFAULT_TEXT = "小明有3个苹果，吃了1个，还剩2个。Tom has 12 red circles and 3 blue stars! 🍎"


def model_demo():
    """`python model.py --demo`: what BPE does to one mixed sentence, and a chat template with its mask."""
    from common.world import build_corpus
    if (DEFAULT_TOKENIZER_DIR / HF_FILE).is_file():
        tok, where = load_tokenizer(), str(DEFAULT_TOKENIZER_DIR)
    else:  # no trained tokenizer yet: learn a small one in a couple of seconds
        tok, where = train_bpe(build_corpus(0.3, seed=1)[0], DEFAULT_VOCAB), "a 0.3 MB world corpus (not saved)"
    print(f"tokenizer: {where}, vocab_size={tok.vocab_size}")
    text = "小明有3个苹果, Tom has 12345 apples. 🍎!"
    print(f"\ntext:   {text}\nbytes:  {len(text.encode())} UTF-8 bytes for {len(text)} characters "
          f"(a Han character is 3 bytes, the emoji 4)")
    print("chunks: " + " | ".join(SPLIT_RE.findall(text)) + "   (the regex pre-split; merges never cross a |)")
    ids = tok.encode(text)
    print("tokens: " + "|".join(tok.token_str(i) for i in ids))
    print(f"ids:    {ids}\n{len(ids)} tokens, {len(text.encode()) / len(ids):.2f} bytes/token; "
          f"decode(encode(text)) == text: {tok.decode(ids) == text}")
    print("\nbytes → merges → token, for the chunk ' apples' (lowest-rank merge first):")
    print("  bytes:         " + "|".join(tok.token_str(b) for b in b" apples"))
    tok._bpe(" apples".encode(), trace=lambda rank, ids: print(f"  merge rank {rank:3d}: " + "|".join(map(tok.token_str, ids))))
    chat = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "<image>\n图中有几个图形？"},
            {"role": "assistant", "content": "图中有2个图形。"}]
    ids, mask = tok.render_conversation(chat)
    print("\nchat template (tokens the loss trains on are in [brackets]):")
    print("".join(f"[{tok.token_str(i)}]" if m else tok.token_str(i) for i, m in zip(ids, mask)))
    print(f"{len(ids)} tokens, {sum(mask)} of them trained (mask=1)")


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


def bytes_per_token(texts, encode) -> float:
    """UTF-8 bytes per token over some texts, `encode(text) -> ids`: higher = shorter sequences for the model."""
    return sum(len(t.encode("utf-8")) for t in texts) / max(1, sum(len(encode(t)) for t in texts))


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


def plot_curve(rows, png: Path, title: str) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([r[0] for r in rows], [r[1] for r in rows], "o-", label="ours (step1_tokenizer)")
    ax.plot([r[0] for r in rows], [r[2] for r in rows], "x--", label="Hugging Face tokenizers BPE")
    ax.set_xlabel("vocabulary size")
    ax.set_ylabel("bytes per token (val)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


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


def show(name, pieces, n_bytes):
    print(f"{name:<6} {len(pieces):3d} tokens, {n_bytes / max(1, len(pieces)):.2f} bytes/token: " + "|".join(pieces))


def read_stdin() -> str:
    """Text piped in (`echo 你好 | python demo.py`); nothing when stdin is a terminal or stays silent."""
    import select
    if sys.stdin is None or sys.stdin.isatty():
        return ""
    try:
        ready, _, _ = select.select([sys.stdin], [], [], 1.0)
    except (OSError, ValueError):  # not selectable (Windows console, notebooks): do not risk blocking
        return ""
    return sys.stdin.read() if ready else ""


def main():
    from common.cli import course_parser
    from common.world import build_corpus
    p = course_parser("Tokenize text with our BPE and with Hugging Face BPE trained the same way; plot "
                      "compression vs vocabulary size.", out=str(RUNS_DIR / "tokenizer"))
    p.add_argument("--text", default=None, help="要切分的文本 text to tokenize (default: stdin, or an example)")
    p.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB, help="词表大小 vocab size of both tokenizers")
    p.add_argument("--world-mb", type=float, default=2.0, help="训练语料 size of the data-world corpus (MB)")
    args = p.parse_args()
    text = args.text if args.text is not None else read_stdin() or DEFAULT_TEXT
    if not text.strip():
        raise CourseError("nothing to tokenize: --text is empty")
    mb = 0.3 if args.quick else args.world_mb
    train, val = build_corpus(mb, args.seed)

    # Both trained here on the same corpus (ours takes well under a second), so the comparison is fair.
    ours, where = train_bpe(train, args.vocab_size), f"trained now on {mb:g} MB of the world"
    t0 = time.perf_counter()
    hf = train_hf_bpe(train, args.vocab_size)
    print(f"ours: {where} (vocab {ours.vocab_size}); Hugging Face: trained on {mb:g} MB of the world in "
          f"{time.perf_counter() - t0:.2f} s (vocab {hf.get_vocab_size()})\n")
    n_bytes = len(text.encode("utf-8"))
    print(f"text: {text!r} — {len(text)} characters, {n_bytes} UTF-8 bytes")
    show("ours", [ours.token_str(i) for i in ours.encode(text)], n_bytes)
    hf_ids = hf.encode(text, add_special_tokens=False).ids
    show("HF", [hf_piece(hf, i) for i in hf_ids], n_bytes)
    print("(a piece shown as \\x.. is part of one character, e.g. a rare 汉字 or an emoji, split into bytes)")

    sizes = [300, 512, 768, 1024] if args.quick else [300, 400, 512, 640, 768, 896, 1024, 1536]
    rows = compression_curve(train, val, sizes)
    print("\nvocab  bytes/token ours  bytes/token HF")
    for v, a, b in rows:
        print(f"{v:5d}  {a:16.3f}  {b:14.3f}")
    png = plot_curve(rows, Path(args.out) / "compression_vs_vocab.png", f"data world, {mb:g} MB, seed {args.seed}")
    print(f"plot: {png}")


if __name__ == "__main__":
    from common.cli import run
    run(main)
