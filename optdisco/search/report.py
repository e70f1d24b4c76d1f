"""A campaign as one self-contained HTML file (plots are PNGs embedded as base64).

Sections: the numbers (candidates, trained, cache hit rate, failures, time), best
fitness against evaluations for the evolution arm beside the random-search arm, fitness
against state memory with the Pareto front, training curves of the winners beside
AdamW, the leaderboard with the funnel stages, and the winner's lineage from its start.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from .classify import stored_class
from .leaderboard import rejections_text, references, rows
from .plots import png_img, pyplot
from .store import Store


def best_so_far(store: Store) -> dict[str, list[float]]:
    """Per arm, the best fitness after each of that arm's results (in completion order)."""
    out: dict[str, list[float]] = {}
    best: dict[str, float] = {}
    for r in store.completed():
        f = r.fitness if r.fitness is not None and math.isfinite(r.fitness) else -math.inf
        best[r.arm] = max(best.get(r.arm, -math.inf), f)
        out.setdefault(r.arm, []).append(best[r.arm])
    return out


def plot_progress(store: Store) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for arm, ys in sorted(best_so_far(store).items()):
        ax.step(range(1, len(ys) + 1), ys, where="post", label=f"{arm} ({len(ys)} evaluations)")
    ax.axhline(0.0, color="gray", lw=0.8, ls="--", label="tuned AdamW")
    ax.set_xlabel("evaluations in the arm")
    ax.set_ylabel("best fitness so far")
    ax.set_title("best fitness vs evaluations: evolution beside random search")
    ax.legend()
    return png_img(fig)


