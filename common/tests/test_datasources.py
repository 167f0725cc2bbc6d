"""The --data reader: files and folders, JSON lines with file:line errors, conversations in every format."""
import pytest

from common.datasources import conversation, expand_paths, read_text, records, text_field
from common.device import named_generator, named_rng, stream_seed
from common.errors import CourseError


def test_folders_expand_to_their_files_and_hf_names_pass_through(tmp_path):
    (tmp_path / "b.txt").write_text("b")
    (tmp_path / "a.jsonl").write_text("{}")
    (tmp_path / "skip.csv").write_text("x")
    assert expand_paths([tmp_path, "hf:some/name"]) == [tmp_path / "a.jsonl", tmp_path / "b.txt", "hf:some/name"]
    with pytest.raises(CourseError, match="no such file or folder"):
        expand_paths([tmp_path / "nope.txt"])
    with pytest.raises(CourseError, match="unsupported file type '.csv'"):
        expand_paths([tmp_path / "skip.csv"])


def test_malformed_jsonl_names_file_and_line(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text('{"text": "ok"}\n\n{"text": oops}\n', encoding="utf-8")
    it = records(f)
    assert next(it) == (f"{f}:1", {"text": "ok"})
    with pytest.raises(CourseError, match=r"d.jsonl:3: malformed JSON line"):
        next(it)
    with pytest.raises(CourseError, match=r"x:7: expected an object with a string 'text' field"):
        text_field({"txt": 1}, "x:7")


def test_invalid_utf8_is_one_sentence(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_bytes(b"ok \xff")
    with pytest.raises(CourseError, match="not valid UTF-8 at byte offset 3"):
        read_text(f)


def test_every_conversation_format_gives_the_same_messages():
    want = [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]
    minimind = {"conversations": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q"},
                                  {"role": "assistant", "content": "A"}]}
    sharegpt = {"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q"},
                                  {"from": "gpt", "value": "A"}]}
    openai = {"messages": [{"role": "system", "content": [{"type": "text", "text": "S"}]},
                           {"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}]}
    for obj in (minimind, sharegpt, openai, minimind["conversations"]):
        assert conversation(obj, "x") == want
    with pytest.raises(CourseError, match="f.jsonl:2: turn 1 has unknown role 'robot'"):
        conversation({"messages": [{"role": "user", "content": "Q"}, {"role": "robot", "content": "A"}]}, "f.jsonl:2")
    with pytest.raises(CourseError, match="at least one turn"):
        conversation({"messages": []}, "f.jsonl:3")


def test_named_random_streams_are_stable_and_independent():
    assert stream_seed(1337, "scenes") == stream_seed(1337, "scenes")
    assert len({stream_seed(1337, "scenes"), stream_seed(1337, "questions"), stream_seed(1, "scenes")}) == 3
    assert named_rng(7, "a").random() == named_rng(7, "a").random() != named_rng(7, "b").random()
    import torch
    assert torch.equal(torch.rand(3, generator=named_generator(7, "a")), torch.rand(3, generator=named_generator(7, "a")))
