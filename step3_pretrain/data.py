"""Pretraining data: where the text comes from, which tokenizer turns it into ids, and the token file on disk.

Text sources (train.py --data):
    (none)            the data world (common.world): train.txt / val.txt, one document per line
    a.txt b.txt       plain text; each file is one document
    pretrain.jsonl    minimind-style JSON lines {"text": "..."}; a folder means the .txt/.jsonl files inside
    hf:NAME           a Hugging Face dataset's "text" column (needs the `datasets` package and network)
For --data sources the first 90% of the tokens train and the last 10% validate (nanoGPT's split).

Tokenized once: documents become `encode(doc) + [eos]` (BPE) or raw characters (char), and the ids are written
to one uint16/uint32 file that later runs open with np.memmap — no re-tokenizing, no loading it into memory.
The file's name is a hash of the sources and of the tokenizer, so changing either makes a new one.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from common import RUNS_DIR
from common.errors import CourseError

DEFAULT_CACHE_DIR = RUNS_DIR / "tokens"
CACHE_VERSION = 1
CHAR_FILE = "char_tokenizer.json"


# ----------------------------------------------------------------------------------------------------
# A character tokenizer, for character-level runs such as tiny-shakespeare (nanoGPT's benchmark)


class CharTokenizer:
    """One id per distinct character of the text, in sorted order. No special tokens: a character stream
    has no document boundaries. Saves itself as char_tokenizer.json inside the checkpoint folder."""

    special_tokens: dict = {}
    pad_id = bos_id = eos_id = None

    def __init__(self, chars):
        self.chars = "".join(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}
        self.vocab_size = len(self.chars)

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        if not text:
            raise CourseError("the corpus is empty: there are no characters to build a vocabulary from")
        return cls(sorted(set(text)))

    def encode(self, text: str, allow_special: bool = False) -> list:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as e:
            raise CourseError(f"character {e.args[0]!r} is not in this character vocabulary "
                              f"({self.vocab_size} characters)") from None

    def decode(self, ids, skip_special: bool = False) -> str:
        return "".join(self.chars[int(i)] for i in ids if 0 <= int(i) < self.vocab_size)

    def save(self, folder) -> Path:
        path = Path(folder) / CHAR_FILE
        path.write_text(json.dumps({"type": "char", "chars": self.chars}, ensure_ascii=False), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path) -> "CharTokenizer":
        path = Path(path)
        file = path / CHAR_FILE if path.is_dir() else path
        try:
            d = json.loads(file.read_text(encoding="utf-8"))
            assert d["type"] == "char"
            return cls(d["chars"])
        except (OSError, ValueError, KeyError, AssertionError):
            raise CourseError(f"{file} is not a character tokenizer file") from None


def load_any_tokenizer(folder):
    """The tokenizer saved in a checkpoint folder: characters, or step 1's BPE."""
    if (Path(folder) / CHAR_FILE).is_file():
        return CharTokenizer.load(folder)
    from step1_tokenizer.model import Tokenizer
    return Tokenizer.load(folder)


def tokenizer_fingerprint(tok) -> str:
    """A hash of what the tokenizer saves: two tokenizers with the same files give the same ids."""
    h = hashlib.sha256()
    with tempfile.TemporaryDirectory() as d:
        tok.save(d)
        for f in sorted(Path(d).iterdir()):
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def resolve_tokenizer(name, quick: bool, cache_dir, world_texts=None):
    """`--tokenizer`: "char" (handled by the caller, it needs the text), a folder/file, or the default
    runs/tokenizer. With --quick a missing default is replaced by a small BPE trained here in seconds."""
    from step1_tokenizer.model import DEFAULT_TOKENIZER_DIR, load_tokenizer
    if name:
        return load_tokenizer(name)
    if (Path(DEFAULT_TOKENIZER_DIR) / "tokenizer.json").is_file():
        return load_tokenizer(DEFAULT_TOKENIZER_DIR)
    if not quick:
        raise CourseError(f"no tokenizer at {DEFAULT_TOKENIZER_DIR}; make it first with: "
                          "python step1_tokenizer/train.py   (or pass --quick to train a small one here)")
    quick_dir = Path(cache_dir) / "tokenizer-quick"
    if (quick_dir / "tokenizer.json").is_file():
        return load_tokenizer(quick_dir)
    from step1_tokenizer.train import train_bpe
    print(f"--quick: no tokenizer at {DEFAULT_TOKENIZER_DIR}; training a small one (vocab 512) into {quick_dir}")
    tok = train_bpe(world_texts(), 512)
    tok.save(quick_dir)
    return tok


