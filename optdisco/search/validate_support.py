"""What ``optdisco validate`` does around the run: RULE arguments, write-back, the summary table.

A RULE is a catalog name, a rule file, ``DB:ID`` (a program of a campaign store) or
``learned:PATH`` (weights of a learned MLP optimizer). After a complete validation the
result is written back where the rule came from:

* ``DB:ID``: a row of the store's ``validations`` table (settings, per-task summary,
  report path);
* a catalog found rule (``found/*.rule`` in the package): a ``Validation<Scale>`` fact in
  the user data directory (:mod:`optdisco.userdata`), which ``optdisco show`` merges in;
  the package itself is never written;
* a found-rule file given by path (the user's own file): a ``Validation<Scale>:`` line in
  its docstring, replaced on each validation.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from ..errors import UserError
from ..evaluators.validate import (
    Contender,
    Settings,
    Validation,
    rule_contender,
    validate,
)
from ..userdata import record_rule_fact
from .store import Store, StoreError


class ValidateError(ValueError, UserError):
    """A RULE argument or setting of ``optdisco validate`` that names nothing or cannot run here."""


@dataclass
class Target:
    """A contender and where its validation is written back (a store row, a found-rule file)."""

    contender: Contender
    db: Path | None = None
    pid: int | None = None
    found_file: Path | None = None
    #: A catalog rule's name: its validation goes to the user data directory, never the package.
    catalog_rule: str | None = None


def learned_contender(path: str | os.PathLike, origin: str | None = None) -> Contender:
    """A learned MLP optimizer as a contender: ``optdisco.Optimizer(params, learned=path, lr=lr)``."""
    from ..discovered.optimizer import Optimizer
    from .learned.mlp_optimizer import load
    _, theta, _ = load(path)
    digest = hashlib.sha256(theta.numpy().tobytes()).hexdigest()

    def make(params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
        return Optimizer(params, learned=path, lr=lr)

    return Contender(f"learned:{Path(path).name}", f"learned:{digest}", make, "learned", str(path),
                     origin or f"learned:{path}")


def resolve_target(spec: str, backend: str = "auto") -> Target:
    """The contender a RULE argument names (see the module doc); ValueError if it names none."""
    from ..discovered import catalog
    from ..discovered.optimizer import resolve_rule
    from ..dsl import DSLError
    if spec.startswith("learned:"):
        path = spec[len("learned:"):]
        if not os.path.isfile(path):
            raise ValidateError(f"RULE {spec!r}: no learned-optimizer weights at {path!r}")
        try:
            return Target(learned_contender(path, spec))
        except (OSError, ValueError, KeyError) as e:
            raise ValidateError(f"RULE {spec!r}: cannot read learned weights: {e}") from None
    try:
        program = resolve_rule(spec)
    except catalog.UnknownRule as e:
        db = spec.rpartition(":")[0]
        if db and not os.path.exists(db):
            raise ValidateError(f"RULE {spec!r}: no campaign store (DB of DB:ID) or rule file at {db!r}") from None
        raise ValidateError(f"RULE {spec!r} is not a catalog name, a rule file, DB:ID or learned:PATH ({e})") from None
    except StoreError as e:
        raise ValidateError(f"RULE {spec!r}: {e}") from None
    except DSLError as e:
        raise ValidateError(f"RULE {spec!r}: {e}") from None
    meta = program.meta
    if meta.get("Origin") == "campaign" and ":" in meta.get("Provenance", ""):
        db, _, pid = meta["Provenance"].rpartition(":")
        name = f"{Path(db).stem}:{pid}"
        return Target(rule_contender(program, name=name, origin=spec, backend=backend), Path(db), int(pid))
    found_file = None
    if meta.get("Origin") == "found" and meta.get("Source", "").startswith("found/"):
        return Target(rule_contender(program, origin=spec, backend=backend), catalog_rule=program.name)
    if spec not in catalog.names() and os.path.isfile(spec):
        from ..discovered.catalog import parse_docstring
        _, facts = parse_docstring(program.docstring or "")
        found_file = Path(spec) if facts.get("Origin") == "found" else None
    return Target(rule_contender(program, origin=spec, backend=backend), found_file=found_file)


def _unique_names(targets: list[Target]) -> None:
    """Rename contenders whose name is taken (by a baseline or an earlier RULE): name#2, ..."""
    seen: dict[str, int] = {"adamw": 1, "lion": 1}
    for t in targets:
        c = t.contender
        n = seen.get(c.name, 0)
        seen[c.name] = n + 1
        if n:
            t.contender = replace(c, name=f"{c.name}#{n + 1}")


