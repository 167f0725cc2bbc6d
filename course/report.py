"""runs/course/report.html: one self-contained page (images inlined, nothing fetched) with, for each step, its
numbers against their bars, its loss curves and what its model does; the machine, the versions, the total time.

Built only from what is in runs/ (`make report` rebuilds it without training): the records course/chain.py
wrote (runs/course/<step>.json) and the checkpoints, which it loads to show their answers (greedy, a few seconds
on a CPU). A step that has not run yet has a section that says so and which target makes it.
"""
import base64
import html
import json
import platform
import time
from pathlib import Path

from common import REPO_ROOT, RUNS_DIR
from common.files import atomic_write_text

STYLE = """body{font-family:system-ui,"Noto Sans CJK SC","PingFang SC","Microsoft YaHei",sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:0}.meta{color:#555}section{border-top:1px solid #ddd;margin-top:2em;padding-top:.5em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}.note{color:#9a6700}img{max-width:100%}
.tok{display:inline-block;border:1px solid #888;border-radius:3px;margin:1px;padding:0 2px;font-family:monospace}
.curves{display:flex;flex-wrap:wrap;gap:1em}.curves figure{margin:0;width:340px}figcaption{color:#555;font-size:90%}
pre{background:#f6f8fa;padding:.5em;white-space:pre-wrap;font-size:85%}"""
SENTENCE = "小明有3个苹果，吃了1个，还剩2个。There are 2 shapes: a big red circle at the top left."
VLM_PROMPTS = ("描述这张图片", "Describe this picture.")
EVAL_IMAGES = REPO_ROOT / "step6_vlm" / "eval_images"
# Run folders whose loss curves a step's section shows, beyond the ones the step makes.
MORE_CURVES = {"step5": ("dpo",)}


def esc(x) -> str:
    return html.escape(str(x))


def img(path, width=None) -> str:
    """An <img> with the PNG inlined as a data URL, or nothing when the file is absent."""
    path = Path(path)
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    size = f' width="{width}"' if width else ""
    return f'<img alt="{esc(path.name)}"{size} src="data:image/png;base64,{data}">'


def table(header, rows) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def verdict(ok: bool, yes="PASS", no="FAIL") -> str:
    return f'<span class="{"pass" if ok else "fail"}">{yes if ok else no}</span>'


def pct(v) -> str:
    return "—" if v is None else f"{v:.1%}"


def shown(v) -> str:
    return "—" if v is None else str(v)


def figures_table(rec: dict) -> str:
    rows = [(esc(f["label"]), esc(f["shown"]), esc(f["bar"]), verdict(f["passed"])) for f in rec["figures"]]
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(rec["finished"])) if rec.get("finished") else "?"
    cmds = "<br>".join(f"<code>{esc(c)}</code>" for c in rec.get("commands", []))
    return table(("number", "measured", "bar", ""), rows) + \
        f"<p>{rec['seconds']:.0f} s, finished {esc(when)}" + (" (quick mode)" if rec.get("quick") else "") + \
        (f"; ran {cmds}" if cmds else "") + "</p>"


def curves(folders) -> str:
    shown = [f'<figure>{img(RUNS_DIR / f / "loss_curve.png")}<figcaption>runs/{esc(f)}: loss curve</figcaption></figure>'
             for f in folders if (RUNS_DIR / f / "loss_curve.png").is_file()]
    return f'<div class="curves">{"".join(shown)}</div>' if shown else ""


# ----------------------------------------------------------------------------------------------------
# What each step's model does, shown from its artifacts


def tokenizer_view(rec) -> str:
    """How step 1's tokenizer cuts one sentence."""
    from step1_tokenizer.model import load_tokenizer
    tok = load_tokenizer(RUNS_DIR / "tokenizer")
    ids = tok.encode(SENTENCE)
    cells = "".join(f'<span class="tok">{esc(tok.token_str(i))}</span>' for i in ids)
    return f"<p>{esc(SENTENCE)} → {len(ids)} tokens ({len(SENTENCE)} characters, vocabulary {tok.vocab_size}):</p><p>{cells}</p>"


def bench_view(rec) -> str:
    """Step 2 trains nothing: its bench's figures are what it shows."""
    if rec is None:
        return ""
    s = rec["summaries"][0]
    rows = [(esc(k), esc(json.dumps(v, ensure_ascii=False))) for k, v in s.items() if not isinstance(v, (dict, list))]
    return table(("bench figure", "value"), rows)


