"""Pretraining data: where the text comes from, which tokenizer turns it into ids, and the token file on disk.

Text sources (train.py --data):
    (none)            the data world (common.world): train.txt / val.txt, one document per line
    a.txt b.txt       plain text; each file is one document
    pretrain.jsonl    minimind-style JSON lines {"text": "..."}; a folder means the .txt/.jsonl files inside
    hf:NAME           a Hugging Face dataset's "text" column (needs the `datasets` package, and network or a local copy)
For --data sources the first 90% of the tokens train and the last 10% validate (nanoGPT's split).

Tokenized once: documents become `encode(doc) + [eos]` (BPE) or raw characters (char), and the ids are written
to one uint16/uint32 file that later runs open with np.memmap — no re-tokenizing, no loading it into memory.
The file's name is a hash of the sources and of the tokenizer, so changing either makes a new one.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np

from common import RUNS_DIR
from common.datasources import expand_paths, hf_rows, read_text, records, text_field
from common.errors import CourseError
from common.files import atomic_folder
from step1_tokenizer.char import CharTokenizer
from step1_tokenizer.model import course_tokenizer

DEFAULT_CACHE_DIR = RUNS_DIR / "tokens"
CACHE_VERSION = 1


def tokenizer_fingerprint(tok) -> str:
    """A hash of what the tokenizer saves: two tokenizers with the same files give the same ids."""
    h = hashlib.sha256()
    with tempfile.TemporaryDirectory() as d:
        tok.save(d)
        for f in sorted(Path(d).iterdir()):
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------
# Reading documents


def read_documents(source):
    """Yield the documents of one --data source: a .txt file is one document; a .jsonl file holds one object
    with a string "text" field per line (minimind's pretraining format); "hf:NAME" a dataset's "text" column."""
    if isinstance(source, str) and source.startswith("hf:"):
        for k, row in enumerate(hf_rows(source, streaming=True)):
            yield text_field(row, f"{source} row {k}")
    elif Path(source).suffix == ".txt":
        yield read_text(source)
    else:
        for where, obj in records(source):
            yield text_field(obj, where)


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
    with atomic_folder(folder) as tmp:  # a killed run never leaves a half-written token file under the real name
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
            raise CourseError("the corpus is empty: no text in the given --data (or the data world came out empty)")
        n_train = counts[0] if val_docs else int(total * (1 - val_fraction))
        meta = {**key, "dtype": np.dtype(dtype).name, "n_train": n_train, "n_val": total - n_train,
                "vocab_size": tok.vocab_size}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    return TokenData(folder)


def prepare_data(data, tokenizer: str | None, quick: bool, cache_dir, world_mb: float, seed: int):
    """Everything train.py needs before the model: (tokenizer, TokenData, a short description)."""
    from common.world import corpus_files
    cache_dir = Path(cache_dir or DEFAULT_CACHE_DIR)
    if data:
        paths = expand_paths(data, suffixes=(".txt", ".jsonl"))
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
    else:  # step 1's tokenizer (or the one named); a --quick run without it uses step 1's small stand-in
        tok = course_tokenizer(tokenizer, fallback=quick)
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
