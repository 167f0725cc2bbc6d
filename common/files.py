"""File I/O every step shares: atomic writes, so that a killed run never leaves half a file or half a folder.

A file is written to a temporary name beside it, flushed to disk, then renamed over the old one: a rename
within one folder is atomic, so a reader sees the old file or the new one, never a mix. A folder (a
checkpoint, a token cache) is written the same way as a hidden sibling that then takes the folder's place.
"""
import contextlib
import ctypes
import ctypes.util
import os
import shutil
from pathlib import Path


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write `data` to `path` so that `path` always holds either its old content or all of `data`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 with RENAME_EXCHANGE); False where unsupported."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name or not hasattr(ctypes.CDLL(libc_name), "renameat2"):
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    at_fdcwd, rename_exchange = -100, 2
    return libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _old_name(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.old"


def restore_folder(folder) -> None:
    """A writer killed between the two renames of `swap_in` (systems without an atomic exchange) left the
    previous folder under its `.old` name: put it back. Called before every read and write of a folder."""
    folder = Path(folder)
    old = _old_name(folder)
    if not folder.exists() and old.is_dir():
        old.rename(folder)


def swap_in(tmp: Path, folder: Path) -> None:
    """Make the finished folder `tmp` become `folder`, replacing what was there."""
    if folder.exists() and _exchange(tmp, folder):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the previous folder
        return
    old = _old_name(folder)
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)  # killed right here: restore_folder puts the old one back
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(folder, carry=None):
    """`with atomic_folder(out) as tmp:` write everything into `tmp`; when the block ends without an error,
    `tmp` replaces `out` whole. An error (or a kill) inside the block leaves `out` as it was.
    `carry(old, tmp)`: called before the swap to bring over what should survive from the old folder."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    restore_folder(folder)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if carry is not None and folder.is_dir():
            carry(folder, tmp)
        for f in tmp.rglob("*"):
            if f.is_file():
                _fsync(f)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    swap_in(tmp, folder)