def pretrain_view(rec) -> str:
    """Greedy continuations of the pretrained model."""
    import torch
    from step2_gpt.model import load_gpt
    model, tok, ckpt = load_gpt(RUNS_DIR / "pretrain")
    rows = []
    for prompt in ("小明有", "There are", "红色和蓝色"):
        new = model.generate(torch.tensor([tok.encode(prompt)]), max_new_tokens=40, temperature=0, eos_id=tok.eos_id)
        rows.append((esc(prompt), esc(tok.decode(new[0].tolist(), skip_special=True))))
    return f"<p>runs/pretrain: val loss {ckpt.metrics.get('val_loss', float('nan')):.3f} at step " \
           f"{esc(ckpt.metrics.get('step'))}.</p>" + table(("prompt", "greedy continuation"), rows)


def sft_view(rec) -> str:
    """The held-out exact match per task and language (the step's record), and one held-out answer per task and
    language from runs/sft, next to the wanted one."""
    from step2_gpt.model import load_gpt
    from step4_sft.data import world_conversations
    from step4_sft.scoring import greedy_answer
    out = []
    em = rec["summaries"][0].get("heldout_exact_match") if rec else None
    if em:
        langs = sorted({lang for v in em.values() for lang in v})
        out.append("<h4>held-out exact match per task</h4>" +
                   table(("task", *langs), [(esc(t), *(pct(v.get(lang)) for lang in langs)) for t, v in em.items()]))
    model, tok, _ = load_gpt(RUNS_DIR / "sft", expect_steps=("sft",))
    seen, rows = set(), []
    for conv in world_conversations(48, 1337, "heldout"):
        if (conv["task"], conv["lang"]) in seen:
            continue
        seen.add((conv["task"], conv["lang"]))
        msgs = conv["messages"]
        k = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        got, _ = greedy_answer(model, tok, msgs[:k], "cpu")
        rows.append((esc(conv["task"]), esc(conv["lang"]), esc(msgs[k - 1]["content"]), esc(msgs[k]["content"]),
                     esc(got), verdict(got == msgs[k]["content"], "✓", "✗")))
    out.append("<h4>runs/sft on held-out questions (one per task and language)</h4>" +
               table(("task", "lang", "question", "wanted", "runs/sft answers", ""), rows))
    return "".join(out)


def rlhf_view(rec) -> str:
    """The step's comparison (SFT → DPO → GRPO, the reward model), the same story questions answered by
    runs/sft and runs/rlhf, and the reward-hacking figure of the lesson."""
    from step2_gpt.model import load_gpt
    from step5_rlhf.data import check_answer, story_prompts
    from step5_rlhf.scoring import greedy_answers
    out = []
    s = rec["summaries"][0] if rec else None
    if s:
        rows = [("reward model", "held-out pair accuracy", pct(s.get("rm_pair_accuracy"))),
                *(("reward model", f"… when the bad answer is {esc(k)}", pct(v))
                  for k, v in (s.get("rm_pair_accuracy_by_kind") or {}).items()),
                ("DPO", "held-out implicit-reward accuracy", pct(s.get("dpo_implicit_accuracy"))),
                ("DPO", "reward-model win rate against SFT", pct(s.get("dpo_rm_win_rate"))),
                ("SFT", "verifiable accuracy (held-out stories)", pct(s.get("sft_verifiable_accuracy"))),
                ("GRPO (runs/rlhf)", "verifiable accuracy (held-out stories)", pct(s.get("grpo_verifiable_accuracy"))),
                ("GRPO (runs/rlhf)", "gain over SFT", "—" if s.get("grpo_gain") is None else f"{s['grpo_gain']:+.1%}"),
                ("GRPO (runs/rlhf)", "KL to SFT per answer", esc(shown(s.get("kl_to_sft")))),
                ("GRPO (runs/rlhf)", "mean answer length (tokens)", esc(shown(s.get("answer_tokens"))))]
        out.append("<h4>SFT against the aligned models</h4>" + table(("model", "measure", "value"), rows))
    prompts = story_prompts(6, 1337, "heldout")
    answers = {}
    for name in ("sft", "rlhf"):
        model, tok, _ = load_gpt(RUNS_DIR / name, expect_steps=("sft", "rlhf"))
        answers[name] = [(text, check_answer(text, ended, p["truth"]))
                         for p, (_, _, text, ended) in zip(prompts, greedy_answers(model, tok, prompts, "cpu"))]
    rows = [(esc(p["prompt"][-1]["content"]), esc(p["answer"]),
             *(f"{esc(answers[n][i][0])} {verdict(answers[n][i][1], '✓', '✗')}" for n in ("sft", "rlhf")))
            for i, p in enumerate(prompts)]
    out.append("<h4>the same held-out stories, greedy (✓ = the checker accepts it)</h4>" +
               table(("question", "right answer", "runs/sft", "runs/rlhf"), rows))
    hacking = REPO_ROOT / "step5_rlhf" / "reward_hacking.png"
    if hacking.is_file():
        out.append("<h4>reward hacking (the lesson's figure: GRPO chasing the reward model at β = 0, 0.04, 1)</h4>"
                   + img(hacking, 700))
    return "".join(out)


