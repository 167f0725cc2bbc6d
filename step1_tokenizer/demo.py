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
from step1_tokenizer.model import DEFAULT_VOCAB, train_bpe
from step1_tokenizer.hf_bpe import compression_curve, hf_piece, train_hf_bpe

DEFAULT_TEXT = "小明有3个苹果，吃了1个，还剩2个。Tom has 12 red circles and 3 blue stars! 🍎"


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
                      "compression vs vocabulary size.", "seed", "quick")
    p.add_argument("--plot", default=str(RUNS_DIR / "tokenizer_demo" / "compression_vs_vocab.png"),
                   help="图 where to write the compression plot (PNG)")
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
    png = plot_curve(rows, Path(args.plot), f"data world, {mb:g} MB, seed {args.seed}")
    print(f"plot: {png}")


if __name__ == "__main__":
    from common.cli import run
    run(main)