def validation_line(val: Validation, name: str, report: str | Path | None = None) -> str:
    """One line for a found rule's provenance: date, settings, per task loss [CI] vs AdamW and speedup."""
    s = val.settings
    parts = []
    for task, r in val.summary(name).items():
        if r["failure"] or not math.isfinite(r["loss"]):
            parts.append(f"{task} failed")
            continue
        ci = "" if r["ci"][0] == r["ci"][1] else f" [{r['ci'][0]:.4g}, {r['ci'][1]:.4g}]"
        speed = f"{r['speedup']:.2f}x" if r["speedup"] else "<1x"
        ref = r["adamw_loss"]
        parts.append(f"{task} {r['loss']:.4g}{ci} vs AdamW {ref:.4g} ({speed})" if ref is not None
                     else f"{task} {r['loss']:.4g}{ci}")
    where = f"; report {report}" if report else ""
    return (f"{time.strftime('%Y-%m-%d')}, {s.seeds} seeds, budget {s.budget:g}, {s.device} {s.dtype}: "
            + "; ".join(parts) + where)


def record_found_validation(path: str | Path, scale: str, line: str) -> None:
    """Set the ``Validation<Scale>:`` line of the found-rule file at ``path`` (rewritten in
    place), or the key in its sidecar ``<name>.toml`` where it has one (the catalog's format)."""
    from ..discovered import catalog
    from ..discovered.catalog import parse_docstring, record_provenance, rule_file_text, sidecar_path
    from ..dsl import parse
    path = Path(path)
    if sidecar_path(path).is_file():
        record_provenance(path, f"Validation{scale.capitalize()}", line.replace("\n", " "))
        catalog.reload()
        return
    program = parse(path.read_text(encoding="utf-8"))
    summary, facts = parse_docstring(program.docstring or "")
    facts[f"Validation{scale.capitalize()}"] = line.replace("\n", " ")
    path.write_text(rule_file_text(program, summary, facts), encoding="utf-8")
    catalog.reload()


def write_back(val: Validation, targets: Sequence[Target], report: str | Path | None) -> list[str]:
    """Record each target's validation in its store and/or found-rule file; returns what was written."""
    done = []
    for t in targets:
        # A rule that computes what a baseline computes ran under the baseline's name.
        name = next((c.name for c in val.contenders if c.key == t.contender.key), None)
        if name is None or not any(n == name for n, _ in val.results):
            continue
        if t.db is not None and t.pid is not None:
            with Store(t.db, create=False) as store:
                store.add_validation(t.pid, val.settings.scale, asdict(val.settings), val.summary(name),
                                     str(report) if report else None)
            done.append(f"{t.db}: validations of program {t.pid}")
        key = f"Validation{val.settings.scale.capitalize()}"
        if t.found_file is not None:
            record_found_validation(t.found_file, val.settings.scale, validation_line(val, name, report))
            done.append(f"{t.found_file}: {key}")
        if t.catalog_rule is not None:
            path = record_rule_fact(t.catalog_rule, key, validation_line(val, name, report))
            done.append(f"{path}: {key}")
    return done


def _leading_number(text: str) -> float:
    try:
        return float(text.split()[0])
    except (ValueError, IndexError):
        return -math.inf


def best_found_rule() -> str | None:
    """The catalog's found rule with the highest held-out fitness (its ``StageHeldout:`` line,
    the funnel's last stage), else the highest search fitness (``Fitness:``), or None.

    Held-out first: search fitness is selected on and overstates (BENCHMARKS.md)."""
    from ..discovered import catalog
    best, best_fit = None, (-math.inf, -math.inf)
    for e in catalog.entries():
        if e.origin != "found":
            continue
        meta = catalog.get(e.name).meta
        fit = (_leading_number(meta.get("StageHeldout", "")), _leading_number(meta.get("Fitness", "")))
        if best is None or fit > best_fit:
            best, best_fit = e.name, fit
    return best


