import pathlib

import pytest

HERE = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.notebook
def test_lesson_notebook_runs(run_notebook):
    run_notebook(HERE / "lesson.ipynb", timeout=300)
