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


@pytest.fixture
def headless_chrome():
    """Make headless Chromium drivers (selenium): `drv = headless_chrome(900, 700)`; each is closed after the test.
    Skipped where Chromium or chromedriver is not installed (selenium itself is in requirements.txt)."""
    import shutil
    binary = next((b for b in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if b), None)
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.skip("no Chromium and chromedriver installed (Debian: apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    made = []

    def make(width: int = 900, height: int = 700):
        opts = webdriver.ChromeOptions()
        opts.binary_location = binary
        for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
            opts.add_argument(a)
        made.append(webdriver.Chrome(service=Service(driver_path), options=opts))
        return made[-1]
    yield make
    for drv in made:
        drv.quit()
