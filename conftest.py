"""Test-suite setup shared by every step: offline mode, quick mode for notebooks, and the notebook runner."""
import os
from pathlib import Path

import pytest

# Tests never reach a model hub: whatever is not on disk must fail fast, not hang on the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")


def execute_notebook(path, timeout: int = 300, quick: bool = True):
    """Run every cell of a notebook headless (nbclient) in the notebook's own folder, as a student would.
    With quick=True the kernel sees COURSE_QUICK=1, which lesson notebooks read to shrink their runs.
    Raises nbclient's CellExecutionError (with the failing cell and its traceback) on any error."""
    import nbformat
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    if quick:
        os.environ["COURSE_QUICK"] = "1"  # the kernel inherits the environment
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        os.environ.pop("COURSE_QUICK", None)
    return nb


@pytest.fixture
def run_notebook():
    """Fixture form of execute_notebook: `run_notebook("step1_tokenizer/lesson.ipynb")`."""
    return execute_notebook


def _course_script(script, *argv):
    """Run a course script the way a student does (one thread, so parallel CI stays predictable) → its result."""
    import subprocess
    import sys
    root = Path(__file__).resolve().parent
    return subprocess.run([sys.executable, str(root / script), *map(str, argv)], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=root)


@pytest.fixture(scope="session")
def quick_pretrain(tmp_path_factory):
    """Step 3's --quick pretraining with the fixed quick tokenizer: a small base that is the same everywhere."""
    from step1_tokenizer.model import QUICK_TOKENIZER_DIR, quick_tokenizer
    out = tmp_path_factory.mktemp("chain") / "pretrain"
    quick_tokenizer()
    r = _course_script("step3_pretrain/train.py", "--quick", "--tokenizer", QUICK_TOKENIZER_DIR, "--out", out,
                       "--cache-dir", out.parent / "tokens")
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="session")
def quick_sft(quick_pretrain):
    """150 steps of step 4 on that base → (folder, train.py's summary): step 4's golden run and step 5's start."""
    import json
    out = quick_pretrain.parent / "sft"
    r = _course_script("step4_sft/train.py", "--init", quick_pretrain, "--out", out, "--max-steps", 150, "--eval-n", 40)
    assert r.returncode == 0, r.stderr
    return out, json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture
def one_line_error():
    """Check that a script run failed the way bad input must: exit status 2, one `error: ...` line that contains
    `words`, no traceback. `where` is shown when it did not."""
    def check(result, words, where=None):
        err = result.stderr
        assert result.returncode == 2 and err.startswith("error:") and "Traceback" not in err, (where, err)
        assert words in err and len(err.strip().splitlines()) == 1, (where, err)
    return check
