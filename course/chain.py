"""The whole course as one run: every step in order, each from the artifact the step before it made, one line per
step with its number against its bar, and a report a teacher can open (course/report.py).

    python -m course.chain                  # what `make course` runs: the steps not done yet, then the report
    python -m course.chain --only step4     # one step (`make step4`); a missing input names the target that makes it
    python -m course.chain --quick          # seconds per step (the end-to-end test runs this with COURSE_RUNS=tmp)
    python -m course.chain --report         # rebuild runs/course/report.html from runs/ without training

A step is done when runs/course/<step>.json exists (written atomically after its commands succeeded): a killed
run resumes where it stopped. --force redoes the steps it runs.
"""
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import REPO_ROOT, RUNS_DIR
from common.errors import CourseError
from common.files import atomic_write_text

COURSE_DIR = RUNS_DIR / "course"


@dataclass(frozen=True)
class Bar:
    """One number a step must show: `key` in the summary of command `run` (its index), compared with `bar`."""
    label: str
    run: int
    key: str
    op: str                 # ">=", "<=", "=="
    bar: float
    fmt: str = "{:.4g}"

    def value(self, summaries):
        v = summaries[self.run]
        for part in self.key.split("."):
            v = v[part] if isinstance(v, dict) else None
        return v

    def passed(self, v) -> bool:
        if v is None:
            return False
        return {">=": v >= self.bar, "<=": v <= self.bar, "==": v == self.bar}[self.op]


@dataclass(frozen=True)
class Step:
    name: str                         # make target
    title: str
    commands: tuple                   # each: (script, args...) relative to the repo root
    needs: tuple = ()                 # runs/<folder> checkpoints it reads
    makes: tuple = ()                 # runs/<folder> checkpoints it writes
    bars: tuple = ()
    quick_args: tuple = ("--quick",)  # added to every command with --quick
    device_flag: bool = True          # whether its commands take --device
    optional: bool = False            # skipped, not failed, when its folder does not exist


# The course in order. Each bar is the step's own figure against the bar its lesson states.
STEPS = (
    Step("step1", "Tokenizer", (("step1_tokenizer/train.py",), ("step1_tokenizer/bench.py", "--quick")),
         makes=("tokenizer",), device_flag=False,
         bars=(Bar("ids = exported tokenizer.json in transformers (share of val lines)", 1, "hf_parity", "==", 1.0),
               Bar("training time vs HF tokenizers", 1, "train_time_ratio_vs_hf", "<=", 10.0, "{:.2f}×"))),
    Step("step2", "GPT", (("step2_gpt/bench.py", "--presets", "tiny"),),
         bars=(Bar("logits vs exported LlamaForCausalLM, max |diff|", 0, "hf_max_abs_diff", "<=", 1e-4, "{:.1e}"),
               Bar("KV-cache decode speed-up at 256 new tokens", 0, "kv_cache_speedup", ">=", 3.0, "{:.1f}×"))),
    Step("step3", "Pretraining", (("step3_pretrain/train.py",),), needs=("tokenizer",), makes=("pretrain",),
         bars=(Bar("wall time of the default CPU run (s)", 0, "wall_s", "<=", 300.0, "{:.0f}"),
               Bar("val loss (perplexity 2–3 on the data world)", 0, "val_loss", "<=", 1.1, "{:.3f}"))),
    Step("step4", "SFT", (("step4_sft/train.py",),), needs=("pretrain",), makes=("sft",),
         bars=(Bar("wall time of the default CPU run (s)", 0, "wall_s", "<=", 300.0, "{:.0f}"),
               Bar("held-out exact match, mean over tasks and languages", 0, "heldout_mean", ">=", 0.95, "{:.1%}"),
               Bar("answers that end with <|im_end|>", 0, "eos_rate", ">=", 0.99, "{:.1%}"))),
    Step("step5", "RLHF", (("step5_rlhf/train.py",),), needs=("sft",), makes=("reward", "rlhf"),
         bars=(Bar("wall time of the default CPU run rm → dpo → grpo (s)", 0, "wall_s", "<=", 600.0, "{:.0f}"),
               Bar("reward model: held-out pair accuracy", 0, "rm_pair_accuracy", ">=", 0.95, "{:.1%}"),
               Bar("DPO: held-out implicit-reward accuracy", 0, "dpo_implicit_accuracy", ">=", 0.90, "{:.1%}"),
               Bar("DPO: reward-model win rate against SFT", 0, "dpo_rm_win_rate", ">=", 0.65, "{:.1%}"),
               Bar("GRPO: verifiable accuracy gain over SFT", 0, "grpo_gain", ">=", 0.10, "{:+.1%}"))),
)
BY_NAME = {s.name: s for s in STEPS}
MAKER = {folder: s.name for s in STEPS for folder in s.makes}


def last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    raise CourseError("the command printed no JSON summary as its last line")


