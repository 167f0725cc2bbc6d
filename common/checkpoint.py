"""Checkpoint folders: written atomically, loaded without pickle, checked before use.

A checkpoint is a folder:
    model.safetensors    the weights (safetensors: no pickle, memory-mappable)
    config.json          {"step": which step wrote it, "model": model config, "train_args": ..., "metrics": ...}
    tokenizer.json       the tokenizer the model was trained with (plus any other files the tokenizer saves)
    training_state.pt    optional: optimizer, RNG and loop counters for --resume (tensors and plain
                         containers only, read back with torch.load(weights_only=True))
    best/                optional: the checkpoint with the best held-out score so far, a checkpoint itself
"""
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from common.errors import CourseError
from common.files import atomic_folder, restore_folder

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
TRAINING_STATE_FILE = "training_state.pt"
RUN_LOG_SUFFIXES = {".jsonl", ".png", ".md", ".log", ".txt", ".csv"}  # a run's logs, carried across saves


@dataclass
class Checkpoint:
    path: Path
    step: str                      # the step that wrote it: "pretrain", "sft", "vlm_sft", ...
    model_config: dict
    state_dict: dict
    train_args: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)   # anything else the writer put in config.json


def save_checkpoint(folder, *, state_dict: dict, step: str, model_config: dict, train_args: dict | None = None,
                    metrics: dict | None = None, tokenizer=None, training_state: dict | None = None,
                    extra: dict | None = None) -> Path:
    """Write a checkpoint folder atomically (common.files.atomic_folder): a writer killed at any point leaves
    the previous checkpoint intact (or none), never a half-written one. Run logs already in `folder`
    (metrics.jsonl, plots) and nested checkpoints (`best/`) are carried over. `tokenizer`: any object with
    `.save(folder)`."""
    folder = Path(folder)
    with atomic_folder(folder, carry=_carry_run_files) as tmp:
        # safetensors refuses tensors that share memory (tied embeddings): store independent copies.
        tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
        save_file(tensors, str(tmp / MODEL_FILE))
        config = {"step": step, "model": model_config, "train_args": train_args or {}, "metrics": metrics or {},
                  **(extra or {})}
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
        if tokenizer is not None:
            tokenizer.save(tmp)
        if training_state is not None:
            torch.save(training_state, tmp / TRAINING_STATE_FILE)
    return folder


def _carry_run_files(old: Path, new: Path) -> None:
    """What the run logged beside the checkpoint survives a save, but never stale weights, optimizer state
    or tokenizer files. A nested checkpoint folder (e.g. `best/`) is carried as hard links: instant, and
    safe because checkpoint files are only ever replaced, never changed in place."""
    for f in old.iterdir():
        if (new / f.name).exists():
            continue
        if f.is_file() and f.suffix in RUN_LOG_SUFFIXES:
            shutil.copy2(f, new / f.name)
        elif f.is_dir() and (f / CONFIG_FILE).is_file():
            shutil.copytree(f, new / f.name, copy_function=_link_or_copy)


def _link_or_copy(src, dst):
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copy2(src, dst)


def load_checkpoint(folder, *, expect_steps=None, hint: str = "", map_location="cpu") -> Checkpoint:
    """Read a checkpoint folder. `expect_steps`: the steps whose checkpoints this caller can use; any
    other is refused with a sentence naming what was expected. `hint`: the command that makes one."""
    folder = Path(folder)
    restore_folder(folder)
    how = f" — make one with: {hint}" if hint else ""
    if not (folder / CONFIG_FILE).is_file() or not (folder / MODEL_FILE).is_file():
        raise CourseError(f"no checkpoint at {folder} (expected {CONFIG_FILE} and {MODEL_FILE}){how}")
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        step = config["step"]
        model_config = config["model"]
    except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as e:
        raise CourseError(f"{folder / CONFIG_FILE} is not a course checkpoint config ({e})") from None
    if expect_steps is not None:
        expect = [expect_steps] if isinstance(expect_steps, str) else list(expect_steps)
        if step not in expect:
            raise CourseError(f"{folder} was written by step {step!r}, but a checkpoint from "
                              f"{' or '.join(repr(s) for s in expect)} is expected here{how}")
    try:
        state_dict = load_file(str(folder / MODEL_FILE), device=str(map_location))
    except Exception as e:  # safetensors raises its own error types for truncated or foreign files
        raise CourseError(f"{folder / MODEL_FILE} cannot be read as safetensors ({e})") from None
    known = {"step", "model", "train_args", "metrics"}
    return Checkpoint(path=folder, step=step, model_config=model_config, state_dict=state_dict,
                      train_args=config.get("train_args", {}), metrics=config.get("metrics", {}),
                      extra={k: v for k, v in config.items() if k not in known})


def load_training_state(folder) -> dict | None:
    """The optimizer/RNG/counter state saved for --resume, or None if the checkpoint has none."""
    path = Path(folder) / TRAINING_STATE_FILE
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def check_vocab(ckpt: Checkpoint, tokenizer_vocab_size: int, tokenizer_name: str = "the tokenizer",
                model_vocab: int | None = None) -> None:
    """Refuse a model whose embedding table was built for a different vocabulary. `model_vocab`: the
    model's size when its config nests it (a VLM keeps it under "llm"); default: the config's vocab_size."""
    model_vocab = ckpt.model_config.get("vocab_size") if model_vocab is None else model_vocab
    if model_vocab != tokenizer_vocab_size:
        raise CourseError(f"{ckpt.path} has a vocabulary of {model_vocab} tokens, but {tokenizer_name} has "
                          f"{tokenizer_vocab_size}: the checkpoint was trained with a different tokenizer")