# ----------------------------------------------------------------------------------------------------
# Reading documents


def expand_paths(items) -> list:
    """--data arguments → a sorted list of files (folders expanded), or ["hf:NAME"] entries kept as they are."""
    out = []
    for item in items:
        if str(item).startswith("hf:"):
            out.append(str(item))
            continue
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix in (".txt", ".jsonl") and f.is_file())
            if not files:
                raise CourseError(f"--data {item}: the folder holds no .txt or .jsonl files")
            out.extend(files)
        elif p.is_file():
            if p.suffix not in (".txt", ".jsonl"):
                raise CourseError(f"--data {item}: unsupported file type {p.suffix!r}; give .txt or .jsonl "
                                  "(minimind-style {\"text\": ...} lines)")
            out.append(p)
        else:
            raise CourseError(f"--data {item}: no such file or folder")
    return out


def read_documents(path):
    """Yield the documents of one source. JSONL lines must be objects with a string "text" field; a line
    that is not says so with its file and line number."""
    if isinstance(path, str) and path.startswith("hf:"):
        yield from _hf_documents(path[3:])
        return
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            if path.suffix == ".txt":
                yield f.read()
                return
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise CourseError(f"{path}:{n}: malformed JSON line ({e.msg})") from None
                if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                    raise CourseError(f"{path}:{n}: expected an object with a string \"text\" field, "
                                      f"got {line.strip()[:60]!r}")
                yield obj["text"]
    except UnicodeDecodeError:
        raise CourseError(f"{path} is not UTF-8 text") from None


def _hf_documents(name: str):
    """A Hugging Face dataset's train split, "text" column. Imported lazily: tests and the default run never
    need the `datasets` package or the network."""
    try:
        import datasets
    except ImportError:
        raise CourseError("--data hf:... needs the `datasets` package: pip install datasets") from None
    try:
        ds = datasets.load_dataset(name, split="train", streaming=True)
        for row in ds:
            yield row["text"]
    except Exception as e:  # offline, unknown name, no "text" column: all user-facing
        raise CourseError(f"could not read Hugging Face dataset {name!r} ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:120]}); is the machine online and the name right?") from None


# ----------------------------------------------------------------------------------------------------
# The token file


