"""Atomic writes: a writer killed at any point leaves the previous file or folder whole."""
import os
import subprocess
import sys
import textwrap

import pytest

from common import REPO_ROOT
from common.files import atomic_folder, atomic_write_text, restore_folder


def _writer_dies(folder, where: str):
    """Run a second writer of `folder` in a subprocess that is killed (os._exit, no clean-up) at `where`."""
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(REPO_ROOT)!r})
        import common.files as files
        where = {where!r}
        if where == "before the swap":
            files.swap_in = lambda tmp, folder: os._exit(9)
        if where == "between the renames":   # a system without an atomic exchange, killed half-way
            files._exchange = lambda a, b: False
            real_rename = type(files.Path()).rename
            def rename(self, target):
                if self.name == "ck":   # the old folder has just been moved aside
                    real_rename(self, target)
                    os._exit(9)
                return real_rename(self, target)
            files.Path.rename = rename
        with files.atomic_folder({str(folder)!r}) as tmp:
            (tmp / "weights").write_text("new")
            if where == "while writing":
                os._exit(9)
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9


@pytest.mark.parametrize("where", ["while writing", "before the swap", "between the renames"])
def test_a_killed_writer_leaves_the_old_folder_intact(tmp_path, where):
    folder = tmp_path / "ck"
    with atomic_folder(folder) as tmp:
        (tmp / "weights").write_text("old")
    _writer_dies(folder, where)
    assert folder.exists() == (where != "between the renames")  # that kill left only the .old folder
    restore_folder(folder)  # what every reader and writer does first
    assert (folder / "weights").read_text() == "old"
    with atomic_folder(folder) as tmp:  # and the next writer succeeds despite the leftovers
        (tmp / "weights").write_text("newer")
    assert (folder / "weights").read_text() == "newer"


def test_an_error_inside_the_block_changes_nothing(tmp_path):
    folder = tmp_path / "ck"
    with atomic_folder(folder) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(ValueError):
        with atomic_folder(folder) as tmp:
            (tmp / "a").write_text("2")
            raise ValueError("half-way")
    assert (folder / "a").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["ck"]


def test_carry_brings_over_what_should_survive(tmp_path):
    folder = tmp_path / "ck"
    with atomic_folder(folder) as tmp:
        (tmp / "log.txt").write_text("kept")
        (tmp / "stale").write_text("dropped")
    with atomic_folder(folder, carry=lambda old, new: (new / "log.txt").write_text((old / "log.txt").read_text())) as tmp:
        (tmp / "weights").write_text("w")
    assert sorted(p.name for p in folder.iterdir()) == ["log.txt", "weights"]


def test_atomic_file_write(tmp_path):
    path = tmp_path / "sub" / "a.txt"
    atomic_write_text(path, "一")
    atomic_write_text(path, "二")
    assert path.read_text(encoding="utf-8") == "二" and os.listdir(path.parent) == ["a.txt"]
