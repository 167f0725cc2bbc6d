"""Every step folder keeps the course's promises: the lesson files, the lesson structure, `--help` for each script."""
import subprocess
import sys

import pytest

from common import REPO_ROOT

STEPS = sorted(p for p in REPO_ROOT.glob("step*_*") if p.is_dir())
LESSON_SECTIONS = ["核心问题", "学习目标", "核心概念", "动手任务", "代码文件", "关键点", "验证标准"]


def test_there_are_steps():
    assert STEPS, "no step folders found"


@pytest.mark.parametrize("step", STEPS, ids=lambda p: p.name)
def test_step_has_lesson_files(step):
    for name in ("model.py", "train.py", "demo.py", "README.md", "__init__.py"):
        assert (step / name).is_file(), f"{step.name} has no {name}"
    assert list(step.glob("*.ipynb")), f"{step.name} has no notebook"
    assert list((step / "tests").glob("test_*.py")), f"{step.name} has no tests"


@pytest.mark.parametrize("step", STEPS, ids=lambda p: p.name)
def test_lesson_readme_structure(step):
    text = (step / "README.md").read_text(encoding="utf-8")
    missing = [s for s in LESSON_SECTIONS if s not in text]
    assert not missing, f"{step.name}/README.md lacks sections {missing}"
    assert "English" in text[:3000], "the lesson starts with an English summary"


SCRIPTS = sorted(p for s in STEPS for pattern in ("*.py", "lab/*.py") for p in s.glob(pattern)  # the lab's tools too
                 if p.name not in ("__init__.py",) and "def main" in p.read_text(encoding="utf-8"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_script_help_runs_from_its_own_folder(script):
    # As a student runs it: `cd stepN && python train.py --help`, with no repo root on the path.
    r = subprocess.run([sys.executable, script.name, "--help"], cwd=script.parent, capture_output=True,
                       text=True, timeout=60, env={"PATH": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "usage:" in r.stdout
