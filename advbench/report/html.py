"""A standalone HTML report: title and date, the table with its caption, the checks explained where they are
flagged, the runs and commands behind every row, and the plots (PNG embedded as base64, so the page is one file).
"""

from __future__ import annotations

import base64
import html as _html
import time
from pathlib import Path

import pandas as pd

from advbench import __version__
from advbench.report.details import CHECK_HELP, RunInfo
from advbench.report.plots import CAPTIONS

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;padding:0 1em;color:#222}
h1{margin-bottom:.2em}.meta{color:#666;margin-top:0}
table{border-collapse:collapse;margin:1em 0}
table th,table td{border-bottom:1px solid #ccc;padding:4px 8px;text-align:right;vertical-align:top}
table th:first-child,table td:first-child{text-align:left}
table td.checks{text-align:left;max-width:22em}
caption{caption-side:top;text-align:left;padding:6px 0;font-weight:600}
.pass{color:#276227}.warn{color:#8a5a00}.fail{color:#a11}
pre{background:#f5f5f5;padding:6px 8px;overflow-x:auto;white-space:pre-wrap}
figure{margin:1.5em 0}figure img{max-width:100%;display:block;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}dt{font-family:monospace;font-weight:600}dd{margin:0 0 .5em 1.5em}
details summary{cursor:pointer}
"""


def _esc(text: object) -> str:
    return _html.escape(str(text))


def html_page(caption: str, table: pd.DataFrame, notes: list[str] | None = None, plots: list[Path] | None = None,
              title: str = "advbench report", *, details: dict[str, list[RunInfo]] | None = None,
              facts: list[str] | None = None, generated: str | None = None) -> str:
    """A standalone page. Cells may contain ``<b>`` marks for the best value, everything else is escaped.

    ``details``: row label -> the runs behind it (commands, attack settings, checks), shown under the table and
    used to explain the ``Checks`` cells in place; ``facts``: caption facts listed under the table (n-eval,
    seeds, AutoAttack version); ``generated``: the date line (default: now, UTC)."""
    when = generated or time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    n_runs = sum(len(v) for v in (details or {}).values())
    meta = f"Generated {_esc(when)} by advbench {_esc(__version__)}" + (f" from {n_runs} run(s)" if n_runs else "")
    parts = [f"<h1>{_esc(title)}</h1>", f'<p class="meta">{meta}.</p>', _table(caption, table, details or {})]
    if facts:
        parts.append("<ul class=\"facts\">" + "".join(f"<li>{_esc(f)}</li>" for f in facts) + "</ul>")
    if notes:
        parts.append("<ul class=\"notes\">" + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul>")
    if details:
        parts += [_checks_legend(details), _runs_section(details)]
    if plots:
        parts.append(_plots_section(plots))
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{_esc(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")


def _table(caption: str, table: pd.DataFrame, details: dict[str, list[RunInfo]]) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in [table.index.name or "", *table.columns])
    rows = []
    anchors = _anchors(details)
    for idx, row in table.iterrows():
        runs_of = details.get(str(idx))
        label = f'<a href="#{anchors[str(idx)]}">{_esc(idx)}</a>' if runs_of else _esc(idx)
        cells = []
        for col, value in row.items():
            if col == "Checks" and runs_of:
                cells.append(f'<td class="checks">{_checks_cell(str(value), runs_of)}</td>')
            else:
                cells.append(f"<td>{_cell(value)}</td>")
        rows.append(f"<tr><td>{label}</td>{''.join(cells)}</tr>")
    return (f"<table><caption>{_esc(caption)}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def _anchors(details: dict[str, list[RunInfo]]) -> dict[str, str]:
    """Row label -> the id of its section under the table."""
    return {label: f"row-{i}" for i, label in enumerate(details)}


def _cell(value: object) -> str:
    text = _esc(value)
    return text.replace("&lt;b&gt;", "<b>").replace("&lt;/b&gt;", "</b>")


def _status_class(text: str) -> str:
    low = text.lower()
    return "fail" if low.startswith("fail") else "warn" if low.startswith("warn") else "pass"


def _checks_cell(flag: str, runs_of: list[RunInfo]) -> str:
    """The row's check status, opening to every non-passing check: what it verifies and what it found."""
    bad: dict[str, list[str]] = {}
    names: set[str] = set()
    for run in runs_of:
        for s in run.suites:
            for c in s.checks:
                names.add(c["name"])
                if c.get("status") != "pass":
                    bad.setdefault(c["name"], []).append(f"{c['status']}: {c.get('message', '')}")
    if not names:
        return _esc(flag)
    if not bad:
        body = f"all {len(names)} checks passed: " + ", ".join(sorted(names))
        return f'<details><summary class="pass">{_esc(flag)}</summary>{_esc(body)}</details>'
    items = "".join(f"<li><b>{_esc(n)}</b>: {_esc(CHECK_HELP.get(n, ''))} <i>Found:</i> "
                    f"{_esc('; '.join(dict.fromkeys(found)))}</li>" for n, found in sorted(bad.items()))
    return f'<details><summary class="{_status_class(flag)}">{_esc(flag)}</summary><ul>{items}</ul></details>'


def _checks_legend(details: dict[str, list[RunInfo]]) -> str:
    names = sorted({c["name"] for runs_of in details.values() for r in runs_of for s in r.suites for c in s.checks})
    if not names:
        return ""
    items = "".join(f"<dt>{_esc(n)}</dt><dd>{_esc(CHECK_HELP.get(n, 'see docs/attacks.md'))}</dd>" for n in names)
    return ("<h2>Checks</h2><p>Every result is checked for signs of a weak or broken evaluation; the Checks column "
            "shows the worst status of a row (click it for the reasons). pass / warn / fail tolerances are in images: "
            "see docs/attacks.md.</p><dl>" + items + "</dl>")


def _runs_section(details: dict[str, list[RunInfo]]) -> str:
    out = ["<h2>Runs and commands</h2>"]
    anchors = _anchors(details)
    for label, runs_of in details.items():
        out.append(f'<section id="{anchors[label]}"><h3>{_esc(label)}</h3>')
        for run in runs_of:
            out.append(f"<p><code>{_esc(run.path)}</code> — seed {_esc(run.seed)}"
                       + (f", trained {_esc(run.created)}" if run.created else "") + "</p>")
            out.append(f"<pre>{_esc(run.command)}</pre>")
            for s in run.suites:
                status = f' — checks: <span class="{_status_class(s.status or "pass")}">{_esc(s.status)}</span>' \
                    if s.status else ""
                aa = f"; AutoAttack {_esc('; '.join(s.autoattack))}" if s.autoattack else ""
                out.append(f"<p>suite <b>{_esc(s.suite)}</b>: first {s.n_eval} test images, seed {_esc(s.seed)}"
                           f"{aa}{status}</p><pre>{_esc(s.command)}</pre>")
        out.append("</section>")
    return "\n".join(out)


def _plots_section(plots: list[Path]) -> str:
    figs = []
    for p in plots:
        data = base64.b64encode(Path(p).read_bytes()).decode()
        cap = CAPTIONS.get(Path(p).name, Path(p).stem.replace("_", " "))
        figs.append(f'<figure><img alt="{_esc(Path(p).stem)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{_esc(cap)}</figcaption></figure>")
    return "<h2>Plots</h2>" + "".join(figs)
