"""report.html (self-contained: figures embedded as base64 PNG, inline CSS, no external links),
report.md (the same tables, the figures as PNG files next to it), benefit.csv, configs.csv."""
from __future__ import annotations

import base64
import html
import time
from pathlib import Path

from orchestrator.analysis import Analysis, headline
from orchestrator.analysis.estimates import BEST_MIN_COVERAGE
from orchestrator.report.figures import Figure, build_figures
from orchestrator.report.tables import Table, build_tables
from orchestrator.schema import better


def _table_html(t: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
    body = []
    for i, row in enumerate(t.rows):
        cls = f' class="{t.flags[i]}"' if t.flags and t.flags[i] in ("gain", "loss") else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    caption = f'<p class="caption">{html.escape(t.caption)}</p>' if t.caption else ""
    return (f"<h3>{html.escape(t.title)}</h3><div class=\"scroll\"><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>{caption}")


def _table_md(t: Table) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|")
    lines = [f"### {t.title}", "", "| " + " | ".join(map(esc, t.header)) + " |",
             "|" + "---|" * len(t.header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in t.rows]
    if t.caption:
        lines += ["", t.caption]
    return "\n".join(lines) + "\n"


def _figure_html(f: Figure) -> str:
    if f.png is None:
        return f"<h3>{html.escape(f.title)}</h3><p class=\"note\">{html.escape(f.note or '')}</p>"
    data = base64.b64encode(f.png).decode("ascii")
    return (f"<h3>{html.escape(f.title)}</h3><img alt=\"{html.escape(f.title)}\" src=\"data:image/png;base64,{data}\">"
            f"<p class=\"caption\">{html.escape(f.caption)}</p>")


def _figure_md(f: Figure) -> str:
    if f.png is None:
        return f"### {f.title}\n\n_{f.note}_\n"
    return f"### {f.title}\n\n![{f.title}]({f.name}.png)\n\n{f.caption}\n"


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
h3{font-size:1.05em;margin-bottom:.4em}
table{border-collapse:collapse;font-size:.85em;margin:.3em 0} th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;
white-space:nowrap} .scroll{overflow-x:auto;max-width:100%}
th{background:#f3f3f3} tr.gain td{background:#e8f5e9} tr.loss td{background:#fdecea}
.headline{background:#f7f9fc;border-left:4px solid #1f77b4;padding:.6em 1em;font-family:ui-monospace,monospace;
font-size:.85em;white-space:pre-wrap}
.caption,.note{color:#555;font-size:.85em;max-width:60em} img{max-width:100%;border:1px solid #eee}
.meta{color:#666;font-size:.85em} .toc{font-size:.9em} .toc a{color:#1f77b4}
"""  # noqa: E501


def method_notes(result: Analysis) -> list[str]:
    word = better(result.metric)
    sign = "baseline − shared" if word == "lower" else "shared − baseline"
    notes = [
        "The answer (top lines, first figure, benefit.csv's verdict and evidence): per data regime, each task's "
        "benefit pooled over all shared configurations is the log ratio log(metric_baseline / metric_shared) at "
        "the same seed (the geometric mean of the seed's baselines), averaged per seed; "
        f"{result.answer.test_words if result.answer else 'Student t over seeds'}, "
        "Holm over the tasks (family-wise 5%), each interval drawn at the level Holm used for its task, so verdict "
        "and interval always agree. evidence = pooled (no selection), confirmed (fresh seeds of a configuration "
        "chosen before) or exploratory (the best configuration on the seeds that chose it: optimistic, no "
        "verdict). The seeds-needed figures are for 80% power at the seed-to-seed noise measured here. "
        "The sections below are secondary: differences in metric units with bootstrap intervals; where the "
        "exploratory best configuration's interval excludes 0 while the answer says unclear, the difference is "
        "selection (it is the best of many on the same seeds), not evidence.",
        f"Metric: {result.metric} ({word} is better). Benefit = {sign}, so a positive benefit always means "
        f"sharing helped; ΔMTL (Maninis et al. 2019) = mean over tasks of (−1)^l·(M_shared − M_base)/M_base × 100 "
        f"with l = 1 for lower-is-better metrics: positive = better on average.",
        "Pairing: each shared trial is compared with the independent trial of the same baseline_key (same seed, "
        "data and ordinary knobs). All pairs of one configuration are compared at one iteration, the last that all "
        "of them reached (under ASHA seeds stop at different rungs: this neither mixes iterations nor keeps only "
        "ASHA's survivors). Diverged/errored trials, trials without metrics and unpaired trials are excluded and "
        "counted; divergence is shown per configuration.",
        f"Confidence intervals: 95% percentile bootstrap over seeds ({result.resamples} resamples, fixed RNG seed), "
        "with Hesterberg's small-sample expansion of the percentile levels. A bootstrap interval never leaves the "
        "range of the observed seeds, so with fewer than 5 seeds it covers less than 95% (3 seeds: ~75%) — "
        "flags from few seeds are marked. One seed gives a point estimate without an interval.",
        "Verdicts (gain / NEGATIVE TRANSFER) are made only without selection: on all shared configurations pooled "
        "and on each mode pooled, with simultaneous intervals (Student t over seeds, Bonferroni over the tasks × "
        "groups tested), so the chance of any false verdict in the headline is at most 5%. benefit.csv holds the "
        "pooled benefit with that interval (n_pairs = pairs pooled), and the mode and α of the best "
        "configuration (α = inf for hard sharing, the α → ∞ limit).",
        "The best configuration is exploratory: it is chosen as the highest mean ΔMTL on the same seeds it is "
        f"evaluated on, so its interval is optimistic, and it gets no verdict. Only configurations with at least "
        f"{BEST_MIN_COVERAGE:.0%} of the pairs of the best-covered one can be chosen, so one that lost seeds to "
        "divergence is not judged on its survivors.",
    ]
    return notes + list(result.notes)


def _sections(figures: dict[str, Figure], tables: dict[str, Table]) -> list[tuple[str, list[Figure | Table]]]:
    return [
        ("The answer", [figures["answer"], figures["alpha_answer"]]),
        ("Sharing benefit per task", [tables["best"], figures["benefit"], tables["pooled"], tables["modes"]]),
        ("Sensitivity", [figures["alpha"], figures["lambda"], figures["modes"]]),
        ("Budget and learning curves", [figures["budget"], figures["curves"]]),
        ("Samples", [figures["samples"]]),
        ("Configurations", [tables["configs"], tables["trials"]]),
        ("What was excluded", [tables["status"], tables["excluded"], tables["divergence"]]),
    ]


def _html(result: Analysis, meta: str, lines: list[str], notes: list[str],
          sections: list[tuple[str, list[Figure | Table]]]) -> str:
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Does sharing help? — "
             f"{html.escape(result.metric)}</title><style>{CSS}</style></head><body>",
             "<h1>Does sharing help?</h1>", f"<p class=\"meta\">{html.escape(meta)}</p>",
             f"<div class=\"headline\">{html.escape(chr(10).join(lines))}</div>",
             "<h2>How to read this</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>",
             "<p class=\"toc\">" + " · ".join(f"<a href=\"#s{i}\">{html.escape(title)}</a>"
                                             for i, (title, _) in enumerate(sections)) + "</p>"]
    for i, (title, items) in enumerate(sections):
        parts.append(f"<h2 id=\"s{i}\">{html.escape(title)}</h2>")
        parts += [_table_html(item) if isinstance(item, Table) else _figure_html(item) for item in items]
    parts.append("</body></html>")
    return "\n".join(parts)


def _markdown(meta: str, lines: list[str], notes: list[str], sections: list[tuple[str, list[Figure | Table]]]) -> str:
    parts = ["# Does sharing help?", "", meta, "", "```", *lines, "```", "", "## How to read this", "",
             *[f"- {n}" for n in notes], ""]
    for title, items in sections:
        parts += [f"## {title}", ""]
        parts += [_table_md(item) if isinstance(item, Table) else _figure_md(item) for item in items]
    return "\n".join(parts)


def write_report(result: Analysis, out: Path, top: int = 10) -> dict[str, Path]:
    """Write all report files into ``out`` and return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    figures = build_figures(result)
    for f in figures.values():
        if f.png is not None:
            (out / f"{f.name}.png").write_bytes(f.png)
    result.benefit_table.to_csv(out / "benefit.csv", index=False)
    result.configs.to_csv(out / "configs.csv", index=False)
    if result.answer is not None:
        result.answer.curve_table().to_csv(out / "alpha_curve.csv", index=False)
    meta = (f"Runs: {result.data.runs_text()} · {len(result.data.trials)} trials · "
            f"{len(result.pairs)} pairs · tasks {', '.join(result.tasks)} · metric {result.metric} · "
            f"generated {time.strftime('%Y-%m-%d %H:%M')}")
    lines, notes = headline(result), method_notes(result)
    sections = _sections(figures, build_tables(result, top))
    (out / "report.html").write_text(_html(result, meta, lines, notes, sections), encoding="utf-8")
    (out / "report.md").write_text(_markdown(meta, lines, notes, sections), encoding="utf-8")
    return {"html": out / "report.html", "md": out / "report.md", "csv": out / "benefit.csv", "dir": out}