def pareto(points: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """The Pareto front of (states, fitness): the best fitness at each memory not beaten by less memory."""
    front, best = [], -math.inf
    for mem in sorted({m for m, _ in points}):
        f = max(f for m, ff in points if m == mem for f in [ff])
        if f > best:
            front.append((mem, f))
            best = f
    return front


def plot_pareto(store: Store) -> str:
    plt = pyplot()
    # only this plot needs it
    import numpy as np
    pts = [(r.n_states, r.fitness) for r in store.scored_search_programs()]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    if pts:
        rng = np.random.default_rng(0)
        xs = [m + rng.uniform(-0.12, 0.12) for m, _ in pts]
        ax.scatter(xs, [f for _, f in pts], s=12, alpha=0.5, label="candidates")
        front = pareto(pts)
        ax.plot([m for m, _ in front], [f for _, f in front], "r-o", label="Pareto front")
    ax.set_xlabel("state memory (fp32 tensors per parameter)")
    ax.set_ylabel("fitness")
    ax.set_title("fitness vs state memory")
    ax.legend()
    return png_img(fig)


def _curves(ev: dict[str, Any] | None) -> dict[str, list[float]]:
    """Loss curves per task from an evaluation's ``curves`` (a dict of lists, seeds averaged)."""
    if not ev or not ev.get("curves"):
        return {}
    c = ev["curves"]
    if isinstance(c, list):
        c = {"task": c}
    out = {}
    for task, v in c.items():
        if isinstance(v, dict):
            v = v.get("loss") or v.get("val") or next(iter(v.values()), [])
        if v and isinstance(v[0], list):  # several seeds or rows: average them
            n = min(len(x) for x in v)
            v = [sum(x[i] for x in v) / len(v) for i in range(n)]
        vals = [x for x in v if isinstance(x, (int, float))]
        if vals:
            out[str(task)] = vals
    return out


def plot_curves(store: Store, winners: list[int]) -> str:
    """Loss curves of the winners and of AdamW from the same evaluation settings: the last
    funnel stage that evaluated a winner (AdamW runs beside them there)."""
    from .cache import settings_key
    plt = pyplot()
    series: dict[str, dict[str, list[float]]] = {}
    title = ""
    for stage in reversed(json.loads(store.get_meta("funnel") or "[]")):
        ids = {r["id"]: r for r in stage["rows"]}
        shown = [w for w in winners[:3] if w in ids]
        if not shown:
            continue
        skey = settings_key(stage["settings"])
        for r in [ids[w] for w in shown] + [r for r in stage["rows"] if r["reference"]]:
            ev = store.cached_evaluation(store.program(r["id"]).fingerprint, skey)
            label = f"{r['name']} (tuned)" if r["reference"] else f"#{r['id']}"
            series[label] = _curves(ev)
        title = f" (funnel stage '{stage['stage']}')"
        break
    if not series:  # no funnel: the search evaluations of the winners
        for pid in winners[:3]:
            evs = store.evaluations(pid, "search")
            if evs:
                series[f"#{pid}"] = _curves(evs[0])
    tasks = sorted({t for s in series.values() for t in s})[:4]
    if not tasks:
        return "<p>No training curves were recorded by the evaluator.</p>"
    # two panels a row: four in one row were 1700 px wide, past the page's edge
    cols = min(2, len(tasks))
    n_rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(n_rows, cols, figsize=(5.0 * cols, 3.4 * n_rows), squeeze=False)
    for ax in axes.flat[len(tasks):]:
        ax.set_visible(False)
    for ax, task in zip(axes.flat, tasks):
        for name, s in series.items():
            if task in s:
                ax.plot(s[task], label=name)
        ax.set_yscale("log")
        ax.set_title(task)
        ax.set_xlabel("recorded step")
        ax.set_ylabel("validation loss")
        ax.legend(fontsize=8)
    fig.suptitle("training curves of the winners beside tuned AdamW" + title, y=1.0 + 0.03 / n_rows)
    fig.tight_layout()
    return png_img(fig)


def lineage_html(store: Store, pid: int) -> str:
    steps = list(reversed(store.lineage(pid)))
    items = []
    for r in steps:
        fit = "—" if r.fitness is None else f"{r.fitness:+.4f}"
        items.append(f"<li><b>#{r.id}</b> ({html.escape(r.mutation or r.arm)}), fitness {fit}"
                     f"<pre>{html.escape(r.source)}</pre></li>")
    return "<ol>" + "".join(items) + "</ol>"


def plot_lineage(store: Store, pid: int) -> str:
    plt = pyplot()
    steps = list(reversed(store.lineage(pid)))
    fig, ax = plt.subplots(figsize=(6.5, 3.0))
    ax.plot(range(len(steps)), [r.fitness if r.fitness is not None else float("nan") for r in steps], "o-")
    ax.set_xticks(range(len(steps)), [f"#{r.id}" for r in steps], rotation=45, fontsize=7)
    ax.set_ylabel("fitness")
    ax.set_title("the winner's lineage, from its start")
    return png_img(fig)


#: The page's style. Plots never overflow the page (img.plot), rule sources wrap, and each
#: rule's math sits on its own full-width row under the numbers (a table column squeezed a
#: long sympy form into a ribbon about ten characters wide).
STYLE = ("<style>body{font-family:sans-serif;max-width:1200px;margin:auto;padding:0 12px}"
         "pre{background:#f4f4f4;padding:6px;white-space:pre-wrap;overflow-wrap:anywhere;margin:0}"
         "td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}"
         "table{border-collapse:collapse;width:100%}img.plot{max-width:100%;height:auto}"
         "tr.math td{background:#fbfbf4;font-family:monospace;white-space:pre-wrap;overflow-wrap:anywhere}"
         "td.num{white-space:nowrap}</style>")


def write_report(db: str | Path, out: str | Path) -> Path:
    """Write the report of campaign ``db`` to ``out`` (one HTML file, nothing external)."""
    store = Store(db, create=False)
    try:
        c = store.counts()
        cfg_text = store.get_meta("config") or ""
        lb = rows(store, 10)
        found = json.loads(store.get_meta("found") or "[]")
        winners = found or [r["id"] for r in lb[:3]]
        secs = store.evaluation_seconds()
        hit = c["hits"] / c["done"] if c["done"] else 0.0
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'><title>optdisco campaign</title>",
            STYLE,
            "</head><body>",
            f"<h1>optdisco campaign: {html.escape(str(db))}</h1>",
            f"<p>phase: {html.escape(store.get_meta('phase') or '')}; candidates {c['done']}/{c['proposed']} "
            f"done, trained {c['trained']}, cache hits {c['hits']} ({100 * hit:.1f}%), failed {c['failed']}; "
            f"{secs[1]} evaluations took {secs[0] or 0:.1f} worker-seconds.</p>",
            f"<p>{html.escape(rejections_text(store))}</p>",
            f"<p>found (held up through every funnel stage): {found or 'none'}</p>", _found_html(store, found),
            "<h2>Best fitness vs evaluations</h2>", plot_progress(store),
            "<h2>Fitness vs state memory</h2>", plot_pareto(store),
            "<h2>Training curves</h2>", plot_curves(store, winners),
            "<h2>Leaderboard</h2>", _leaderboard_html(store, lb),
        ]
        if winners:
            parts += [f"<h2>Lineage of #{winners[0]}</h2>", plot_lineage(store, winners[0]),
                      lineage_html(store, winners[0])]
        parts += ["<h2>Config</h2>", f"<pre>{html.escape(cfg_text)}</pre>", "</body></html>"]
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(parts), encoding="utf-8")
        return path
    finally:
        store.close()


