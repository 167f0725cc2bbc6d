"""The course's layout rules, checked on the whole tree: scripts are entry points, modules are libraries without
circles, lessons never import their lab, code speaks for itself, and a script offers only the flags it reads."""
import ast
import json
import re
import subprocess
import sys

import pytest

from common import REPO_ROOT

SCRIPT_NAMES = {"train", "demo", "bench", "eval", "ablate", "serve"}   # and train_*.py: entry points only
PACKAGES = ("common",) + tuple(sorted(p.name for p in REPO_ROOT.glob("step*_*") if p.is_dir()))


def is_script(module: str) -> bool:
    last = module.rsplit(".", 1)[-1]
    return last in SCRIPT_NAMES or last.startswith("train_")


def course_files(suffix: str) -> list:
    """Files of the course itself: no tests, no virtual environment, no run outputs."""
    out = []
    for top in PACKAGES:
        for f in sorted((REPO_ROOT / top).rglob(f"*{suffix}")):
            rel = f.relative_to(REPO_ROOT)
            if not any(part in ("tests", "runs", "__pycache__", ".ipynb_checkpoints") for part in rel.parts):
                out.append(f)
    return out


def module_name(path) -> str:
    rel = path.relative_to(REPO_ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports_of(source: str, where: str, package: str) -> list:
    """(line, module) for every import in the source, at any depth (an import inside a function counts too)."""
    found = []
    for node in ast.walk(ast.parse(source, filename=where)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: resolve against the file's package
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found += [(node.lineno, base)] + [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return [(n, m) for n, m in found if m.split(".")[0] in PACKAGES]


def notebook_sources(path) -> str:
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    return "\n".join(ln for cell in code for ln in cell.splitlines() if not ln.lstrip().startswith(("!", "%")))


def all_imports() -> dict:
    """module → [(line, imported module)] over the course's .py files and notebooks."""
    known = {module_name(f) for f in course_files(".py")}
    graph = {}
    for f in course_files(".py") + course_files(".ipynb"):
        src = notebook_sources(f) if f.suffix == ".ipynb" else f.read_text(encoding="utf-8")
        name = module_name(f) if f.suffix == ".py" else str(f.relative_to(REPO_ROOT))
        pkg = name.rsplit(".", 1)[0] if f.suffix == ".py" else ""
        graph[name] = [(n, m) for n, m in imports_of(src, str(f), pkg) if m in known]
    return graph


def test_no_file_imports_a_script():
    bad = [f"{mod}:{line} imports {target}" for mod, edges in all_imports().items()
           for line, target in edges if is_script(target) and target != mod]
    assert not bad, "scripts are entry points; move what they share into a module:\n" + "\n".join(bad)


def test_lesson_files_never_import_lab():
    bad = [f"{mod}:{line} imports {target}" for mod, edges in all_imports().items()
           for line, target in edges if ".lab" in f".{target}" and ".lab" not in f".{mod}" and "/lab/" not in mod]
    assert not bad, "\n".join(bad)


def test_modules_import_each_other_without_circles():
    graph = {mod: sorted({t for _, t in edges if t != mod}) for mod, edges in all_imports().items() if "/" not in mod}
    state, cycle = {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in graph.get(node, []):
            if state.get(nxt) == "open":
                cycle.extend(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
                return True
            if nxt not in state and visit(nxt, path + [nxt]):
                return True
        state[node] = "done"
        return False

    for mod in sorted(graph):
        if mod not in state and visit(mod, [mod]):
            break
    assert not cycle, "import circle: " + " → ".join(cycle)


def test_the_scan_finds_what_it_looks_for():
    # The checks above must be able to fail: a script import and a circle in made-up sources are seen.
    assert imports_of("from step1_tokenizer.train import x", "x.py", "step9") == [(1, "step1_tokenizer.train"),
                                                                                 (1, "step1_tokenizer.train.x")]
    assert is_script("step6_vlm.train_clip") and is_script("step2_gpt.demo") and not is_script("step1_tokenizer.bpe")
    assert imports_of("def f():\n    from . import model", "x.py", "step1_tokenizer") == [
        (2, "step1_tokenizer"), (2, "step1_tokenizer.model")]


CITATION = re.compile(r"seeds? ?00\d|种子 ?00\d|design §|COURSE_DESIGN|prototype|原型", re.IGNORECASE)


def test_code_and_lessons_cite_nothing_outside_the_repository():
    files = course_files(".py") + course_files(".ipynb") + [f for f in course_files(".md")]
    bad = [f"{f.relative_to(REPO_ROOT)}:{i}: {line.strip()[:80]}" for f in files
           for i, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1) if CITATION.search(line)]
    assert not bad, "say the idea instead of citing a document outside the repository:\n" + "\n".join(bad)


def shared_flags_offered(script) -> list:
    r = subprocess.run([sys.executable, script.name, "--help"], cwd=script.parent, capture_output=True, text=True,
                       timeout=60, env={"PATH": "", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-1500:]
    group = r.stdout.split("shared course flags:", 1)
    return re.findall(r"^\s+--([a-z-]+)", group[1], re.M) if len(group) == 2 else []


SCRIPTS = [f for f in course_files(".py") if is_script(module_name(f)) and "def main" in f.read_text(encoding="utf-8")]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_a_script_offers_only_shared_flags_it_reads(script):
    # A shared flag in --help must be read by the script (args.<flag>, or handed on by name to the code it runs).
    src = script.read_text(encoding="utf-8")
    unread = [f for f in shared_flags_offered(script)
              if not re.search(rf"args\.{f.replace('-', '_')}\b|[\"']{f.replace('-', '_')}[\"']|--{f}\b", src.split("def main", 1)[1])
              and not re.search(rf"args\.{f.replace('-', '_')}\b", src)]
    assert not unread, f"{script.name} offers --{', --'.join(unread)} but never reads them"
