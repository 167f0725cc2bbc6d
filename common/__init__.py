"""Shared plumbing for every step: device, seeding, checkpoints, training-loop helpers, CLI, the data world."""
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# Every run writes below here (git-ignored). COURSE_RUNS moves the whole artifact chain elsewhere, e.g. for a
# quick end-to-end run of the course that must not touch a student's runs/.
RUNS_DIR = Path(os.environ.get("COURSE_RUNS") or REPO_ROOT / "runs").resolve()