def summary_table(val: Validation):
    """A rich table: per workload and contender, loss [95% CI], speedup, tuned rate, ms/step, state."""
    # the live display only; rich is slow to import
    from rich.table import Table

    from .validate_report import speedup_text
    s = val.settings
    table = Table(title=f"optdisco validate: {s.scale} scale, {s.seeds} seed{'s' if s.seeds != 1 else ''}, "
                        f"budget {s.budget:g}, {s.device} {s.dtype}")
    table.add_column("workload", min_width=max(len(t) for t in val.tasks))
    table.add_column("contender", min_width=max(len(c.name) for c in val.contenders))
    for col in ("val loss [95% CI]", "vs AdamW", "lr", "ms/step", "state MiB"):
        table.add_column(col, justify="left" if col == "vs AdamW" else "right")
    for task in val.tasks:
        for c in val.contenders:
            w = val.results.get((c.name, task))
            if w is None:
                table.add_row(task, c.name, "missing", "", "", "", "")
                continue
            mean, lo, hi = w.interval
            loss = f"{mean:.4g}" + (f" [{lo:.4g}, {hi:.4g}]" if lo != hi else "") if math.isfinite(mean) else "failed"
            table.add_row(task, c.name, loss,
                          speedup_text(val, c.name, task).replace("&lt;", "<") if c.name != "adamw" else "",
                          f"{w.lr:.3g}", f"{1e3 * w.step_seconds:.3f}" if math.isfinite(w.step_seconds) else "",
                          f"{w.state_bytes / 2**20:.2f}")
        table.add_section()
    return table


def results_path_for(report: str | Path) -> Path:
    """The results file beside a report: ``validate.html`` -> ``validate.results.jsonl``."""
    report = Path(report)
    return report.with_name(report.stem + ".results.jsonl")


def run_validate(specs: Sequence[str], *, scale: str = "cpu", seeds: int = 3, budget: float = 1.0,
                 tune_budget: float = 0.25, tasks: Sequence[str] | None = None, device: str | None = None,
                 dtype: str | None = None, backend: str = "auto", output: str | Path = "validate.html",
                 report_only: bool = False, console: Any = None, progress: bool = True) -> tuple[Validation, Path]:
    """Resolve the RULEs, run (or with ``report_only`` just read) the validation, write the report,
    write results back, and print the summary table last. Returns the validation and the report path."""
    from ..evaluators.heldout_scale import validate_tasks
    from ..evaluators.tasks import get_task
    from .validate_report import write_validation_report
    if not specs:
        raise ValidateError("optdisco validate: give at least one RULE (or --learned WEIGHTS)")
    if seeds < 1 or budget <= 0 or not 0 < tune_budget <= 1:
        raise ValidateError("--seeds must be >= 1, --budget > 0, and 0 < --tune-budget <= 1")
    from ..kernels import BACKENDS
    if backend not in BACKENDS:
        raise ValidateError(f"unknown --backend {backend!r}; backends: {', '.join(BACKENDS)}")
    targets = [resolve_target(s, backend) for s in specs]
    _unique_names(targets)
    if device is None:
        if scale == "gpu" and not torch.cuda.is_available():
            raise ValidateError("--scale gpu needs a CUDA device (torch sees none); "
                             "pass --device cpu to run the gpu sizes on the CPU anyway")
        device = "cuda" if scale == "gpu" else "cpu"
    dtype = dtype or ("bf16" if torch.device(device).type == "cuda" else "fp32")
    names = list(tasks) if tasks else validate_tasks()
    for n in names:
        get_task(n, scale, device)  # unknown names fail before any training
    settings = Settings(scale=scale, seeds=seeds, budget=budget, tune_budget=tune_budget, device=device,
                        dtype=dtype, backend=backend)
    out = Path(output)
    results = results_path_for(out)
    val = validate([t.contender for t in targets], names, settings, results, train=not report_only,
                   console=console, progress=progress and not report_only)
    report = write_validation_report(val, out, results_path=results)
    written = write_back(val, targets, report) if not report_only and not val.missing else []
    if console is not None:
        console.print(f"{val.trained} trainings run, {val.reused} reused from {results}"
                      + (f", at least {val.missing} not trained yet" if val.missing else ""))
        for w in written:
            console.print(f"recorded in {w}")
        console.print(f"wrote {report}")
        console.print(summary_table(val))
    return val, report
