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
