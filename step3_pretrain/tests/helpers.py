"""Small shared pieces of step 3's tests: a tiny character-level run that trains in a second or two."""
import json
from pathlib import Path

from common.world import build_corpus

TEXT = None


def world_text() -> str:
    """~150 kB of data-world documents, one per line (generated, so no file ships with the tests)."""
    global TEXT
    if TEXT is None:
        train, _ = build_corpus(0.15, seed=7)
        TEXT = "\n".join(train) + "\n"
    return TEXT


def write_text(tmp_path, name="world.txt", text=None) -> Path:
    p = Path(tmp_path) / name
    p.write_text(text if text is not None else world_text(), encoding="utf-8")
    return p


def tiny_args(tmp_path, data, *extra, out="out", steps=8):
    """argv of a ~1 s run: 1 layer × 32 wide, 32-character windows, batches of 4."""
    return ["--device", "cpu", "--tokenizer", "char", "--data", str(data), "--out", str(Path(tmp_path) / out),
            "--cache-dir", str(Path(tmp_path) / "cache"), "--seq-len", "32", "--batch-size", "4", "--n-layer", "1",
            "--n-head", "2", "--n-embd", "32", "--max-steps", str(steps), "--eval-every", "4", "--eval-windows", "4",
            "--warmup", "2", "--lr", "3e-3", "--sample-tokens", "8", *extra]


def run(argv):
    from step3_pretrain.train import make_parser, train
    return train(make_parser().parse_args(argv))


def train_losses(out) -> list:
    rows = [json.loads(ln) for ln in (Path(out) / "metrics.jsonl").read_text().splitlines() if ln]
    return [(r["step"], r["loss"]) for r in rows if r["kind"] == "train"]
