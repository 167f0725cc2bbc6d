"""Checkpoint folders: atomic under a crash, no pickle, wrong step or vocabulary refused."""
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from common import REPO_ROOT
from common.checkpoint import (check_vocab, load_checkpoint, load_training_state, save_checkpoint)
from common.errors import CourseError


class FakeTokenizer:
    vocab_size = 10

    def save(self, folder):
        (folder / "tokenizer.json").write_text(json.dumps({"vocab_size": self.vocab_size}))


def _save(folder, value, **kw):
    return save_checkpoint(folder, state_dict={"w": torch.full((3,), float(value))}, step="pretrain",
                           model_config={"vocab_size": 10}, **kw)


def test_round_trip_with_training_state(tmp_path):
    opt_state = {"step": 5, "rng": torch.get_rng_state(), "moments": [torch.ones(2)]}
    _save(tmp_path / "ck", 1.0, tokenizer=FakeTokenizer(), train_args={"lr": 0.1}, training_state=opt_state)
    ck = load_checkpoint(tmp_path / "ck", expect_steps="pretrain")
    assert torch.equal(ck.state_dict["w"], torch.ones(3))
    assert ck.step == "pretrain" and ck.train_args == {"lr": 0.1}
    assert (tmp_path / "ck" / "tokenizer.json").is_file()
    state = load_training_state(tmp_path / "ck")  # weights_only=True: no arbitrary pickle
    assert state["step"] == 5 and torch.equal(state["rng"], opt_state["rng"])


def test_tied_weights_are_saved(tmp_path):
    emb = torch.nn.Embedding(4, 2)
    head = torch.nn.Linear(2, 4, bias=False)
    head.weight = emb.weight  # shared storage, which safetensors refuses unless copied
    sd = {"emb.weight": emb.weight, "head.weight": head.weight}
    save_checkpoint(tmp_path / "ck", state_dict=sd, step="gpt", model_config={})
    assert torch.equal(load_checkpoint(tmp_path / "ck").state_dict["head.weight"], emb.weight.detach())


def test_killed_writer_leaves_previous_checkpoint_intact(tmp_path):
    _save(tmp_path / "ck", 1.0)
    # A second writer dies (os._exit, no cleanup) halfway: after the weights, while saving the tokenizer.
    script = textwrap.dedent(f"""
        import os, sys, torch
        sys.path.insert(0, {str(REPO_ROOT)!r})
        from common.checkpoint import save_checkpoint
        class Dying:
            def save(self, folder):
                os._exit(9)
        save_checkpoint({str(tmp_path / "ck")!r}, state_dict={{"w": torch.full((3,), 2.0)}}, step="pretrain",
                        model_config={{"vocab_size": 10}}, tokenizer=Dying())
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    ck = load_checkpoint(tmp_path / "ck")
    assert torch.equal(ck.state_dict["w"], torch.ones(3))  # the old one, whole
    _save(tmp_path / "ck", 3.0)  # and the next writer succeeds despite the leftover temp folder
    assert torch.equal(load_checkpoint(tmp_path / "ck").state_dict["w"], torch.full((3,), 3.0))


def test_wrong_step_is_refused(tmp_path):
    _save(tmp_path / "ck", 1.0)
    with pytest.raises(CourseError, match=r"written by step 'pretrain'.*'sft' or 'rlhf' is expected"):
        load_checkpoint(tmp_path / "ck", expect_steps=("sft", "rlhf"))


def test_missing_checkpoint_names_the_command(tmp_path):
    with pytest.raises(CourseError, match="make one with: python step3_pretrain/train.py"):
        load_checkpoint(tmp_path / "nothing", hint="python step3_pretrain/train.py")


def test_vocabulary_mismatch_is_refused(tmp_path):
    ck = load_checkpoint(_save(tmp_path / "ck", 1.0))
    check_vocab(ck, 10)
    with pytest.raises(CourseError, match="vocabulary of 10 tokens.*has 12"):
        check_vocab(ck, 12)


def test_corrupt_weights_are_one_sentence(tmp_path):
    _save(tmp_path / "ck", 1.0)
    (tmp_path / "ck" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CourseError, match="cannot be read as safetensors"):
        load_checkpoint(tmp_path / "ck")


def test_run_logs_beside_the_checkpoint_survive_a_save(tmp_path):
    _save(tmp_path / "ck", 1.0, tokenizer=FakeTokenizer())
    (tmp_path / "ck" / "metrics.jsonl").write_text('{"kind": "train", "step": 0, "loss": 1.0}\n')
    (tmp_path / "ck" / "loss_curve.png").write_bytes(b"png")
    _save(tmp_path / "ck", 2.0)  # no tokenizer this time: a stale tokenizer.json must not survive
    assert (tmp_path / "ck" / "metrics.jsonl").read_text().startswith('{"kind"')
    assert (tmp_path / "ck" / "loss_curve.png").is_file()
    assert not (tmp_path / "ck" / "tokenizer.json").exists()
    assert torch.equal(load_checkpoint(tmp_path / "ck").state_dict["w"], torch.full((3,), 2.0))
