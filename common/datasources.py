"""The `--data` reader every step's loader builds on: files and folders, text / JSON / JSON lines, conversations
in the common formats, and Hugging Face datasets by name — each bad input named by file and line.

    expand_paths(["a.txt", "folder/", "hf:NAME"], suffixes=(".txt", ".jsonl"))   # → files, hf: entries kept
    read_text(path) / read_lines(path)       # UTF-8, or one sentence with the byte offset
    records(path)                            # (where, object) from a .jsonl or .json file
    conversation(obj, where)                 # {"conversations"|"messages": [...]} → [{"role", "content"}]
    hf_rows("hf:NAME", split="train")        # rows of a Hugging Face dataset (network, or a local copy)
"""
import json
from pathlib import Path

from common.errors import CourseError

# Role names of the formats in use: ChatML / OpenAI / minimind ("role") and ShareGPT / LLaVA ("from").
ROLE_ALIASES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
                "bot": "assistant", "model": "assistant"}


def expand_paths(items, suffixes=(".txt", ".jsonl"), what: str = "--data") -> list:
    """`--data` arguments → files in the given order (a folder: its files with these suffixes, sorted);
    "hf:NAME" entries are kept as strings for `hf_rows`."""
    out = []
    for item in items:
        if str(item).startswith("hf:"):
            out.append(str(item))
            continue
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.suffix in suffixes and f.is_file())
            if not files:
                raise CourseError(f"{what} {item}: the folder holds no {'/'.join(suffixes)} files")
            out.extend(files)
        elif p.is_file():
            if p.suffix not in suffixes:
                raise CourseError(f"{what} {item}: unsupported file type {p.suffix or '(none)'!r}; "
                                  f"give {' or '.join(suffixes)} files")
            out.append(p)
        else:
            raise CourseError(f"{what} {item}: no such file or folder")
    if not out:
        raise CourseError(f"{what}: no files given")
    return out


def read_text(path) -> str:
    """A whole UTF-8 file. Invalid UTF-8 is an error naming the file and byte offset, not a silent
    replacement that would feed garbage to a tokenizer or a model."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise CourseError(f"cannot read {path} ({e.strerror or e})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CourseError(f"{path} is not valid UTF-8 at byte offset {e.start} "
                          f"(bytes {raw[e.start:e.start + 4]!r}); convert it to UTF-8 first") from None


def read_lines(path) -> list:
    return read_text(path).splitlines()


def records(path):
    """Yield (where, object) for each record of a .jsonl file (one JSON value per line, blank lines skipped)
    or a .json file (a list of values, or one value). `where` is "file:line" or "file[entry]"."""
    path = Path(path)
    text = read_text(path)
    if path.suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                yield f"{path}:{n}", json.loads(line)
            except json.JSONDecodeError as e:
                raise CourseError(f"{path}:{n}: malformed JSON line ({e.msg} at column {e.colno})") from None
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise CourseError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    for k, obj in enumerate(data if isinstance(data, list) else [data]):
        yield f"{path}[{k}]", obj


def text_field(obj, where: str, key: str = "text") -> str:
    """The string field of a record, or one sentence saying what the record is instead."""
    if not isinstance(obj, dict) or not isinstance(obj.get(key), str):
        raise CourseError(f"{where}: expected an object with a string {key!r} field, got {json.dumps(obj, ensure_ascii=False)[:60]}")
    return obj[key]


def conversation(obj, where: str) -> list:
    """A conversation in any of the usual formats → [{"role": system|user|assistant, "content": str}]:
    minimind's {"conversations": [{"role", "content"}]}, ShareGPT/LLaVA's {"conversations": [{"from", "value"}]},
    OpenAI's {"messages": [...]}, or a bare list of turns. Content given as OpenAI text parts is joined."""
    turns = obj.get("conversations", obj.get("messages")) if isinstance(obj, dict) else obj
    if not isinstance(turns, list) or not turns:
        raise CourseError(f"{where}: expected {{\"conversations\": [...]}} or {{\"messages\": [...]}} with at "
                          f"least one turn, got {json.dumps(obj, ensure_ascii=False)[:60]}")
    out = []
    for k, t in enumerate(turns):
        if not isinstance(t, dict):
            raise CourseError(f"{where}: turn {k} is not an object")
        role, content = t.get("role", t.get("from")), t.get("content", t.get("value"))
        if role not in ROLE_ALIASES:
            raise CourseError(f"{where}: turn {k} has unknown role {role!r}; use one of {sorted(ROLE_ALIASES)}")
        if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
            content = "".join(str(p.get("text", "")) for p in content)
        if not isinstance(content, str):
            raise CourseError(f"{where}: turn {k} has no text content (\"content\" or \"value\" must be a string)")
        out.append({"role": ROLE_ALIASES[role], "content": content})
    return out


def hf_rows(source: str, split: str | None = "train", limit: int | None = None, streaming: bool = False):
    """Rows (dicts) of a Hugging Face dataset. `source` is "hf:NAME" (the hub, or its local cache) or "hf:PATH"
    of a folder written by `Dataset.save_to_disk`. split=None: "train", or the only split a saved dataset has
    (flickr30k ships only "test"). `datasets` is imported only here: the default runs and the tests never need
    it, nor the network."""
    name = source[3:] if source.startswith("hf:") else source
    try:
        import datasets
    except ImportError:
        raise CourseError(f"--data hf:{name} needs the `datasets` package: pip install datasets") from None
    try:
        if Path(name).is_dir() and any(Path(name).glob("*.json")):
            ds = datasets.load_from_disk(name)
            if isinstance(ds, datasets.DatasetDict):
                if split is None:
                    split = "train" if "train" in ds or len(ds) != 1 else next(iter(ds))
                if split not in ds:
                    raise CourseError(f"--data hf:{name} has the splits {sorted(ds)}, not {split!r}; pass --split")
                ds = ds[split]
        else:
            ds = datasets.load_dataset(name, split=split or "train", streaming=streaming)
    except CourseError:
        raise
    except Exception as e:  # offline, unknown name, missing split: all the user's to fix
        first = (str(e).splitlines() or [""])[0][:160]
        raise CourseError(f"could not load Hugging Face dataset {name!r}, split {split!r} ({type(e).__name__}: "
                          f"{first}); it needs network or a local copy (hf:FOLDER saved with save_to_disk)") from None
    for i, row in enumerate(ds):
        if limit is not None and i >= limit:
            break
        yield row
