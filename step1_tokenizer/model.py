"""A byte-level BPE tokenizer written from scratch: encode/decode, special tokens, the chat template with its
loss mask, and save/load as a Hugging Face `tokenizer.json` that encodes to the very same ids.

    python model.py --demo      # bytes → merges → tokens on a mixed 中文/English sentence, and a chat with its mask

Id layout: 0..255 are the raw UTF-8 bytes (so every string can be encoded: no unknown token), then one id per
learned merge, then the special tokens at the very end. Merges are learned in bpe.py;
`train_bpe` below wraps them into a Tokenizer.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import json
from pathlib import Path

import regex  # the `regex` package: \p{...} Unicode classes and possessive quantifiers, like Hugging Face's Oniguruma

from common import RUNS_DIR
from common.errors import CourseError
from common.files import atomic_folder
from step1_tokenizer.bpe import SPLIT_PATTERN, SPLIT_RE, learn_merges
from step1_tokenizer.char import CHAR_FILE, CharTokenizer


# Special tokens are never produced from plain text and never split. Order = id order after the merges.
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|eos|>", "<|im_start|>", "<|im_end|>", "<image>", "<num>"]
ROLES = ("system", "user", "assistant")
DEFAULT_TOKENIZER_DIR = RUNS_DIR / "tokenizer"
# The data world has ~140 English words and ~130 Han characters: with one Han character per chunk (bpe.py)
# it supports only ~1 000 tokens in all; the README's table shows how compression levels off before that.
DEFAULT_VOCAB = 896
# The stand-in a quick run or a demo trains when step 1 has not been run: small, made in about a second.
QUICK_VOCAB, QUICK_WORLD_MB = 512, 0.3
QUICK_TOKENIZER_DIR = RUNS_DIR / "tokenizer-quick"
HF_FILE = "tokenizer.json"           # Hugging Face format: what transformers loads
COURSE_FILE = "bpe.json"             # our own format: the merges as id pairs, nothing else
COURSE_FORMAT = "zero-to-vlm byte-level BPE v1"


def bytes_to_unicode() -> dict:
    """GPT-2's printable stand-in for each byte (Hugging Face's ByteLevel uses the same table): bytes that are
    visible characters map to themselves, the other 68 to chr(256 + k). A token's bytes become a JSON-safe,
    space-free string this way (a space is 'Ġ'), which is how tokenizer.json stores byte-level vocabularies."""
    visible = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
    hidden = [b for b in range(256) if b not in visible]
    return {**{b: chr(b) for b in visible}, **{b: chr(256 + k) for k, b in enumerate(hidden)}}


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


class Tokenizer:
    """Byte-level BPE. `merges[i] = (a, b)` is the rule of rank i: the adjacent tokens a, b become one token.
    The new token's id is the next free id, unless its bytes already are a token (then that id is reused, as
    Hugging Face does: one string, one id — the exported vocab could not hold two)."""

    def __init__(self, merges, special_tokens=SPECIAL_TOKENS):
        missing = [s for s in SPECIAL_TOKENS if s not in special_tokens]
        if missing or len(set(special_tokens)) != len(special_tokens):
            raise CourseError(f"the special tokens must include {SPECIAL_TOKENS}, each once; got {list(special_tokens)}")
        self.vocab = [bytes([b]) for b in range(256)]          # id → bytes
        ids_of = {t: i for i, t in enumerate(self.vocab)}      # bytes → id
        self.merges, self.ranks = [], {}                       # ranks: (a, b) → (rank, new id)
        for a, b in merges:
            a, b = int(a), int(b)
            if not (0 <= a < len(self.vocab) and 0 <= b < len(self.vocab)) or (a, b) in self.ranks:
                raise CourseError(f"merge {len(self.merges)} ({a}, {b}) is not valid: unknown token or repeated pair")
            new = self.vocab[a] + self.vocab[b]
            if new not in ids_of:
                ids_of[new] = len(self.vocab)
                self.vocab.append(new)
            self.ranks[(a, b)] = (len(self.merges), ids_of[new])
            self.merges.append((a, b))
        self.special_tokens = {s: len(self.vocab) + i for i, s in enumerate(special_tokens)}
        self.id_to_special = {i: s for s, i in self.special_tokens.items()}
        self.vocab_size = len(self.vocab) + len(self.special_tokens)
        for name in ("pad", "bos", "eos", "im_start", "im_end"):
            setattr(self, f"{name}_id", self.special_tokens[f"<|{name}|>"])
        self.image_id, self.num_id = self.special_tokens["<image>"], self.special_tokens["<num>"]
        # Longest first, so a special token that is a prefix of another never wins (HF matches leftmost-longest).
        alternatives = sorted(self.special_tokens, key=len, reverse=True)
        self._special_re = regex.compile("(" + "|".join(regex.escape(s) for s in alternatives) + ")")
        self._cache = {}  # chunk → ids: real text repeats its chunks ("the", " is") over and over

    # ---------------------------------------------------------------------------------------------- encode
    def _bpe(self, chunk: bytes, trace=None) -> list:
        """Apply the merges to one chunk, always the lowest-rank pair first (the leftmost on a tie), one
        occurrence at a time — exactly the order Hugging Face's BPE model uses, so the ids always agree.
        `trace(rank, ids)` is called after each merge (model.py --demo prints the steps)."""
        ids = list(chunk)
        while len(ids) > 1:
            best = None
            for i in range(len(ids) - 1):
                hit = self.ranks.get((ids[i], ids[i + 1]))
                if hit is not None and (best is None or hit[0] < best[0]):
                    best, at = hit, i
            if best is None:
                break  # no learned pair left in this chunk
            ids[at:at + 2] = [best[1]]
            if trace:
                trace(best[0], ids)
        return ids

    def encode_ordinary(self, text: str) -> list:
        """Plain text → ids. Special-token strings in it are just characters here."""
        ids, cache = [], self._cache
        for chunk in SPLIT_RE.findall(text):
            hit = cache.get(chunk)
            if hit is None:
                try:
                    hit = cache[chunk] = self._bpe(chunk.encode("utf-8"))
                except UnicodeEncodeError:  # a lone surrogate such as "\ud800": not valid Unicode text
                    raise CourseError(f"cannot encode {chunk!r}: it holds a lone surrogate, which is not text") from None
                if len(cache) > 500_000:  # bound the memory on huge, varied corpora
                    cache.clear()
            ids.extend(hit)
        return ids

    def encode(self, text: str, allow_special: bool = False) -> list:
        """allow_special=False: "<|eos|>" typed by a user is 7 ordinary characters (no prompt injection).
        allow_special=True: special-token strings become their single ids, as in Hugging Face by default."""
        if not isinstance(text, str):
            raise CourseError(f"encode expects a str, got {type(text).__name__}")
        if not allow_special:
            return self.encode_ordinary(text)
        ids = []
        for i, part in enumerate(self._special_re.split(text)):  # odd parts are the matched special tokens
            if i % 2:
                ids.append(self.special_tokens[part])
            elif part:
                ids.extend(self.encode_ordinary(part))
        return ids

    def decode(self, ids, skip_special: bool = False) -> str:
        """Concatenate the tokens' bytes, then decode UTF-8 once. A byte sequence cut in the middle of a
        character (a model can generate that) shows as U+FFFD instead of crashing."""
        out = bytearray()
        for i in ids:
            i = int(i)
            if 0 <= i < len(self.vocab):
                out += self.vocab[i]
            elif i in self.id_to_special:
                if not skip_special:
                    out += self.id_to_special[i].encode("utf-8")
            else:
                raise CourseError(f"token id {i} is outside this tokenizer's vocabulary of {self.vocab_size}")
        return out.decode("utf-8", errors="replace")

    def special_id(self, name: str) -> int:
        if name not in self.special_tokens:
            raise CourseError(f"unknown special token {name!r}; this tokenizer has {list(self.special_tokens)}")
        return self.special_tokens[name]

    def token_str(self, i: int) -> str:
        """A readable form of one token (for printing): its text, or its bytes when they are not whole UTF-8."""
        if i in self.id_to_special:
            return self.id_to_special[i]
        try:
            return self.vocab[i].decode("utf-8")
        except UnicodeDecodeError:
            return repr(self.vocab[i])[2:-1]

    # ------------------------------------------------------------------------------------------ chat template
    def render_conversation(self, messages, add_generation_prompt: bool = False):
        """ChatML: `<|im_start|>{role}\\n{content}<|im_end|>\\n` per message → (ids, mask).
        mask is 1 exactly on the assistant's content tokens and that turn's <|im_end|>: SFT trains the model to
        write answers (and to stop), not to imitate the user or the template. Each content is encoded on its
        own, so its tokens never fuse with the template around it and the mask boundary is exact. Special
        strings typed inside a content stay plain text, except `<image>` in a user turn: one image_id there."""
        ids, mask = [], []

        def add(new, m):
            ids.extend(new)
            mask.extend([m] * len(new))

        for k, msg in enumerate(messages):
            if not isinstance(msg, dict) or msg.get("role") not in ROLES or not isinstance(msg.get("content"), str):
                raise CourseError(f"message {k} must be {{'role': one of {ROLES}, 'content': str}}, got {msg!r}")
            role, content = msg["role"], msg["content"]
            add([self.im_start_id] + self.encode_ordinary(role + "\n"), 0)
            if role == "user":  # "<image>" → exactly one image_id; the VLM later expands it to patch features
                parts = content.split("<image>")
                body = self.encode_ordinary(parts[0])
                for p in parts[1:]:
                    body += [self.image_id] + self.encode_ordinary(p)
            else:
                body = self.encode_ordinary(content)
            is_answer = int(role == "assistant")
            add(body + [self.im_end_id], is_answer)
            add(self.encode_ordinary("\n"), 0)
        if add_generation_prompt:
            add([self.im_start_id] + self.encode_ordinary("assistant\n"), 0)
        return ids, mask

    # ------------------------------------------------------------------------------------------- save / load
    def to_hf_dict(self) -> dict:
        """The Hugging Face `tokenizers` JSON: the same split regex (Split) → bytes as characters (ByteLevel with
        its own regex off) → BPE with our vocab and merges in rank order; specials as added tokens, which HF
        cuts out of the text before anything else, as our encode(allow_special=True) does."""
        as_str = lambda i: "".join(BYTE_TO_CHAR[b] for b in self.vocab[i])
        return {
            "version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [{"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                              "normalized": False, "special": True} for s, i in self.special_tokens.items()],
            "normalizer": None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": SPLIT_PATTERN}, "behavior": "Isolated", "invert": False},
                {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                      "vocab": {as_str(i): i for i in range(len(self.vocab))},
                      "merges": [f"{as_str(a)} {as_str(b)}" for a, b in self.merges]},
        }

    def save(self, folder) -> Path:
        """Write our own file bpe.json (the merges as id pairs: all this tokenizer is), tokenizer.json (the same,
        in Hugging Face's format) and tokenizer_config.json (pad/bos/eos and the chat template for AutoTokenizer)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        ours = {"format": COURSE_FORMAT, "split_pattern": SPLIT_PATTERN, "special_tokens": list(self.special_tokens),
                "merges": self.merges}
        (folder / COURSE_FILE).write_text(json.dumps(ours, ensure_ascii=False), encoding="utf-8")
        (folder / HF_FILE).write_text(json.dumps(self.to_hf_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
        template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<|pad|>", "bos_token": "<|bos|>",
                  "eos_token": "<|eos|>", "chat_template": template, "clean_up_tokenization_spaces": False}
        (folder / "tokenizer_config.json").write_text(json.dumps(config, ensure_ascii=False, indent=1), encoding="utf-8")
        return folder / HF_FILE

    @classmethod
    def load(cls, path) -> "Tokenizer":
        """From a folder (bpe.json, else tokenizer.json), or one of those files. A file written by another
        tokenizer (GPT-2, BERT, ...) is refused: its ids would mean nothing to a model trained with ours."""
        path = Path(path)
        file = next((path / f for f in (COURSE_FILE, HF_FILE) if (path / f).is_file()), path) if path.is_dir() else path
        if not file.is_file():
            raise CourseError(f"no tokenizer at {path} (expected {HF_FILE}); run: python step1_tokenizer/train.py")
        foreign = CourseError(f"{file} was not written by this course's tokenizer (another model type or pre-split "
                              f"rule); train ours with: python step1_tokenizer/train.py")
        try:
            d = json.loads(file.read_text(encoding="utf-8"))
            if d.get("format") == COURSE_FORMAT and d["split_pattern"] == SPLIT_PATTERN:
                return cls(d["merges"], d["special_tokens"])
            pre = d["pre_tokenizer"]["pretokenizers"]
            ours = (d["model"]["type"] == "BPE" and pre[0]["pattern"]["Regex"] == SPLIT_PATTERN
                    and pre[1]["type"] == "ByteLevel" and not pre[1]["use_regex"])
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise foreign from None
        if not ours:
            raise foreign
        try:
            vocab = d["model"]["vocab"]
            merges = [m.split(" ") if isinstance(m, str) else m for m in d["model"]["merges"]]
            tok = cls([(vocab[a], vocab[b]) for a, b in merges],
                      [t["content"] for t in sorted(d["added_tokens"], key=lambda t: t["id"])])
            same = len(vocab) == len(tok.vocab) and all(bytes(CHAR_TO_BYTE[c] for c in s) == tok.vocab[i]
                                                        for s, i in vocab.items())
            same = same and all(tok.special_tokens[t["content"]] == t["id"] for t in d["added_tokens"])
        except (KeyError, ValueError, IndexError, TypeError) as e:
            raise CourseError(f"{file} is damaged: {e!r}") from None
        if not same:
            raise CourseError(f"{file} has ids that do not follow this course's id layout; retrain it")
        return tok


def render_conversation(tokenizer: Tokenizer, messages, add_generation_prompt: bool = False):
    """Function form of `Tokenizer.render_conversation`."""
    return tokenizer.render_conversation(messages, add_generation_prompt)


def train_bpe(texts, vocab_size: int, special_tokens=SPECIAL_TOKENS, progress=None, allow_smaller: bool = True) -> Tokenizer:
    """Learn a tokenizer of `vocab_size` entries from texts (bpe.learn_merges). Deterministic: the same texts
    always give the same tokenizer. When every chunk has become one token there is nothing left to merge:
    training ends there with a smaller vocabulary (check `tok.vocab_size`), or, with allow_smaller=False,
    that is an error saying how large a vocabulary the corpus supports."""
    special_tokens = list(special_tokens)
    return Tokenizer(learn_merges(texts, vocab_size, len(special_tokens), progress, allow_smaller), special_tokens)


def load_tokenizer(path=None):
    """The tokenizer saved at `path` (a folder or file; default runs/tokenizer/, made by step 1's train.py):
    our BPE, or a character tokenizer (char.py) for character-level runs."""
    path = Path(path) if path else DEFAULT_TOKENIZER_DIR
    if not path.exists():
        raise CourseError(f"no tokenizer at {path}; run: python step1_tokenizer/train.py")
    if (path / CHAR_FILE).is_file() or path.name == CHAR_FILE:
        return CharTokenizer.load(path)
    return Tokenizer.load(path)


def quick_tokenizer() -> Tokenizer:
    """The small stand-in for step 1's tokenizer (vocab QUICK_VOCAB, trained on QUICK_WORLD_MB of the data world):
    trained once, kept in runs/tokenizer-quick, the same on every machine (tests that want a fixed vocabulary
    use it whether or not step 1 has run)."""
    if (QUICK_TOKENIZER_DIR / HF_FILE).is_file():
        return Tokenizer.load(QUICK_TOKENIZER_DIR)
    from common.world import build_corpus
    tok = train_bpe(build_corpus(QUICK_WORLD_MB, seed=1337)[0], QUICK_VOCAB)
    with atomic_folder(QUICK_TOKENIZER_DIR) as tmp:
        tok.save(tmp)
    return tok


def course_tokenizer(path=None, *, fallback: bool = False, say=print) -> Tokenizer:
    """The tokenizer a step uses: `path` if given, else step 1's runs/tokenizer. When that does not exist
    and `fallback` is set (a --quick run, a demo), a small stand-in (vocab QUICK_VOCAB, trained on
    QUICK_WORLD_MB of the data world) is trained once, kept in runs/tokenizer-quick and reused; `say` is told.
    Without `fallback`, a missing tokenizer is an error naming the command that makes it."""
    if path is not None:
        return load_tokenizer(path)
    if (DEFAULT_TOKENIZER_DIR / HF_FILE).is_file():
        return Tokenizer.load(DEFAULT_TOKENIZER_DIR)
    if not fallback:
        raise CourseError(f"no tokenizer at {DEFAULT_TOKENIZER_DIR}; make it first with: "
                          "python step1_tokenizer/train.py   (or pass --quick to use a small stand-in)")
    tok = quick_tokenizer()
    if say:
        say(f"no tokenizer at {DEFAULT_TOKENIZER_DIR} (python step1_tokenizer/train.py makes it): using the "
            f"{tok.vocab_size}-token stand-in in {QUICK_TOKENIZER_DIR}")
    return tok


# ----------------------------------------------------------------------------------------------------
# python model.py --demo


def demo():
    """`python model.py --demo`: what BPE does to one mixed sentence, and a chat template with its mask."""
    tok = course_tokenizer(fallback=True)
    print(f"tokenizer: vocab_size={tok.vocab_size}")
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


def main():
    from common.cli import demo_parser, wants_demo
    if wants_demo(demo_parser("Byte-level BPE tokenizer (the model of step 1): a sentence through bytes, merges "
                              "and tokens, and a chat with its loss mask.")):
        demo()


if __name__ == "__main__":
    from common.cli import run
    run(main)