def _found_html(store: Store, found: list[int]) -> str:
    """Per found rule: its class (rediscovered X / variant of X / new structure, discovery or
    not) and, per funnel stage that compared it, its fitness against the catalog envelope."""
    funnel = json.loads(store.get_meta("funnel") or "[]")
    items = []
    for pid in found:
        info = stored_class(store, pid)
        lines = [f"class: {info['line']}" if info else "class: not classified"]
        for stage in funnel:
            for r in stage["rows"]:
                if r["id"] == pid and not r["reference"] and r.get("envelope"):
                    lines.append(f"{stage['stage']}: {r['envelope']['line']}")
        items.append(f"<li><b>#{pid}</b> " + "<br/>".join(html.escape(x) for x in lines) + "</li>")
    return f"<ul>{''.join(items)}</ul>" if items else ""


def _leaderboard_html(store: Store, lb: list[dict[str, Any]]) -> str:
    """The leaderboard as a table: per rule a row of numbers (with its source and class), then
    a full-width row with its math and, where classed, its class line."""
    stages = [s["stage"] for s in json.loads(store.get_meta("funnel") or "[]")]
    cols = ["id", "rule", "fitness [interval]", *stages, "state memory", "found", "class"]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in cols)
    body = []
    for r in lb:
        ci = "" if r["ci_low"] is None else f" [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
        fit = "—" if r["fitness"] is None else f"{r['fitness']:+.3f}{ci}"
        cls = r.get("class")
        cells = [f'<td class="num">{r["id"]}</td>', f"<td><pre>{html.escape(r['source'])}</pre></td>",
                 f'<td class="num">{fit}</td>',
                 *[f'<td class="num">{r["stages"][s]:+.3f}</td>' if s in r["stages"] else "<td></td>"
                   for s in stages],
                 f'<td class="num">{r["bytes_per_param"]} B/param</td>', f"<td>{'yes' if r['found'] else ''}</td>",
                 f"<td>{html.escape(cls['label']) if cls else ''}</td>"]
        body.append("<tr>" + "".join(cells) + "</tr>")
        math_lines = "\n".join(html.escape(part) for part in r["math"].split("; "))
        if cls:
            math_lines += "\n" + html.escape("class: " + cls["line"])
        body.append(f'<tr class="math"><td></td><td colspan="{len(cols) - 1}">{math_lines}</td></tr>')
    refs = "".join(f"<li>{html.escape(x['stage'])}: {html.escape(x['name'])} {x['fitness']:+.3f}</li>"
                   for x in references(store))
    return f"<table><tr>{head}</tr>{''.join(body)}</table><p>References:</p><ul>{refs}</ul>"
