"""The whole course end to end: `python -m course.chain --quick` through every step into a tmp COURSE_RUNS, each
step from the artifact the one before made (checked in the checkpoints and the steps' own logs), the report with
every step's section, rendered in headless Chromium; resuming, and the one-line errors of a missing input and
of a failing step."""
import json
import os
import subprocess
import sys
import time

import pytest

from common import REPO_ROOT
from course.chain import STEPS

STEP_NAMES = [s.name for s in STEPS if s.present()]


def chain(runs, *argv, timeout=400):
    env = {**os.environ, "COURSE_RUNS": str(runs), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "course.chain", *argv], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def quick_course(tmp_path_factory):
    """The quick chain, once for this module → (runs folder, its result, seconds)."""
    runs = tmp_path_factory.mktemp("course") / "runs"
    t0 = time.perf_counter()
    r = chain(runs, "--quick")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return runs, r, time.perf_counter() - t0


def record(runs, name):
    return json.loads((runs / "course" / f"{name}.json").read_text(encoding="utf-8"))


def config(runs, name):
    return json.loads((runs / name / "config.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_quick_chain_runs_every_step_in_order_with_one_line_each(quick_course):
    runs, r, seconds = quick_course
    lines = [ln for ln in r.stdout.splitlines() if ln.split(" ", 1)[0] in STEP_NAMES]
    assert [ln.split()[0] for ln in lines] == STEP_NAMES, r.stdout
    for ln in lines:  # its number: a time, PASS/FAIL overall and per bar
        assert " s  " in ln and ("PASS" in ln or "FAIL" in ln) and "(bar " in ln, ln
    for name in STEP_NAMES:
        rec = record(runs, name)
        assert rec["quick"] and rec["summaries"] and len(rec["figures"]) == len(next(s for s in STEPS if s.name == name).bars)
    assert (runs / "course" / "report.html").is_file() and "report:" in r.stdout
    print(f"quick chain: {seconds:.0f} s")   # timed in the README under an exclusive lock, not asserted here


@pytest.mark.slow
def test_each_step_starts_from_the_artifact_the_step_before_made(quick_course):
    """Not a --quick stand-in: every checkpoint names its input, the steps' logs say where they started, and the
    tokenizer of step 1 is the one every later checkpoint carries."""
    from step1_tokenizer.model import load_tokenizer
    from step2_gpt.model import UNTRAINED
    from step3_pretrain.data import tokenizer_fingerprint
    runs, _, _ = quick_course
    logs = {n: (runs / "course" / f"{n}.log").read_text(encoding="utf-8") for n in STEP_NAMES}
    assert not [n for n, text in logs.items() if UNTRAINED in text]
    step1_tok = (runs / "tokenizer" / "tokenizer.json").read_bytes()
    assert config(runs, "pretrain")["tokenizer_fingerprint"] == tokenizer_fingerprint(load_tokenizer(runs / "tokenizer"))
    for folder in ("pretrain", "sft", "reward", "rlhf", "vlm_pretrain", "vlm_sft"):
        assert (runs / folder / "tokenizer.json").read_bytes() == step1_tok, folder
    assert config(runs, "sft")["train_args"]["init"] == str(runs / "pretrain")
    assert f"start: {runs / 'pretrain'}" in logs["step4"]
    for folder in ("reward", "rlhf"):
        assert config(runs, folder)["train_args"]["init"] == str(runs / "sft"), folder
    assert f"start: {runs / 'sft'}" in logs["step5"]
    for folder in ("vlm_pretrain", "vlm_sft"):
        c = config(runs, folder)
        assert c["train_args"]["init"] == str(runs / "rlhf") and c["model"]["vlm"]["vision_encoder"] == str(runs / "clip")
    if "numeric" in STEP_NAMES:   # step 6's numeric lesson, when this copy has it, from runs/vlm_sft
        assert config(runs, "vlm_numeric")["train_args"]["init"] == str(runs / "vlm_sft")
    # ... and stage 1 really holds step 5's weights: its LLM is step 5's model after a few projection-led steps
    from safetensors.torch import load_file
    rlhf, vlm = load_file(runs / "rlhf" / "model.safetensors"), load_file(runs / "vlm_pretrain" / "model.safetensors")
    llm = {k.removeprefix("llm."): v for k, v in vlm.items() if k.startswith("llm.")}
    assert llm.keys() == rlhf.keys()
    moved = sum(float((llm[k] - rlhf[k]).norm()) for k in rlhf) / sum(float(v.norm()) for v in rlhf.values())
    assert moved < 0.2, moved   # measured: 0 (stage 1 frozen), 0.07 after quick stage 2; a fresh init is 0.58 away


@pytest.mark.slow
def test_the_report_has_every_step_with_its_numbers_curves_and_answers(quick_course):
    runs, _, _ = quick_course
    page = (runs / "course" / "report.html").read_text(encoding="utf-8")
    for name in STEP_NAMES:
        section = page.split(f'<section id="{name}">', 1)[1].split("</section>", 1)[0]
        assert "<th>measured</th>" in section and "Not run yet" not in section, name
        assert "not available" not in section, section[:3000]   # every view could load its artifacts
    for folder in ("pretrain", "sft", "reward", "rlhf", "vlm_pretrain", "vlm_sft"):
        assert f"runs/{folder}: loss curve" in page
    assert page.count('class="tok"') > 10 and "greedy continuation" in page and "runs/sft answers" in page
    assert "reward_hacking.png" in page and "Pretrain_vlm" in page and "SFT_vlm" in page
    assert page.count("<img ") >= 6 + 6 and "Quick mode" in page and "torch " in page
    # self-contained: nothing is fetched
    for outside in ('src="http', "src='http", 'href="http', "<link", "<script", "url("):
        assert outside not in page, outside


@pytest.mark.slow
def test_the_report_renders_in_a_browser(quick_course, headless_chrome):
    """Headless Chromium draws the page: every image decodes from its data URL, nothing is requested from outside,
    and the screenshot is a drawn page, not a blank one."""
    from PIL import Image
    runs, _, _ = quick_course
    drv = headless_chrome(1200, 1600)
    drv.get((runs / "course" / "report.html").as_uri())
    assert "Zero to VLM" in drv.title
    broken = drv.execute_script("return [...document.images].filter(i => !i.complete || i.naturalWidth == 0).length")
    fetched = drv.execute_script("return performance.getEntriesByType('resource').map(e => e.name)"
                                 ".filter(n => !n.startsWith('data:'))")
    n_images = drv.execute_script("return document.images.length")
    assert broken == 0 and fetched == [] and n_images >= 12, (broken, fetched, n_images)
    shot = runs / "course" / "report.png"
    assert drv.save_screenshot(str(shot))
    with Image.open(shot) as im:
        grey = im.convert("L")
        lo, hi = grey.getextrema()
        inked = sum(grey.histogram()[:200]) / (grey.size[0] * grey.size[1])
    assert grey.size[0] >= 1000 and hi - lo > 150 and inked > 0.02, (grey.size, lo, hi, inked)


@pytest.mark.slow
def test_a_killed_chain_resumes_without_redoing_finished_steps(quick_course):
    """A run killed inside step 2 left no step2.json (records are written after a step's commands succeeded):
    the next run does step 2 and nothing else, and `--report` rebuilds the page without training."""
    runs, _, _ = quick_course
    (runs / "course" / "step2.json").unlink()
    kept = {n: (runs / "course" / f"{n}.json").read_bytes() for n in STEP_NAMES if n != "step2"}
    r = chain(runs, "--quick")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "==> step2" in r.stdout and [n for n in kept if f"==> {n}" in r.stdout] == [], r.stdout
    assert sum("(done earlier" in ln for ln in r.stdout.splitlines()) == len(kept)
    assert kept == {n: (runs / "course" / f"{n}.json").read_bytes() for n in kept}
    before = (runs / "course" / "report.html").stat().st_mtime
    r = chain(runs, "--report")
    assert r.returncode == 0 and "==>" not in r.stdout and (runs / "course" / "report.html").stat().st_mtime > before


def test_a_missing_input_names_the_target_that_makes_it(tmp_path, one_line_error):
    r = chain(tmp_path, "--only", "step4", timeout=120)
    one_line_error(r, "step4 needs")
    assert "pretrain, which is missing: make it with `make step3`" in r.stderr, r.stderr


def test_a_failing_step_stops_with_its_own_line_and_the_target_that_resumes(tmp_path, one_line_error):
    (tmp_path / "pretrain").mkdir()
    (tmp_path / "pretrain" / "config.json").write_text("{not json")
    r = chain(tmp_path, "--only", "step4", "--quick", timeout=180)
    one_line_error(r, "step4 stopped: step4_sft/train.py: ")
    assert "config.json" in r.stderr and "`make course` resumes here" in r.stderr and "`make step4`" in r.stderr
    assert not (tmp_path / "course" / "step4.json").exists() and (tmp_path / "course" / "step4.log").is_file()


def test_unknown_and_absent_steps_are_one_line(tmp_path, one_line_error):
    one_line_error(chain(tmp_path, "--only", "step9", timeout=60), "unknown step 'step9'")
    absent = [s for s in STEPS if s.optional and not s.present()]
    if absent:
        one_line_error(chain(tmp_path, "--only", absent[0].name, timeout=60), "is not in this copy of the course yet")
