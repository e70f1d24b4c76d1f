"""The report of ``optdisco validate``: one self-contained HTML file (plots inlined as PNGs),
and the summary table printed at the end of a run.

Sections: settings and contenders; final validation loss with 95% t-intervals over seeds
per workload; training curves (seed mean, shaded from the lowest to the highest seed);
steps to match AdamW and the speedup; time to result (steps and seconds to AdamW's final
loss) with AlgoPerf-style performance profiles; tuned learning rates (with every rate
tried); time per optimizer step and optimizer-state memory. The plots go through
:mod:`optdisco.search.plots`, as the campaign report's do.
"""

from __future__ import annotations

import html
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..search.plots import png_img, pyplot
from .run import PROFILE_TAU_MAX, Validation, mean_curve, performance_profiles, profile_scores

SECTIONS = ("Final validation loss", "Training curves", "Steps to match AdamW", "Tuned learning rates",
            "Time per step and optimizer-state memory", "Time to result")


def _num(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—" if x is None or math.isnan(x) else "diverged"
    return f"{x:.{digits}g}"


def _table(head: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def speedup_text(val: Validation, contender: str, task: str) -> str:
    """'1.25x (120 of 150 steps)', 'not reached (<1x)', or '—' when there is nothing to compare."""
    w, ref = val.results.get((contender, task)), val.results.get(("adamw", task))
    if w is None or ref is None:
        return "—"
    if w.failure or ref.failure:
        return "failed" if w.failure else "AdamW failed"
    at, speed = val.speedup(contender, task)
    return f"{speed:.2f}x ({at} of {ref.steps} steps)" if at else "not reached (&lt;1x)"


def loss_table(val: Validation) -> str:
    """Workloads by contenders: mean final loss [95% interval]; the lowest mean in bold."""
    names = [c.name for c in val.contenders]
    rows = []
    for task in val.tasks:
        cells = {}
        for n in names:
            w = val.results.get((n, task))
            cells[n] = w.interval if w else None
        means = [c[0] for c in cells.values() if c and math.isfinite(c[0])]
        row = [html.escape(task)]
        for n in names:
            c = cells[n]
            if c is None:
                row.append("missing")
                continue
            text = _num(c[0]) + (f" [{_num(c[1])}, {_num(c[2])}]" if math.isfinite(c[0]) and c[1] != c[2] else "")
            row.append(f"<b>{text}</b>" if means and c[0] == min(means) else text)
        rows.append(row)
    return _table(["workload", *names], rows)


def plot_curves(val: Validation) -> str:
    """One panel per workload: each contender's seed-mean validation curve, seed range shaded."""
    tasks = [t for t in val.tasks if any((c.name, t) in val.results for c in val.contenders)]
    if not tasks:
        return "<p>No finished workloads.</p>"
    plt = pyplot()
    cols = min(3, len(tasks))
    nrows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.6 * cols, 3.4 * nrows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        for c in val.contenders:
            w = val.results.get((c.name, task))
            if w is None or not w.curves:
                continue
            m = [(s, v) for s, v in mean_curve(w.curves) if math.isfinite(v)]
            if not m:
                continue
            line, = ax.plot([s for s, _ in m], [v for _, v in m], label=c.name)
            n = min(len(cv) for cv in w.curves)
            lo = [min(cv[i][1] for cv in w.curves) for i in range(n)]
            hi = [max(cv[i][1] for cv in w.curves) for i in range(n)]
            if len(w.curves) > 1 and all(math.isfinite(x) for x in lo + hi):
                ax.fill_between([w.curves[0][i][0] for i in range(n)], lo, hi, color=line.get_color(), alpha=0.2)
        lo, hi = ax.get_ylim()
        if lo > 0 and hi / lo > 3:
            ax.set_yscale("log")
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("validation loss")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(tasks):]:
        ax.axis("off")
    fig.tight_layout()
    return png_img(fig)


def speedup_table(val: Validation) -> str:
    names = [c.name for c in val.contenders if c.name != "adamw"]
    return _table(["workload", *names], [[html.escape(t), *[speedup_text(val, n, t) for n in names]]
                                          for t in val.tasks])


def time_to_result_text(val: Validation, contender: str, task: str) -> str:
    """'120 steps, 3.4 s', 'never', or '—' when there is nothing to compare."""
    if val.results.get((contender, task)) is None or val.results.get(("adamw", task)) is None:
        return "—"
    at, sec = val.time_to_result(contender, task)
    if at is None:
        return "never"
    return f"{at} steps, {sec:.3g} s" if sec is not None else f"{at} steps"


def time_to_result_table(val: Validation) -> str:
    names = [c.name for c in val.contenders]
    scores = profile_scores(val)
    rows = [[html.escape(t), *[time_to_result_text(val, n, t) for n in names]] for t in val.tasks]
    rows.append([f"<b>profile score</b> (τ ≤ {PROFILE_TAU_MAX:g})", *[f"<b>{scores[n]:.3f}</b>" for n in names]])
    return _table(["workload", *names], rows)


def plot_profiles(val: Validation) -> str:
    """rho(tau) per contender for tau in [1, 2 tau_max], a step plot."""
    plt = pyplot()
    taus = [1.0 + (2 * PROFILE_TAU_MAX - 1.0) * i / 400 for i in range(401)]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, rho in performance_profiles(val, taus).items():
        ax.step(taus, rho, where="post", label=name)
    ax.set_xlabel("τ (seconds to AdamW's final loss / fastest contender's)")
    ax.set_ylabel("share of workloads")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return png_img(fig)


def lr_table(val: Validation) -> str:
    names = [c.name for c in val.contenders]
    rows = []
    for t in val.tasks:
        row = [html.escape(t)]
        for n in names:
            w = val.results.get((n, t))
            if w is None:
                row.append("missing")
                continue
            tried = ", ".join(f"{lr:.3g}: {_num(loss, 3)}" for lr, loss in sorted(w.tried.items()))
            row.append(f"<b>{_num(w.lr, 3)}</b><br><small>{html.escape(tried)}</small>")
        rows.append(row)
    return _table(["workload", *names], rows)


def cost_table(val: Validation) -> str:
    rows = []
    for c in val.contenders:
        for t in val.tasks:
            w = val.results.get((c.name, t))
            if w is None or not math.isfinite(w.step_seconds):
                continue
            n = val.n_params.get(t, 0)
            rows.append([html.escape(c.name), html.escape(t), f"{1e3 * w.step_seconds:.3f}",
                         f"{w.state_bytes / 2**20:.2f}", f"{w.state_bytes / n:.1f}" if n else "—"])
    return _table(["contender", "workload", "ms per optimizer step (median)", "state MiB", "state bytes/param"],
                  rows)


def write_validation_report(val: Validation, out: str | Path, *, results_path: str | Path | None = None) -> Path:
    """Write the report of ``val`` to ``out`` (one HTML file, nothing external)."""
    s = val.settings
    settings = ", ".join(f"{k}={v}" for k, v in asdict(s).items())
    contenders = "".join(
        f"<li><b>{html.escape(c.name)}</b> ({c.kind}; {html.escape(c.origin)})<pre>{html.escape(c.source)}</pre></li>"
        for c in val.contenders)
    failures = [f"<li>{html.escape(n)} on {html.escape(t)}: {html.escape(w.failure)}</li>"
                for (n, t), w in val.results.items() if w.failure]
    missing = (f"<p><b>Incomplete:</b> at least {val.missing} training(s) are not in the results file yet; rerun "
               "without --report-only to finish them.</p>") if val.missing else ""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>optdisco validate</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto}pre{background:#f4f4f4;padding:6px}"
        "td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}table{border-collapse:collapse}</style>",
        "</head><body>",
        f"<h1>optdisco validate ({html.escape(s.scale)} scale)</h1>",
        f"<p>{html.escape(settings)}</p>", missing,
        "<p>Every contender's peak learning rate is tuned on the same grid with the same budget (seed 0, "
        f"{s.tune_budget:g} of the validation steps), then seeds 0..{s.seeds - 1} train at it. "
        "Schedule: linear warmup over 5% of the steps, cosine decay to zero.</p>",
        f"<p>Results file: {html.escape(str(results_path or ''))} (rerunning reuses every finished training).</p>",
        f"<h2>Contenders</h2><ul>{contenders}</ul>",
        f"<h2>{SECTIONS[0]}</h2>",
        "<p>Mean over seeds [95% t-interval: mean ± t<sub>0.975, n-1</sub> s/√n]; lowest in bold.</p>",
        loss_table(val),
        f"<h2>{SECTIONS[1]}</h2>", plot_curves(val),
        f"<h2>{SECTIONS[2]}</h2>",
        "<p>The first recorded step at which the seed-mean validation loss reaches AdamW's final seed-mean "
        "loss; the speedup is AdamW's steps divided by it (same schedule length for both).</p>",
        speedup_table(val),
        f"<h2>{SECTIONS[5]}</h2>",
        "<p>Steps and seconds until the seed-mean validation loss reaches tuned AdamW's final seed-mean loss "
        "(never: it does not); seconds are the median training's wall time times the share of its steps. "
        "Performance profile: ρ(τ) is the share of workloads on which a contender is within τ times the "
        "fastest contender's seconds; the score is the mean of ρ over τ in [1, "
        f"{PROFILE_TAU_MAX:g}] (AlgoPerf).</p>",
        time_to_result_table(val), plot_profiles(val),
        f"<h2>{SECTIONS[3]}</h2><p>Tuned peak rate (bold), then every rate tried: its seed-0 tuning loss.</p>",
        lr_table(val),
        f"<h2>{SECTIONS[4]}</h2>",
        f"<p>Wall time of optimizer.step() on {html.escape(s.device)} ({html.escape(s.dtype)} parameters, "
        "float32 states; median over steps after the first three; CUDA synchronized), and the bytes of all "
        "optimizer state tensors.</p>",
        cost_table(val),
    ]
    if failures:
        parts += ["<h2>Failures</h2><ul>", *failures, "</ul>"]
    parts.append("</body></html>")
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def summary_table(val: Validation) -> Any:
    """A rich table: per workload and contender, loss [95% CI], speedup, time to AdamW's final loss,
    tuned rate, ms/step, state; the performance-profile scores as its caption."""
    # the live display only; rich is slow to import
    from rich.table import Table

    s = val.settings
    table = Table(title=f"optdisco validate: {s.scale} scale, {s.seeds} seed{'s' if s.seeds != 1 else ''}, "
                        f"budget {s.budget:g}, {s.device} {s.dtype}")
    table.add_column("workload", min_width=max(len(t) for t in val.tasks))
    table.add_column("contender", min_width=max(len(c.name) for c in val.contenders))
    for col in ("val loss [95% CI]", "vs AdamW", "to AdamW's loss", "lr", "ms/step", "state MiB"):
        table.add_column(col, justify="left" if col in ("vs AdamW", "to AdamW's loss") else "right")
    for task in val.tasks:
        for c in val.contenders:
            w = val.results.get((c.name, task))
            if w is None:
                table.add_row(task, c.name, "missing", "", "", "", "", "")
                continue
            mean, lo, hi = w.interval
            loss = f"{mean:.4g}" + (f" [{lo:.4g}, {hi:.4g}]" if lo != hi else "") if math.isfinite(mean) else "failed"
            table.add_row(task, c.name, loss,
                          speedup_text(val, c.name, task).replace("&lt;", "<") if c.name != "adamw" else "",
                          time_to_result_text(val, c.name, task),
                          f"{w.lr:.3g}", f"{1e3 * w.step_seconds:.3f}" if math.isfinite(w.step_seconds) else "",
                          f"{w.state_bytes / 2**20:.2f}")
        table.add_section()
    scores = profile_scores(val)
    table.caption = ("performance-profile score (AlgoPerf, tau <= " + f"{PROFILE_TAU_MAX:g}): "
                     + ", ".join(f"{c.name} {scores[c.name]:.3f}" for c in val.contenders))
    return table
