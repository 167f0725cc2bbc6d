"""Save/load and exact parity with Hugging Face: the exported tokenizer.json gives the very same ids."""
import json

import pytest
from hypothesis import given, settings, strategies as st

from common.errors import CourseError
from step1_tokenizer.model import SPECIAL_TOKENS, Tokenizer, load_tokenizer

EXTRA = ["hello 世界 🍎 12345678 <|im_start|>user\nhi<|im_end|><image>x<num>", "  \n\n\t x\r\n  ", "don't WE'LL 3.14159",
         "ｆｕｌｌ　ｗｉｄｔｈ：１２３ — “quotes” ½ ① ٣٤٥", "<|im_start|><|im_start|>><<image>>", "naïve café Ελληνικά Русский 日本語のテキスト"]


@pytest.fixture(scope="module")
def saved(tok, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    tok.save(folder)
    return folder


@pytest.fixture(scope="module")
def hf(saved):
    from transformers import PreTrainedTokenizerFast
    return PreTrainedTokenizerFast(tokenizer_file=str(saved / "tokenizer.json"))


def test_save_load_roundtrip(tok, saved):
    assert {"bpe.json", "tokenizer.json", "tokenizer_config.json"} <= {p.name for p in saved.iterdir()}
    for path in (saved, saved / "tokenizer.json", saved / "bpe.json"):
        again = Tokenizer.load(path)
        assert again.merges == tok.merges and again.vocab == tok.vocab and again.special_tokens == tok.special_tokens
    assert load_tokenizer(saved).encode("图中有2个图形。") == tok.encode("图中有2个图形。")


def test_hf_parity_on_val_lines_with_and_without_specials(tok, hf, world_small):
    lines = world_small[1] + EXTRA
    for line in lines:
        assert hf.encode(line, add_special_tokens=False) == tok.encode(line, allow_special=True), line
    for line in world_small[1][:100]:  # the same lines wrapped in specials, as pretraining/SFT see them
        wrapped = f"<|bos|>{line}<|eos|><|im_start|>user\n<image>{line}<|im_end|>"
        assert hf.encode(wrapped, add_special_tokens=False) == tok.encode(wrapped, allow_special=True)
        assert hf.decode(tok.encode(wrapped, allow_special=True)) == wrapped


@settings(max_examples=150, deadline=None)
@given(text=st.lists(st.one_of(st.text(st.characters(blacklist_categories=("Cs",)), max_size=40),
                               st.sampled_from(SPECIAL_TOKENS + [" the", "个苹果", "123456", "\n \n"])), max_size=6).map("".join))
def test_hf_parity_on_arbitrary_text(tok, hf, text):
    assert hf.encode(text, add_special_tokens=False) == tok.encode(text, allow_special=True)


def test_hf_auto_tokenizer_knows_specials_and_chat_template(tok, saved):
    from transformers import AutoTokenizer
    at = AutoTokenizer.from_pretrained(str(saved))
    assert (at.pad_token_id, at.bos_token_id, at.eos_token_id) == (tok.pad_id, tok.bos_id, tok.eos_id)
    chat = [{"role": "user", "content": "<image>\n图中有几个图形？"}, {"role": "assistant", "content": "图中有2个图形。"}]
    ids = at.apply_chat_template(chat, tokenize=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert list(ids) == tok.render_conversation(chat)[0]


def test_foreign_tokenizer_json_is_refused(tmp_path):
    from tokenizers import Tokenizer as HFTokenizer, models, pre_tokenizers
    other = HFTokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")]))
    other.pre_tokenizer = pre_tokenizers.ByteLevel()  # GPT-2 style: a different pre-split rule
    other.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(CourseError, match="was not written by this course's tokenizer"):
        Tokenizer.load(tmp_path)
    (tmp_path / "bpe.json").write_text(json.dumps({"format": "minbpe v1", "merges": []}))
    with pytest.raises(CourseError, match="was not written by this course's tokenizer"):
        Tokenizer.load(tmp_path / "bpe.json")
    (tmp_path / "tokenizer.json").write_text("not json at all")
    with pytest.raises(CourseError, match="was not written by this course's tokenizer"):
        Tokenizer.load(tmp_path / "tokenizer.json")


def test_damaged_tokenizer_json_is_refused(tok, tmp_path):
    tok.save(tmp_path)
    (tmp_path / "bpe.json").unlink()
    d = json.loads((tmp_path / "tokenizer.json").read_text())
    d["model"]["merges"][0] = "zz qq"
    (tmp_path / "tokenizer.json").write_text(json.dumps(d))
    with pytest.raises(CourseError, match="damaged"):
        Tokenizer.load(tmp_path)


def test_missing_tokenizer_says_how_to_make_one(tmp_path):
    with pytest.raises(CourseError, match="run: python step1_tokenizer/train.py"):
        load_tokenizer(tmp_path / "nothing")
    with pytest.raises(CourseError, match="run: python step1_tokenizer/train.py"):
        Tokenizer.load(tmp_path)
