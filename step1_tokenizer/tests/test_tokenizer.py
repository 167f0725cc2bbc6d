"""Encode/decode, special tokens, the chat template and its loss mask."""
import pytest
from hypothesis import given, settings, strategies as st

from common.errors import CourseError
from step1_tokenizer.bpe import SPLIT_RE
from step1_tokenizer.model import SPECIAL_TOKENS, Tokenizer, render_conversation

# Arbitrary Unicode, surrogates excluded (they cannot be UTF-8 encoded, so they are not valid text anyway).
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=200)
MIXED = st.lists(st.one_of(TEXT, st.sampled_from(SPECIAL_TOKENS), st.sampled_from(["小明有3个苹果", " the", "\n\n"])),
                 max_size=8).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=MIXED)
def test_roundtrip_arbitrary_unicode(tok, text):
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(text, allow_special=True)) == text


@settings(max_examples=200, deadline=None)
@given(text=MIXED)
def test_specials_never_produced_from_plain_text(tok, text):
    assert all(i < len(tok.vocab) for i in tok.encode(text))


def test_special_ids_are_distinct_and_at_the_end(tok):
    ids = [tok.pad_id, tok.bos_id, tok.eos_id, tok.im_start_id, tok.im_end_id, tok.image_id, tok.num_id]
    assert ids == [tok.special_tokens[s] for s in SPECIAL_TOKENS]
    assert sorted(ids) == list(range(tok.vocab_size - len(SPECIAL_TOKENS), tok.vocab_size))


@pytest.mark.parametrize("special", SPECIAL_TOKENS)
def test_special_token_never_split(tok, special):
    assert tok.encode(special, allow_special=True) == [tok.special_tokens[special]]
    ids = tok.encode(f"图中有{special}shapes{special}{special}", allow_special=True)
    assert ids.count(tok.special_tokens[special]) == 3
    # as plain text the same string is several ordinary tokens
    assert tok.special_tokens[special] not in tok.encode(special) and len(tok.encode(special)) > 1


def test_split_keeps_han_apart_and_digits_in_threes():
    assert SPLIT_RE.findall("小明有12345个apple") == ["小", "明", "有", "123", "45", "个", "apple"]
    assert SPLIT_RE.findall("Tom's 3 cats") == ["Tom", "'s", " ", "3", " cats"]


def test_every_byte_is_a_token(tok):
    text = "emoji 🍎, ümlaut, 中文, \x00\x7f"
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode([0xE4]) == "\ufffd"  # half a character decodes as U+FFFD, no crash


def test_decode_skip_special(tok):
    ids = tok.encode("<|bos|>hi<|eos|>", allow_special=True)
    assert tok.decode(ids) == "<|bos|>hi<|eos|>" and tok.decode(ids, skip_special=True) == "hi"


def _answers(tok, ids, mask):
    """The text under mask=1, one piece per contiguous run."""
    runs, cur = [], []
    for i, m in zip(ids, mask):
        if m:
            cur.append(i)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    return runs + ([tok.decode(cur)] if cur else [])


def test_chat_mask_exactly_on_assistant_tokens_multi_turn(tok):
    chat = [{"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": "小明有3个苹果，吃了1个，还剩几个？"},
            {"role": "assistant", "content": "还剩2个。"},
            {"role": "user", "content": "What color is the apple?"},
            {"role": "assistant", "content": "It is red."}]
    ids, mask = tok.render_conversation(chat)
    assert len(ids) == len(mask) and set(mask) == {0, 1}
    assert tok.decode(ids) == "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in chat)
    assert _answers(tok, ids, mask) == ["还剩2个。<|im_end|>", "It is red.<|im_end|>"]
    # the masked tokens are exactly the assistant contents' own encodings plus <|im_end|>
    assert [i for i, m in zip(ids, mask) if m] == (tok.encode("还剩2个。") + [tok.im_end_id]
                                                   + tok.encode("It is red.") + [tok.im_end_id])
    assert render_conversation(tok, chat) == (ids, mask)


def test_chat_image_placeholder_is_one_id(tok):
    chat = [{"role": "user", "content": "<image>\n图中有几个图形？"}, {"role": "assistant", "content": "图中有2个图形。"}]
    ids, mask = tok.render_conversation(chat)
    assert ids.count(tok.image_id) == 1 and mask[ids.index(tok.image_id)] == 0
    assert _answers(tok, ids, mask) == ["图中有2个图形。<|im_end|>"]
    # <image> typed by the assistant (or any other special string) stays plain text
    ids2, _ = tok.render_conversation([{"role": "assistant", "content": "<image><|im_end|>"}])
    assert ids2.count(tok.image_id) == 0 and ids2.count(tok.im_end_id) == 1


def test_chat_generation_prompt(tok):
    chat = [{"role": "user", "content": "hi"}]
    ids, mask = tok.render_conversation(chat, add_generation_prompt=True)
    assert tok.decode(ids).endswith("<|im_end|>\n<|im_start|>assistant\n") and sum(mask) == 0


@pytest.mark.parametrize("bad", [[{"role": "robot", "content": "x"}], [{"role": "user"}], ["hello"]])
def test_chat_bad_messages(tok, bad):
    with pytest.raises(CourseError, match="message 0 must be"):
        tok.render_conversation(bad)


def test_unknown_special_token_name(tok):
    with pytest.raises(CourseError, match=r"unknown special token '<\|tool\|>'"):
        tok.special_id("<|tool|>")
    with pytest.raises(CourseError, match="must include"):
        Tokenizer([], special_tokens=["<|pad|>"])
    with pytest.raises(CourseError, match="each once"):
        Tokenizer([], special_tokens=SPECIAL_TOKENS + ["<|pad|>"])


def test_lone_surrogate_is_a_clear_error(tok):
    with pytest.raises(CourseError, match="lone surrogate"):
        tok.encode("ok \ud800")


def test_decode_out_of_range(tok):
    with pytest.raises(CourseError, match="outside this tokenizer's vocabulary"):
        tok.decode([tok.vocab_size])
    with pytest.raises(CourseError, match="outside this tokenizer's vocabulary"):
        tok.decode([-1])