def vision_encoder_of(folder: Path):
    """The encoder a VLM checkpoint names, or this runs/clip when the named folder has moved away with its runs."""
    name = json.loads((folder / "config.json").read_text())["model"]["vlm"]["vision_encoder"]
    looks_local = name.startswith(("/", ".")) or Path(name).name == "clip"
    return str(RUNS_DIR / "clip") if looks_local and not Path(name).exists() and (RUNS_DIR / "clip").is_dir() else None


def vlm_view(rec) -> str:
    """The lesson's pictures, each described by Pretrain_vlm (stage 1) and SFT_vlm (stage 2) side by side."""
    from step6_vlm.chat import answer
    from step6_vlm.data import load_image
    from step6_vlm.model import load_vlm
    from step6_vlm.vision import load_image_processor
    pictures = sorted(EVAL_IMAGES.glob("*.png"))
    stages = [s for s in ("vlm_pretrain", "vlm_sft") if (RUNS_DIR / s / "config.json").is_file()]
    if not pictures or not stages:
        return "<p>(no VLM checkpoint in runs/ to ask)</p>"
    said = {}
    for s in stages:
        vlm, tok, _ = load_vlm(RUNS_DIR / s, vision_encoder=vision_encoder_of(RUNS_DIR / s))
        proc = load_image_processor(vlm.config.vision_encoder)
        said[s] = {(p.name, q): answer(vlm, tok, proc, load_image(p), q, max_new_tokens=80)
                   for p in pictures for q in VLM_PROMPTS}
    titles = {"vlm_pretrain": "Pretrain_vlm (stage 1, runs/vlm_pretrain)", "vlm_sft": "SFT_vlm (stage 2, runs/vlm_sft)"}
    body = []
    for p in pictures:  # one row per prompt, the picture beside them all
        for j, q in enumerate(VLM_PROMPTS):
            pic = f'<td rowspan="{len(VLM_PROMPTS)}">{img(p, 126)}</td>' if j == 0 else ""
            body.append(f"<tr>{pic}<td>{esc(q)}</td>" + "".join(f"<td>{esc(said[s][p.name, q])}</td>" for s in stages) + "</tr>")
    head = "".join(f"<th>{esc(h)}</th>" for h in ("picture", "prompt", *(titles[s] for s in stages)))
    return "<h4>the lesson's pictures (step6_vlm/eval_images), greedy answers</h4>" + \
        f"<table><tr>{head}</tr>{''.join(body)}</table>"


def flat(d: dict, prefix="") -> list:
    """[(dotted key, value)] of a nested summary, for a table."""
    out = []
    for k, v in d.items():
        out += flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [(prefix + k, v)]
    return out


def numeric_view(rec) -> str:
    """The numeric lesson's eval (its last JSON line): the <num> head beside digits as text, in and out of range."""
    if rec is None:
        return ""
    s = rec["summaries"][-1]
    rows = [(esc(f"{split.replace('_', ' ')}: {metric}"), *(esc(shown(s.get(f"{v}_{split}_{metric}"))) for v in ("num_head", "digits")))
            for split in ("in_range", "out_of_range") for metric in ("relaxed", "mae", "exact")]
    rest = [(esc(k), esc(json.dumps(v, ensure_ascii=False))) for k, v in flat(s)
            if not k.startswith(("num_head_", "digits_"))]
    return "<h4>step6_vlm/numeric/eval.py</h4>" + table(("measure", "<num> head", "digits as text"), rows) + \
        (table(("figure", "value"), rest) if rest else "")


# step → (title of the view, function of the step's record or None).
VIEWS = {"step1": ("segmentation of a sentence", tokenizer_view), "step2": ("the bench", bench_view),
         "step3": ("samples", pretrain_view), "step4": ("answers per task", sft_view),
         "step5": ("alignment", rlhf_view), "step6": ("pictures", vlm_view), "numeric": ("numbers", numeric_view)}


