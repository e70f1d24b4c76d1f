"""Where a finished ``optdisco validate`` is written back (per :class:`.targets.Target`).

* ``DB:ID``: a row of the store's ``validations`` table (settings, per-task summary,
  report path);
* a catalog found rule: a ``Validation<Scale>`` fact in the user data directory
  (:mod:`optdisco.userdata`), never the package;
* a found-rule file given by path: its ``Validation<Scale>:`` docstring line, replaced.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from ..discovered import catalog
from ..discovered.catalog import parse_docstring, record_provenance, rule_file_text, sidecar_path
from ..dsl import parse
from ..search.store import Store
from ..userdata import record_rule_fact
from .run import Validation
from .targets import Target


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
