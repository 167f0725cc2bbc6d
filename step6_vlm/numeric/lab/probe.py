"""Do the frozen small CLIP's features already hold a gauge's value? A ridge regression from one layer's patch
features (flattened) to the value, fitted on 80% of the training split's gauges and scored on the other 20%.

    python lab/probe.py          # from step6_vlm/numeric; needs runs/clip and runs/numeric_data (python data.py)

Final JSON keys: mae_layer_-2, relaxed_layer_-2, mae_layer_-1, relaxed_layer_-1, mae_pixels.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[3]))  # repo root

import torch

from common.cli import run
from common.training import print_summary
from step6_vlm.numeric.data import DATA_DIR, ensure_dataset, load_samples
from step6_vlm.numeric.scoring import gold_numbers
from step6_vlm.vision import CLIP_DIR, load_vision_encoder, patch_features, preprocess


def ridge_scores(X, v, lam=1e-2) -> tuple:
    n_fit = int(0.8 * len(X))
    X = torch.cat([X, torch.ones(len(X), 1)], 1)
    w = torch.linalg.solve(X[:n_fit].T @ X[:n_fit] + lam * torch.eye(X.shape[1]), X[:n_fit].T @ v[:n_fit])
    err = (X[n_fit:] @ w - v[n_fit:]).abs()
    return round(float(err.mean()), 3), round(float((err <= 0.05 * v[n_fit:]).float().mean()), 4)


def main():
    enc, proc = load_vision_encoder(str(CLIP_DIR))
    samples = [s for s in load_samples(ensure_dataset() / "train.json") if s["type"] == "gauge"]
    v = torch.tensor([gold_numbers(s)[0] for s in samples])
    pv = preprocess(proc, [s["image"] for s in samples])
    out = {}
    for layer in (-2, -1):
        out[f"mae_layer_{layer}"], out[f"relaxed_layer_{layer}"] = ridge_scores(patch_features(enc, pv, layer).flatten(1), v)
    out["mae_pixels"] = ridge_scores(pv.flatten(1), v, lam=1e-1)[0]
    print(f"gauge value from frozen features (ridge, {len(v)} gauges, 80% fit / 20% scored): {out}")
    print_summary(**out)


if __name__ == "__main__":
    run(main)
