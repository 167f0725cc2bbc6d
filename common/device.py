"""Device and dtype selection, autocast, and seeding, so every step picks hardware the same way."""
import contextlib
import hashlib
import os
import random

import numpy as np
import torch

from common.errors import CourseError


def pick_device(name: str = "auto") -> torch.device:
    """`auto` prefers cuda, then mps, then cpu. Asking for hardware that is absent is a user error."""
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CourseError(f"--device {name} was asked for, but this machine has no CUDA GPU "
                          "(use --device cpu or --device auto)")
    if name == "mps" and not has_mps:
        raise CourseError("--device mps was asked for, but Apple's MPS backend is not available here "
                          "(use --device cpu or --device auto)")
    if name not in ("cpu", "mps") and not name.startswith("cuda"):
        raise CourseError(f"unknown --device {name!r}; choose auto, cpu, cuda or mps")
    return torch.device(name)


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """The compute dtype for autocast. `auto`: bf16 on a GPU that supports it, else fp32.
    Parameters always stay fp32; only the matmuls run in the lower precision."""
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise CourseError(f"unknown --dtype {name!r}; choose auto, float32, bfloat16 or float16")
    if table[name] == torch.float16 and device.type == "cpu":
        raise CourseError("--dtype float16 is not supported on the CPU; use float32 or bfloat16")
    return table[name]


def autocast(device: torch.device, dtype: torch.dtype):
    """Mixed precision context: a no-op for fp32, torch.autocast otherwise."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a run can be repeated exactly."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))


def stream_seed(seed: int, name: str) -> int:
    """The seed of the random stream called `name` within a run seeded `seed`. Each kind of draw (which
    scenes, which questions, which batches) gets its own named stream, so a reader sees which is which and
    adding a draw to one stream never shifts another."""
    digest = hashlib.blake2b(f"{seed}/{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # 63 bits: valid for random, numpy and torch alike


def named_rng(seed: int, name: str) -> random.Random:
    """A Python `random.Random` for the stream `name` (see stream_seed)."""
    return random.Random(stream_seed(seed, name))


def named_generator(seed: int, name: str) -> torch.Generator:
    """A CPU `torch.Generator` for the stream `name` (see stream_seed)."""
    return torch.Generator().manual_seed(stream_seed(seed, name))
