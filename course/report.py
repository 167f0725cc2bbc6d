"""runs/course/report.html: one self-contained page (images inlined, nothing fetched) with, for each step, its
numbers against their bars, its loss curve and what its model does; the machine, the versions, the total time.

Built only from what is in runs/ (`make report` rebuilds it without training). A step that has not run yet
has a section that says so and which target makes it.
"""
import base64
import html
import json
from pathlib import Path

from common import RUNS_DIR
from common.files import atomic_write_text

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:0}.meta{color:#666}section{border-top:1px solid #ddd;margin-top:2em;padding-top:.5em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}img{max-width:100%}
.tok{display:inline-block;border:1px solid #888;border-radius:3px;margin:1px;padding:0 2px;font-family:monospace}
pre{background:#f6f8fa;padding:.5em;white-space:pre-wrap}"""


def esc(x) -> str:
    return html.escape(str(x))


def img(path) -> str:
    """An <img> with the PNG inlined as a data URL, or nothing when the file is absent."""
    path = Path(path)
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{esc(path.name)}" src="data:image/png;base64,{data}">'


def table(header, rows) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def figures_table(rec: dict) -> str:
    rows = [(esc(f["label"]), esc(f["shown"]), esc(f["bar"]),
             f'<span class="{"pass" if f["passed"] else "fail"}">{"PASS" if f["passed"] else "FAIL"}</span>')
            for f in rec["figures"]]
    return table(("number", "measured", "bar", ""), rows) + f"<p>{rec['seconds']:.0f} s" + \
        (" (quick mode)" if rec.get("quick") else "") + "</p>"


def tokenizer_view() -> str:
    """How step 1's tokenizer cuts one sentence."""
    from step1_tokenizer.model import load_tokenizer
    tok = load_tokenizer(RUNS_DIR / "tokenizer")
    text = "小明有3个苹果，吃了1个，还剩2个。There are 2 shapes: a big red circle at the top left."
    ids = tok.encode(text)
    cells = "".join(f'<span class="tok">{esc(tok.token_str(i))}</span>' for i in ids)
    return f"<p>{esc(text)} → {len(ids)} tokens:</p><p>{cells}</p>"


def pretrain_view() -> str:
    """Greedy continuations of the pretrained model."""
    import torch
    from step2_gpt.model import load_gpt
    model, tok, _ = load_gpt(RUNS_DIR / "pretrain")
    rows = []
    for prompt in ("小明有", "There are"):
        new = model.generate(torch.tensor([tok.encode(prompt)]), max_new_tokens=40, temperature=0, eos_id=tok.eos_id)
        rows.append((esc(prompt), esc(tok.decode(new[0].tolist(), skip_special=True))))
    return table(("prompt", "greedy continuation"), rows)


# What each step's model does, shown from its artifacts: step → (title of the view, function).
VIEWS = {"step1": ("segmentation of a sentence", tokenizer_view), "step3": ("samples", pretrain_view)}
CURVES = {"step3": ("pretrain",)}


def step_section(name: str, title: str, rec: dict | None) -> str:
    out = [f'<section id="{name}"><h2>{esc(name)} · {esc(title)}</h2>']
    if rec is None:
        return "".join(out) + f"<p>Not run yet: <code>make {esc(name)}</code>.</p></section>"
    out.append(figures_table(rec))
    for folder in CURVES.get(name, ()):
        out.append(img(RUNS_DIR / folder / "loss_curve.png"))
    if name in VIEWS:
        label, view = VIEWS[name]
        try:
            out.append(f"<h3>{esc(label)}</h3>" + view())
        except Exception as e:  # a report never fails because one artifact is gone or damaged: it says so
            out.append(f"<p>({esc(label)} not available: {esc(e)})</p>")
    return "".join(out) + "</section>"


def write_report(path=None) -> Path:
    import torch
    from course.chain import COURSE_DIR, STEPS
    path = Path(path or COURSE_DIR / "report.html")
    meta_file = COURSE_DIR / "run.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    records = {s.name: json.loads((COURSE_DIR / f"{s.name}.json").read_text())
               for s in STEPS if (COURSE_DIR / f"{s.name}.json").is_file()}
    try:
        import transformers
        versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    except ImportError:
        versions = f"torch {torch.__version__}"
    summary = table(("step", "time", "result"), [
        (f'<a href="#{s.name}">{esc(s.name)} · {esc(s.title)}</a>',
         f"{records[s.name]['seconds']:.0f} s" if s.name in records else "—",
         ('<span class="pass">PASS</span>' if records[s.name]["passed"] else '<span class="fail">FAIL</span>')
         if s.name in records else "not run") for s in STEPS])
    total = sum(r["seconds"] for r in records.values())
    parts = [f"<!doctype html><html lang='zh'><head><meta charset='utf-8'><title>Zero to VLM — course report</title>"
             f"<style>{STYLE}</style></head><body><h1>从零到 VLM · Zero to VLM — course report</h1>",
             f"<p class='meta'>{esc(meta.get('machine', ''))}; {esc(versions)}; device {esc(meta.get('device', '?'))}; "
             f"steps total {total / 60:.1f} min; finished {esc(meta.get('finished', '?'))}"
             f"{' (quick mode)' if meta.get('quick') else ''}</p>", summary]
    parts += [step_section(s.name, s.title, records.get(s.name)) for s in STEPS]
    parts.append("</body></html>")
    atomic_write_text(path, "\n".join(parts))
    return path