def run_step(step: Step, device: str, quick: bool, log) -> dict:
    """Run the step's commands; return its record (summaries, figures, pass/fail, seconds)."""
    missing = [f for f in step.needs if not (RUNS_DIR / f / "config.json").is_file() and not (RUNS_DIR / f / "tokenizer.json").is_file()]
    if missing:
        raise CourseError(f"{step.name} needs runs/{missing[0]}, which is missing: make it with `make {MAKER[missing[0]]}`")
    t0, summaries = time.perf_counter(), []
    for cmd in step.commands:
        argv = [sys.executable, str(REPO_ROOT / cmd[0]), *cmd[1:]]
        argv += (["--device", device] if step.device_flag else []) + (list(step.quick_args) if quick else [])
        log.write(f"\n$ {' '.join(argv[1:])}\n")
        log.flush()
        r = subprocess.run(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        log.write(r.stdout + r.stderr)
        if r.returncode != 0:
            said = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")] or r.stderr.strip().splitlines()[-1:]
            raise CourseError(f"{step.name} stopped: {(said or ['exit status %d' % r.returncode])[-1]} — "
                              f"fix it and resume with `make {step.name}` (log: {log.name})")
        summaries.append(last_json(r.stdout))
    figures = []
    for b in step.bars:
        v = b.value(summaries)
        figures.append({"label": b.label, "value": v, "shown": "—" if v is None else b.fmt.format(v),
                        "bar": f"{b.op} {b.fmt.format(b.bar)}", "passed": b.passed(v)})
    return {"step": step.name, "title": step.title, "seconds": round(time.perf_counter() - t0, 1), "quick": quick,
            "summaries": summaries, "figures": figures, "passed": all(f["passed"] for f in figures)}


def line_of(rec: dict) -> str:
    shown = "; ".join(f"{f['label']}: {f['shown']} (bar {f['bar']}) {'PASS' if f['passed'] else 'FAIL'}"
                      for f in rec["figures"])
    return f"{rec['step']:<8} {rec['seconds']:7.1f} s  {'PASS' if rec['passed'] else 'FAIL'}  {shown}"


def main(argv=None):
    import argparse
    p = argparse.ArgumentParser(description="Run the whole course in order and write runs/course/report.html.")
    p.add_argument("--only", nargs="*", default=None, help="只跑这些步 run only these steps (step1 ... step6, numeric)")
    p.add_argument("--device", default="cpu", help="设备 device for every step: cpu, cuda, auto")
    p.add_argument("--quick", action="store_true", help="冒烟测试 seconds per step (for tests)")
    p.add_argument("--force", action="store_true", help="重跑 redo steps that are already done")
    p.add_argument("--report", action="store_true", help="只重建报告 only rebuild the report from runs/")
    args = p.parse_args(argv)
    from course.report import write_report
    COURSE_DIR.mkdir(parents=True, exist_ok=True)
    if args.report:
        print(f"report: {write_report()}")
        return
    unknown = [n for n in (args.only or []) if n not in BY_NAME]
    if unknown:
        raise CourseError(f"unknown step {unknown[0]!r}; choose from {', '.join(BY_NAME)}")
    chosen = [BY_NAME[n] for n in args.only] if args.only else [s for s in STEPS if not s.optional or
                                                                  (REPO_ROOT / s.commands[0][0]).is_file()]
    t0 = time.perf_counter()
    for step in chosen:
        marker = COURSE_DIR / f"{step.name}.json"
        if marker.is_file() and not args.force and not args.only:
            print(line_of(json.loads(marker.read_text())) + "   (done earlier; --force redoes it)", flush=True)
            continue
        print(f"==> {step.name}: {step.title}", flush=True)
        with open(COURSE_DIR / f"{step.name}.log", "w", encoding="utf-8") as log:
            rec = run_step(step, args.device, args.quick, log)
        atomic_write_text(marker, json.dumps(rec, ensure_ascii=False, indent=1))
        print(line_of(rec), flush=True)
    total = time.perf_counter() - t0
    meta = {"total_s": round(total, 1), "device": args.device, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
            "python": platform.python_version(), "quick": args.quick, "finished": time.strftime("%Y-%m-%d %H:%M")}
    atomic_write_text(COURSE_DIR / "run.json", json.dumps(meta, indent=1))
    print(f"\ncourse: {total / 60:.1f} min; report: {write_report()}")
    failed = [s.name for s in chosen if not json.loads((COURSE_DIR / f"{s.name}.json").read_text())["passed"]]
    if failed and args.quick:
        print(f"(quick mode: the bars are for the full run; {', '.join(failed)} would not meet them with this little training)")
    elif failed:
        raise CourseError(f"{', '.join(failed)} did not meet every bar (see the lines above)")


if __name__ == "__main__":
    from common.cli import run
    run(main)
