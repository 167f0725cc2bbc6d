"""Shared plumbing for every step: device, seeding, checkpoints, training-loop helpers, CLI, the data world."""
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RUNS_DIR = REPO_ROOT / "runs"  # every run writes below here (git-ignored)
