"""The text streamer: the pieces it hands on join to the full text and never hold half a character."""
from step1_tokenizer.model import Tokenizer
from step2_gpt.stream import TextStreamer


def test_pieces_are_whole_characters_and_join_to_the_text():
    tok = Tokenizer([])  # bytes only: every Chinese character arrives as three tokens, an emoji as four
    text = "小明有3个苹果🍎, Tom has 2."
    pieces = []
    stream = TextStreamer(tok, pieces.append)
    for i in tok.encode(text):
        stream(i)
    assert "".join(pieces) == text == stream.finish()
    assert all("\ufffd" not in p for p in pieces)
    assert pieces[:2] == ["小", "明"]  # each character as soon as its last byte is there


def test_stop_token_ends_the_text_and_an_unfinished_character_is_flushed():
    tok = Tokenizer([])
    pieces = []
    stream = TextStreamer(tok, pieces.append, stop_ids=[tok.im_end_id])
    for i in tok.encode("好") + [tok.im_end_id] + tok.encode("ignored"):
        stream(i)
    assert stream.finish() == "好" and stream.stopped
    half = TextStreamer(tok, pieces.append)
    for i in "中".encode()[:2]:  # the model stopped after two of three bytes
        half(i)
    assert half.text == "" and half.finish() == "\ufffd"