def step_section(step, rec, stale) -> str:
    from course.chain import has_artifact
    out = [f'<section id="{step.name}"><h2>{esc(step.name)} · {esc(step.title)}</h2>']
    made = [f for f in step.makes if has_artifact(f)]
    if rec is None and step.optional and not step.present():
        return "".join(out) + f"<p class='note'>Not in this copy of the course yet ({esc(step.commands[0][0])}).</p></section>"
    if rec is None:
        out.append(f"<p class='note'>Not run yet by the course chain: <code>make {esc(step.name)}</code> runs it"
                   + (f" (<code>make course</code> runs every step not done yet)." if step.name != "numeric" else ".")
                   + "</p>")
        if not made:
            return "".join(out) + "</section>"
        out.append(f"<p>From an earlier run, outside the chain: {', '.join('runs/' + esc(f) for f in made)}. What they do:</p>")
    else:
        if stale:
            out.append(f"<p class='note'>Out of date: {esc(stale)} (<code>make course</code> redoes it).</p>")
        out.append(figures_table(rec))
    out.append(curves([*step.makes, *MORE_CURVES.get(step.name, ())]))
    if step.name in VIEWS:
        label, view = VIEWS[step.name]
        try:
            out.append(f"<h3>{esc(label)}</h3>" + view(rec))
        except Exception as e:  # a report never fails because one artifact is gone or damaged: it says so
            out.append(f"<p class='note'>({esc(label)} not available: {esc(type(e).__name__)}: {esc(e)})</p>")
    if rec is not None:
        out.append("<details><summary>the step's JSON summaries</summary>" + "".join(
            f"<pre>{esc(json.dumps(s, ensure_ascii=False))}</pre>" for s in rec["summaries"]) + "</details>")
    return "".join(out) + "</section>"


def versions() -> str:
    import importlib.metadata as md
    names = ("torch", "transformers", "tokenizers", "safetensors", "numpy", "pillow", "matplotlib")
    found = []
    for n in names:
        try:
            found.append(f"{n} {md.version(n)}")
        except md.PackageNotFoundError:
            pass
    return f"Python {platform.python_version()}, " + ", ".join(found)


def write_report(path=None, steps=None) -> Path:
    from course.chain import COURSE_DIR, STEPS, has_artifact, load_records, machine, stale_reason
    steps = steps or STEPS
    if any(s.name in VIEWS for s in steps):  # the views only generate: no graph for backward
        import torch
        torch.set_grad_enabled(False)
    path = Path(path or COURSE_DIR / "report.html")
    meta_file = COURSE_DIR / "run.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    records = load_records(steps)
    stale = {s.name: stale_reason(s, records, steps) for s in steps if s.name in records}
    rows = []
    for s in steps:
        rec = records.get(s.name)
        earlier = any(has_artifact(f) for f in s.makes)
        result = ("not run" + (" (its earlier checkpoints are shown)" if earlier else "")) if rec is None else \
            verdict(rec["passed"]) + (" (out of date)" if stale[s.name] else "")
        shown = [f"{esc(f['shown'])} {verdict(f['passed'], '✓', '✗')}" for f in rec["figures"]] if rec else []
        rows.append((f'<a href="#{s.name}">{esc(s.name)} · {esc(s.title)}</a>',
                     f"{rec['seconds']:.0f} s" if rec else "—", result, " · ".join(shown)))
    total = sum(r["seconds"] for r in records.values())
    quick = any(r.get("quick") for r in records.values())
    head = (f"<!doctype html><html lang='zh'><head><meta charset='utf-8'><title>Zero to VLM — course report</title>"
            f"<style>{STYLE}</style></head><body><h1>从零到 VLM · Zero to VLM — course report</h1>"
            f"<p class='meta'>Machine: {esc(meta.get('machine') or machine('cpu'))}; device "
            f"{esc(meta.get('device', 'cpu'))}; {esc(versions())}.<br>Steps' time in all: {total / 60:.1f} min "
            f"({len(records)} of {len(steps)} steps recorded); last chain run {esc(meta.get('finished', '—'))}"
            f"{', ' + str(round(meta['total_s'] / 60, 1)) + ' min' if 'total_s' in meta else ''}; "
            f"report built {time.strftime('%Y-%m-%d %H:%M')}."
            f"{' <b>Quick mode</b>: seconds of training per step, so the bars are not expected to be met.' if quick else ''}"
            f"</p>")
    parts = [head, table(("step", "time", "result", "numbers (✓ = meets its bar)"), rows)]
    parts += [step_section(s, records.get(s.name), stale.get(s.name)) for s in steps]
    parts.append("</body></html>")
    atomic_write_text(path, "\n".join(parts))
    return path
