"""A character tokenizer, for character-level runs such as tiny-shakespeare (nanoGPT's benchmark): one id per
distinct character, no merges, no special tokens."""
import json
from pathlib import Path

from common.errors import CourseError

CHAR_FILE = "char_tokenizer.json"


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
