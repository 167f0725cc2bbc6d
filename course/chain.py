"""The whole course as one run: every step in order, each from the artifact the step before it made, one line per
step with its number against its bar, and a report a teacher can open (course/report.py).

    python -m course.chain                  # what `make course` runs: the steps not done yet, then the report
    python -m course.chain --only step4     # one step (`make step4`); a missing input names the target that makes it
    python -m course.chain --quick          # seconds per step (the end-to-end test runs this with COURSE_RUNS=tmp)
    python -m course.chain --report         # rebuild runs/course/report.html from runs/ without training

A step is done when runs/course/<step>.json exists (written atomically after its commands succeeded) and no step
it builds on was redone after it: a killed run resumes where it stopped, and after `make step4` the next
`make course` redoes steps 5 and 6 (they were built on the old runs/sft). --force redoes the steps it runs.
"""
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
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
            v = v.get(part) if isinstance(v, dict) else None
        return v

    def passed(self, v) -> bool:
        if not isinstance(v, (int, float)):   # missing (None) or not a number: the bar is not met
            return False
        return {">=": v >= self.bar, "<=": v <= self.bar, "==": v == self.bar}[self.op]


def runs(name: str):
    """A command argument that is the path runs/<name>, resolved when the command runs (COURSE_RUNS moves it)."""
    return lambda: str(RUNS_DIR / name)


def vlm_stages() -> str:
    """Step 6's stages: 1 and 2 always (the VLM is rebuilt on the language model the steps before just made),
    stage 0 (the small CLIP, which does not depend on them) only while runs/clip does not exist."""
    return ("" if (RUNS_DIR / "clip" / "config.json").is_file() else "clip,") + "pretrain,sft"


@dataclass(frozen=True)
class Step:
    name: str                         # make target
    title: str
    commands: tuple                   # each: (script, args...) relative to the repo root; a callable arg is called
    needs: tuple = ()                 # runs/<folder> checkpoints it reads
    makes: tuple = ()                 # runs/<folder> checkpoints it writes
    bars: tuple = ()
    quick_args: tuple | dict = ("--quick",)  # added to every command with --quick, or {script: args} (default --quick)
    device_flag: bool = True          # whether its commands take --device
    optional: bool = False            # skipped, not failed, when its first script does not exist

    def quick_for(self, script: str) -> tuple:
        return self.quick_args.get(script, ("--quick",)) if isinstance(self.quick_args, dict) else self.quick_args

    def present(self) -> bool:
        return (REPO_ROOT / self.commands[0][0]).is_file()


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
    # Named --init: the VLM must stand on step 5's model, and the checkpoint then records where it started.
    Step("step6", "VLM", (("step6_vlm/train.py", "--init", runs("rlhf"), "--stages", vlm_stages),), needs=("rlhf",),
         makes=("clip", "vlm_pretrain", "vlm_sft"),
         bars=(Bar("held-out VQA accuracy", 0, "vqa_accuracy", ">=", 0.99, "{:.1%}"),
               Bar("「描述这张图片」 thing-level F1", 0, "describe_f1", ">=", 0.95, "{:.1%}"),
               Bar("descriptions exactly right", 0, "describe_exact", ">=", 0.85, "{:.1%}"),
               Bar("hallucinated things (share of described things)", 0, "hallucination_rate", "<=", 0.02, "{:.1%}"),
               Bar("stage 1 alone (Pretrain_vlm): description F1", 0, "pretrain_describe_f1", ">=", 0.80, "{:.1%}"),
               Bar("wall time of the default CPU run, stages 0–2 (s)", 0, "wall_s", "<=", 900.0, "{:.0f}"))),
    Step("numeric", "Numeric tokens", (("step6_vlm/numeric/train.py", "--init", runs("vlm_sft")), ("step6_vlm/numeric/eval.py",)),
         needs=("vlm_sft",), makes=("vlm_numeric",), optional=True,
         quick_args={"step6_vlm/numeric/eval.py": ("--limit", "20")},  # eval.py has no --quick: fewer samples
         bars=(Bar("<num> head: in range, relaxed (within 5%)", 1, "num_head_in_range_relaxed", ">=", 0.95, "{:.1%}"),)),
)


def shown_path(path: Path) -> str:
    """runs/pretrain for the usual place, the full path when COURSE_RUNS moved the chain elsewhere."""
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def has_artifact(folder: str) -> bool:
    f = RUNS_DIR / folder
    return (f / "config.json").is_file() or (f / "tokenizer.json").is_file()