class TokenData:
    """Train and val token streams as read-only memmaps over one file, plus what made them."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        mm = np.memmap(self.folder / "tokens.bin", dtype=self.meta["dtype"], mode="r")
        self.train, self.val = mm[:self.meta["n_train"]], mm[self.meta["n_train"]:]

    def __repr__(self):
        return f"TokenData({self.folder.name}: {len(self.train):,} train + {len(self.val):,} val tokens)"


def _encode_stream(tok, docs, char_mode: bool):
    """Ids of each document; BPE documents end with eos so the model learns where a text stops."""
    for doc in docs:
        ids = tok.encode(doc)
        if not char_mode:
            ids.append(tok.eos_id)
        yield ids


def build_token_file(sources_key: dict, train_docs, val_docs, tok, cache_dir, val_fraction: float = 0.1) -> TokenData:
    """Tokenize once into `cache_dir/<hash>/tokens.bin` (reused when it exists). `train_docs`/`val_docs` are
    callables returning iterables; val_docs=None splits the end of the train stream off instead."""
    char_mode = isinstance(tok, CharTokenizer)
    key = {"version": CACHE_VERSION, "sources": sources_key, "tokenizer": tokenizer_fingerprint(tok),
           "val_fraction": None if val_docs else val_fraction}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    folder = Path(cache_dir) / f"{sources_key.get('name', 'data')}-{digest}"
    if (folder / "meta.json").is_file():
        return TokenData(folder)
    dtype = np.uint16 if tok.vocab_size <= 2**16 else np.uint32  # 2 bytes per token when the vocab fits
    tmp = Path(cache_dir) / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    counts = []
    with open(tmp / "tokens.bin", "wb") as f:
        for docs in ([train_docs] + ([val_docs] if val_docs else [])):
            n = 0
            for ids in _encode_stream(tok, docs(), char_mode):
                np.asarray(ids, dtype=dtype).tofile(f)
                n += len(ids)
            counts.append(n)
    total = sum(counts)
    if total == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CourseError("the corpus is empty: no text in the given --data (or the data world came out empty)")
    n_train = counts[0] if val_docs else int(total * (1 - val_fraction))
    meta = {**key, "dtype": np.dtype(dtype).name, "n_train": n_train, "n_val": total - n_train,
            "vocab_size": tok.vocab_size}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)  # atomic: a killed run never leaves a half-written token file under the real name
    return TokenData(folder)


def prepare_data(data, tokenizer: str | None, quick: bool, cache_dir, world_mb: float, seed: int):
    """Everything train.py needs before the model: (tokenizer, TokenData, a short description)."""
    from common.world import corpus_files
    cache_dir = Path(cache_dir or DEFAULT_CACHE_DIR)
    if data:
        paths = expand_paths(data)
        key = {"name": "data", "files": [p if isinstance(p, str) else (str(p.resolve()), p.stat().st_size,
                                                                         p.stat().st_mtime_ns) for p in paths]}
        train_docs = lambda: (d for p in paths for d in read_documents(p))
        val_docs, what = None, " ".join(map(str, data))
    else:
        train_path, val_path = corpus_files(world_mb, seed=1337)  # the world is fixed; --seed is the run's seed
        key = {"name": f"world-{world_mb:g}mb", "files": [str(train_path), str(val_path)]}
        lines = lambda p: (ln for ln in Path(p).read_text(encoding="utf-8").splitlines() if ln)
        train_docs, val_docs = (lambda: lines(train_path)), (lambda: lines(val_path))
        what = f"data world {world_mb:g} MB ({train_path.parent})"
    if tokenizer == "char":
        if data:  # the vocabulary is every character of the text (nanoGPT does the same)
            tok = CharTokenizer.from_text("".join(set("".join(train_docs()))))
        else:
            tok = CharTokenizer.from_text(train_path.read_text(encoding="utf-8") + val_path.read_text(encoding="utf-8"))
            train_docs = lambda: [train_path.read_text(encoding="utf-8")]
            val_docs = lambda: [val_path.read_text(encoding="utf-8")]
    else:
        tok = resolve_tokenizer(tokenizer, quick, cache_dir, world_texts=lambda: list(train_docs())[:20000])
    return tok, build_token_file(key, train_docs, val_docs, tok, cache_dir), what


def check_enough(td: TokenData, seq_len: int) -> None:
    """One clear sentence instead of an index error deep in the loop."""
    for name, stream, need in (("training", td.train, seq_len + 2), ("validation", td.val, seq_len + 1)):
        if len(stream) < need:
            raise CourseError(f"the {name} split has only {len(stream)} tokens, but one window of --seq-len "
                              f"{seq_len} needs {need}; give more text or lower --seq-len")


# ----------------------------------------------------------------------------------------------------
# Small helpers of train.py


def sample_prompts(tok, data: TokenData) -> list:
    """What train.py continues at each eval: two world openings, or the start of the validation text."""
    if str(data.meta["sources"].get("name", "")).startswith("world"):
        return ["小明有", "There are"]
    return [tok.decode(data.val[:16].tolist())]
