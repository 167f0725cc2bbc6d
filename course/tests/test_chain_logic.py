"""The chain's bookkeeping on stand-in steps (tiny scripts, no training): a killed run resumes at the step it was
in, a step is redone when one it builds on ran again after it, and a failing step stops the run with its own line."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

from common import REPO_ROOT

# A stand-in step script: counts its runs, waits while a "hold" file exists, fails on request, makes runs/<name>.
SCRIPT = textwrap.dedent('''
    import json, os, pathlib, sys, time
    name, runs = sys.argv[1], pathlib.Path(os.environ["COURSE_RUNS"])
    with open(runs / f"ran-{name}", "a") as f:
        f.write("x")
    while (runs / f"hold-{name}").exists():
        time.sleep(0.05)
    if (runs / f"fail-{name}").exists():
        print(f"error: {name} cannot read data.jsonl line 3: not JSON", file=sys.stderr)
        sys.exit(2)
    (runs / f"art_{name}").mkdir(exist_ok=True)
    (runs / f"art_{name}" / "config.json").write_text("{}")
    print(json.dumps({"score": 1.0}))
''')
# The chain's main() on three stand-in steps a → b → c, each needing the one before's artifact.
DRIVER = textwrap.dedent('''
    import sys
    from course.chain import Bar, Step, main
    script = sys.argv[1]
    steps = tuple(Step(n, f"stand-in {n}", ((script, n),), needs=(f"art_{p}",) if p else (), makes=(f"art_{n}",),
                       bars=(Bar("score", 0, "score", ">=", 1.0),), quick_args=(), device_flag=False)
                  for p, n in ((None, "a"), ("a", "b"), ("b", "c")))
    from common.cli import run
    run(lambda: main(sys.argv[2:], steps=steps))
''')


def start(runs, *argv):
    script = runs / "step.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "COURSE_RUNS": str(runs)}
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(script), *argv], cwd=REPO_ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)


def chain(runs, *argv):
    p = start(runs, *argv)
    out, err = p.communicate(timeout=120)
    return p.returncode, out, err


def runs_of(runs):
    return {n: len((runs / f"ran-{n}").read_text()) if (runs / f"ran-{n}").exists() else 0 for n in "abc"}


def test_a_killed_run_resumes_at_the_step_it_was_in(tmp_path):
    runs = tmp_path
    (runs / "hold-b").touch()
    p = start(runs)
    deadline = time.time() + 60
    while not (runs / "ran-b").exists():   # a finished, b started
        assert time.time() < deadline and p.poll() is None, p.communicate()
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)       # the whole run, b's command with it
    p.wait()
    assert (runs / "course" / "a.json").is_file() and not (runs / "course" / "b.json").exists()
    (runs / "hold-b").unlink()
    code, out, err = chain(runs)
    assert code == 0, err
    assert runs_of(runs) == {"a": 1, "b": 2, "c": 1}
    assert "(done earlier" in out.splitlines()[0] and "==> b" in out and "==> c" in out


def test_ctrl_c_is_one_line_that_says_where_to_resume(tmp_path, one_line_error):
    (tmp_path / "hold-b").touch()
    p = start(tmp_path)
    deadline = time.time() + 60
    while not (tmp_path / "ran-b").exists():
        assert time.time() < deadline and p.poll() is None, p.communicate()
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    one_line_error(subprocess.CompletedProcess([], p.returncode, out, err), "interrupted in b; `make course` resumes there")
    assert (tmp_path / "course" / "a.json").is_file() and not (tmp_path / "course" / "b.json").exists()


def test_a_step_is_redone_when_one_it_builds_on_ran_again(tmp_path):
    assert chain(tmp_path)[0] == 0
    assert chain(tmp_path, "--only", "a")[0] == 0          # `make a`: only a
    assert runs_of(tmp_path) == {"a": 2, "b": 1, "c": 1}
    page = (tmp_path / "course" / "report.html").read_text()
    assert page.count("Out of date") == 2 and "a ran again after it" in page and "b ran again after it" in page
    code, out, _ = chain(tmp_path)                       # `make course`: b and c were built on the old a
    assert code == 0 and runs_of(tmp_path) == {"a": 2, "b": 2, "c": 2}
    assert "==> b again: a ran again after it" in out and "Out of date" not in (tmp_path / "course" / "report.html").read_text()
    code, out, _ = chain(tmp_path)                       # nothing left to do
    assert code == 0 and runs_of(tmp_path) == {"a": 2, "b": 2, "c": 2} and out.count("(done earlier") == 3


def test_a_failing_step_stops_the_run_with_its_own_line(tmp_path, one_line_error):
    (tmp_path / "fail-b").touch()
    code, out, err = chain(tmp_path)
    one_line_error(subprocess.CompletedProcess([], code, out, err),
                   "step.py: b cannot read data.jsonl line 3: not JSON; fix it, then `make course` resumes here")
    assert err.startswith("error: b stopped: ") and "`make b` runs this step alone" in err and runs_of(tmp_path) == {"a": 1, "b": 1, "c": 0}
    rec = json.loads((tmp_path / "course" / "a.json").read_text())
    assert rec["passed"] and rec["figures"][0]["value"] == 1.0
    (tmp_path / "fail-b").unlink()
    code, out, err = chain(tmp_path)
    assert code == 0 and runs_of(tmp_path) == {"a": 1, "b": 2, "c": 1}, err


def test_a_missing_bar_key_shows_a_dash_and_fails(tmp_path):
    from course.chain import Bar
    b = Bar("x", 0, "absent", ">=", 0.5)
    assert b.value([{"score": 1}]) is None and not b.passed(None)
    assert Bar("nested", 0, "a.b", "<=", 2).passed(Bar("nested", 0, "a.b", "<=", 2).value([{"a": {"b": 1}}]))