def load_records(steps=STEPS) -> dict:
    """{step name: its record} for the steps that finished (a damaged record counts as not finished)."""
    out = {}
    for s in steps:
        try:
            out[s.name] = json.loads((COURSE_DIR / f"{s.name}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
    return out


def stale_reason(step: Step, records: dict, steps=STEPS):
    """Why a finished step's record no longer describes its artifacts (a step it builds on ran again after it,
    or is itself out of date), else None."""
    makers = {folder: s for s in steps for folder in s.makes}
    for up in dict.fromkeys(makers[f] for f in step.needs if f in makers):
        rec = records.get(up.name)
        if rec and (rec.get("finished", 0) > records[step.name].get("finished", 0) or stale_reason(up, records, steps)):
            return f"{up.name} ran again after it"
    return None


def last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    raise CourseError("the command printed no JSON summary as its last line")


def check_inputs(step: Step, steps=STEPS) -> None:
    """A step whose input is missing is refused before it starts, naming the target that makes the input."""
    maker = {folder: s.name for s in steps for folder in s.makes}
    missing = [f for f in step.needs if not has_artifact(f)]
    if missing:
        raise CourseError(f"{step.name} needs {shown_path(RUNS_DIR / missing[0])}, which is missing: make it with "
                          f"`make {maker.get(missing[0], missing[0])}`")


def run_step(step: Step, device: str, quick: bool, log) -> dict:
    """Run the step's commands; return its record (summaries, figures, pass/fail, seconds, when it finished)."""
    t0, summaries, commands = time.perf_counter(), [], []
    for cmd in step.commands:
        argv = [sys.executable, str(REPO_ROOT / cmd[0]), *(a() if callable(a) else a for a in cmd[1:])]
        argv += (["--device", device] if step.device_flag else []) + (list(step.quick_for(cmd[0])) if quick else [])
        commands.append(" ".join([cmd[0], *argv[2:]]))
        log.write(f"\n$ {commands[-1]}\n")
        log.flush()
        r = subprocess.run(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        log.write(r.stdout + r.stderr)
        log.flush()
        said = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")] or r.stderr.strip().splitlines()[-1:]
        try:
            if r.returncode != 0:
                raise CourseError((said or [f"exit status {r.returncode}"])[-1].removeprefix("error: "))
            summaries.append(last_json(r.stdout))
        except CourseError as e:
            raise CourseError(f"{step.name} stopped: {cmd[0]}: {e}; fix it, then `make course` resumes here "
                              f"(`make {step.name}` runs this step alone; log: {shown_path(Path(log.name))})") from None
    figures = []
    for b in step.bars:
        v = b.value(summaries)
        shown = "—" if v is None else b.fmt.format(v) if isinstance(v, (int, float)) else str(v)
        figures.append({"label": b.label, "value": v, "shown": shown,
                        "bar": f"{b.op} {b.fmt.format(b.bar)}", "passed": b.passed(v)})
    return {"step": step.name, "title": step.title, "seconds": round(time.perf_counter() - t0, 1), "quick": quick,
            "commands": commands, "device": device, "finished": time.time(), "summaries": summaries,
            "figures": figures, "passed": all(f["passed"] for f in figures)}


def line_of(rec: dict) -> str:
    shown = "; ".join(f"{f['label']}: {f['shown']} (bar {f['bar']}) {'PASS' if f['passed'] else 'FAIL'}"
                      for f in rec["figures"])
    return f"{rec['step']:<8} {rec['seconds']:7.1f} s  {'PASS' if rec['passed'] else 'FAIL'}  {shown}"


def machine(device: str) -> str:
    """The machine in words: CPU architecture and count, and the GPU when the steps ran on one."""
    words = f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs"
    if device != "cpu":
        import torch
        if torch.cuda.is_available():
            words += f", {torch.cuda.get_device_name(0)}"
    return words


def main(argv=None, steps=STEPS):
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
        print(f"report: {shown_path(write_report(steps=steps))}")
        return
    by_name = {s.name: s for s in steps}
    unknown = [n for n in (args.only or []) if n not in by_name]
    if unknown:
        raise CourseError(f"unknown step {unknown[0]!r}; choose from {', '.join(by_name)}")
    absent = [by_name[n] for n in (args.only or []) if not by_name[n].present()]
    if absent:
        raise CourseError(f"{absent[0].name} is not in this copy of the course yet ({absent[0].commands[0][0]} is missing)")
    chosen = [by_name[n] for n in args.only] if args.only else [s for s in steps if s.present()]
    t0, ran = time.perf_counter(), []
    for step in chosen:
        records = load_records(steps)
        if step.name in records and not args.force and not args.only:
            why = stale_reason(step, records, steps)
            if why is None:
                print(line_of(records[step.name]) + "   (done earlier; --force redoes it)", flush=True)
                continue
            print(f"==> {step.name} again: {why}", flush=True)
        check_inputs(step, steps)
        log_path = COURSE_DIR / f"{step.name}.log"
        print(f"==> {step.name}: {step.title}   (log: {shown_path(log_path)})", flush=True)
        with open(log_path, "w", encoding="utf-8") as log:
            try:
                rec = run_step(step, args.device, args.quick, log)
            except KeyboardInterrupt:   # Ctrl-C: one line, not a traceback; the finished steps keep their records
                raise CourseError(f"interrupted in {step.name}; `make course` resumes there") from None
        atomic_write_text(COURSE_DIR / f"{step.name}.json", json.dumps(rec, ensure_ascii=False, indent=1))
        ran.append(rec)
        print(line_of(rec), flush=True)
    total = time.perf_counter() - t0
    meta = {"total_s": round(total, 1), "device": args.device, "machine": machine(args.device),
            "python": platform.python_version(), "quick": args.quick, "finished": time.strftime("%Y-%m-%d %H:%M"),
            "ran": [r["step"] for r in ran]}
    atomic_write_text(COURSE_DIR / "run.json", json.dumps(meta, indent=1))
    print(f"\ncourse: {total / 60:.1f} min; report: {shown_path(write_report(steps=steps))}")
    records = load_records(steps)
    failed = [s.name for s in chosen if not records[s.name]["passed"]]
    if failed and args.quick:
        print(f"(quick mode: the bars are for the full run; {', '.join(failed)} would not meet them with this little training)")
    elif failed:
        raise CourseError(f"{', '.join(failed)} did not meet every bar (see the lines above)")


if __name__ == "__main__":
    from common.cli import run
    run(main)
