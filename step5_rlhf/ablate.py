"""Two studies that run train.py several times.

    python ablate.py hacking     # reward hacking: a proxy reward model that prefers longer answers, chased by
                                 # GRPO with β = 0 and with the default β; proxy reward and gold accuracy in one figure
    python ablate.py hacking --betas 1     # one more β, added to the runs already made (--retrain: redo them)
    python ablate.py seeds       # the GRPO gain over SFT for 3 seeds: mean and spread

Reward hacking: `train.py --method rm --prefer longer` learns "longer is better" from the same pairs with the
preference turned around (a rambling answer wins). GRPO then optimises that score alone (`--reward rm`). The
checker is the gold standard: a right, concise, finished answer. The figure (reward_hacking.png in --out) shows
the proxy reward rising; without the KL term the policy is free to ramble and gold accuracy falls, with it the
policy stays near the SFT model.
Last line, one JSON object with the keys: study, runs ({name: that run's train.py summary}), and for hacking
proxy_first, proxy_last, gold_first, gold_last ({run: mean over the first / last 10 steps}), figure; for seeds
gains, gain_mean, gain_std.
"""
import sys, pathlib
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # repo root: common/ and earlier steps

import argparse
import json
import statistics
import subprocess
from pathlib import Path

from common import RUNS_DIR
from common.errors import CourseError
from common.training import print_summary

HERE = Path(__file__).resolve().parent
DEFAULT_BETA = 0.04


def train(*argv):
    """Run train.py with `argv` → its summary (the last line); a failed run stops the study with its message."""
    r = subprocess.run([sys.executable, str(HERE / "train.py"), *map(str, argv)], capture_output=True, text=True)
    if r.returncode != 0:
        raise CourseError(f"train.py {' '.join(map(str, argv))} failed: {r.stderr.strip().splitlines()[-1]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def curves(folder):
    """Per training step of an RL run: (proxy reward, share of samples the checker accepts)."""
    rows = [json.loads(line) for line in open(Path(folder) / "metrics.jsonl")]
    rows = [r for r in rows if r["kind"] == "train"]
    return [r["reward"] for r in rows], [r["correct"] for r in rows]


def smooth(v, k=5):
    return [sum(v[max(0, i - k + 1):i + 1]) / len(v[max(0, i - k + 1):i + 1]) for i in range(len(v))]


def hacking(args, out):
    runs = {}
    if not (out / "reward_longer" / "config.json").is_file() or args.retrain:
        runs["proxy_rm"] = train("--method", "rm", "--prefer", "longer", "--out", out / "reward_longer", *args.extra)
    for beta in args.betas:
        name = f"beta_{beta:g}"
        if (out / name / "config.json").is_file() and not args.retrain:
            continue  # made by an earlier call: it joins the figure as it is
        runs[name] = train("--method", "grpo", "--reward", "rm", "--reward-model", out / "reward_longer", "--beta", beta,
                           "--max-steps", args.steps, "--out", out / name, *args.extra)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    summary = {"proxy_first": {}, "proxy_last": {}, "gold_first": {}, "gold_last": {}}
    for name in sorted((f.name for f in out.glob("beta_*") if (f / "config.json").is_file()),
                       key=lambda n: float(n[len("beta_"):])):
        proxy, gold = curves(out / name)
        a1.plot(smooth(proxy), label=name.replace("beta_", "β = "))
        a2.plot(smooth(gold), label=name.replace("beta_", "β = "))
        for key, v in (("proxy", proxy), ("gold", gold)):
            summary[f"{key}_first"][name] = round(statistics.mean(v[:10]), 4)
            summary[f"{key}_last"][name] = round(statistics.mean(v[-10:]), 4)
    a1.set(title="proxy reward (the length-loving reward model)", xlabel="GRPO step")
    a2.set(title="gold: share of answers the checker accepts", xlabel="GRPO step", ylim=(0, 1))
    for a in (a1, a2):
        a.legend()
        a.grid(alpha=0.3)
    fig.tight_layout()
    figure = out / "reward_hacking.png"
    fig.savefig(figure, dpi=110)
    print(f"{'run':<10} {'proxy first→last':>18} {'gold first→last':>17}")
    for name in summary["proxy_first"]:
        print(f"{name:<10} {summary['proxy_first'][name]:>8.3f} → {summary['proxy_last'][name]:<7.3f} "
              f"{summary['gold_first'][name]:>7.3f} → {summary['gold_last'][name]:.3f}")
    return dict(runs=runs, **summary, figure=str(figure))


def seeds(args, out):
    runs = {f"seed_{s}": train("--method", "grpo", "--seed", s, "--out", out / f"grpo_seed{s}", *args.extra)
            for s in (1337, 1, 2)}
    gains = [r["grpo_gain"] for r in runs.values()]
    for name, r in runs.items():
        print(f"{name:<10} SFT {r['sft_verifiable_accuracy']:.1%} → GRPO {r['grpo_verifiable_accuracy']:.1%} "
              f"(gain {r['grpo_gain']:+.1%}, {r['wall_s']:.0f} s)")
    mean, std = statistics.mean(gains), statistics.stdev(gains)
    print(f"gain over 3 seeds: {mean:+.1%} ± {std:.1%}")
    return dict(runs=runs, gains=gains, gain_mean=round(mean, 4), gain_std=round(std, 4))


def main():
    p = argparse.ArgumentParser(description="Step 5 studies: reward hacking; the GRPO gain over seeds.")
    p.add_argument("study", choices=("hacking", "seeds"))
    p.add_argument("--out", default=str(RUNS_DIR / "rlhf_ablate"), help="输出目录 folder for the runs and the figure")
    p.add_argument("--steps", type=int, default=80, help="hacking: GRPO steps per run")
    p.add_argument("--betas", type=float, nargs="+", default=[0.0, DEFAULT_BETA], help="hacking: the KL weights to compare")
    p.add_argument("--retrain", action="store_true", help="hacking: train the proxy reward model again even if it exists")
    args, args.extra = p.parse_known_args()  # flags it does not know go to every train.py run (e.g. --quick)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = (hacking if args.study == "hacking" else seeds)(args, out)
    print_summary(study=args.study, **result)


if __name__ == "__main__":
    from common.cli import run
    run(main)
