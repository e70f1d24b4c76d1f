"""What ``optdisco validate`` compares: the contenders, the RULE arguments that name them, and
where each one's result is written back.

A contender is a display name, an identity for the results file (a rule's functional
fingerprint, or the SHA-256 of learned weights) and a factory ``make(params, lr)`` of a
``torch.optim.Optimizer``. The baselines are tuned AdamW (:data:`optdisco.discovered.references.ADAMW`, the one
reference the fitness uses) and the catalog's Lion; the seed-mean final loss of AdamW is the
target the "steps to match AdamW" and the speedup are measured against (:mod:`.run`).

A RULE is a catalog name, a rule file, ``DB:ID`` (a program of a campaign store) or
``learned:PATH`` (weights of a learned MLP optimizer). :func:`resolve_target` turns it into
a :class:`Target`: the contender and where its validation goes (:mod:`.record`):

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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from ..discovered import catalog
from ..discovered.catalog import parse_docstring
from ..discovered.optimizer import Optimizer, resolve_rule
from ..discovered.references import ADAMW
from ..dsl import DSLError, Program
from ..errors import UserError
from ..search.learned.mlp_optimizer import load
from ..search.store import StoreError

MakeOptimizer = Callable[[list[torch.Tensor], float], torch.optim.Optimizer]


class ValidateError(ValueError, UserError):
    """A RULE argument or setting of ``optdisco validate`` that names nothing or cannot run here."""


@dataclass(frozen=True)
class Contender:
    """Something to validate: a display name, an identity for the results file, and a factory
    ``make(params, lr)`` returning a ``torch.optim.Optimizer`` over ``params``."""

    name: str
    key: str
    make: MakeOptimizer
    kind: str = "rule"          # "rule", "baseline" or "learned"
    source: str = ""            # rule text, or the learned weights' path (for the report)
    origin: str = ""            # what the user wrote: catalog name, file, DB:ID, learned:PATH


def rule_contender(program: Program, *, name: str | None = None, kind: str = "rule", origin: str = "",
                   backend: str = "auto") -> Contender:
    """A rule as a contender, run by ``optdisco.Optimizer(params, program, lr, backend=backend)``."""

    def make(params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
        return Optimizer(params, program, lr=lr, backend=backend, seed=0)

    return Contender(name or program.name, f"rule:{program.fingerprint()}", make, kind,
                     program.source(), origin or program.name)


def baselines(backend: str = "auto") -> list[Contender]:
    """Tuned AdamW (the one reference program) and Lion (the catalog's), the reference contenders."""
    return [rule_contender(ADAMW, name="adamw", kind="baseline", backend=backend),
            rule_contender(catalog.get("lion"), name="lion", kind="baseline", backend=backend)]


def learned_contender(path: str | os.PathLike, origin: str | None = None) -> Contender:
    """A learned MLP optimizer as a contender: ``optdisco.Optimizer(params, learned=path, lr=lr)``."""
    _, theta, _ = load(path)
    digest = hashlib.sha256(theta.numpy().tobytes()).hexdigest()

    def make(params: list[torch.Tensor], lr: float) -> torch.optim.Optimizer:
        return Optimizer(params, learned=path, lr=lr)

    return Contender(f"learned:{Path(path).name}", f"learned:{digest}", make, "learned", str(path),
                     origin or f"learned:{path}")


@dataclass
class Target:
    """A contender and where its validation is written back (a store row, a found-rule file)."""

    contender: Contender
    db: Path | None = None
    pid: int | None = None
    found_file: Path | None = None
    #: A catalog rule's name: its validation goes to the user data directory, never the package.
    catalog_rule: str | None = None


def resolve_target(spec: str, backend: str = "auto") -> Target:
    """The contender a RULE argument names (see the module doc); ValidateError if it names none."""
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
        _, facts = parse_docstring(program.docstring or "")
        found_file = Path(spec) if facts.get("Origin") == "found" else None
    return Target(rule_contender(program, origin=spec, backend=backend), found_file=found_file)


def unique_names(targets: list[Target]) -> None:
    """Rename contenders whose name is taken (by a baseline or an earlier RULE): name#2, ..."""
    seen: dict[str, int] = {"adamw": 1, "lion": 1}
    for t in targets:
        c = t.contender
        n = seen.get(c.name, 0)
        seen[c.name] = n + 1
        if n:
            t.contender = replace(c, name=f"{c.name}#{n + 1}")


def _leading_number(text: str) -> float:
    try:
        return float(text.split()[0])
    except (ValueError, IndexError):
        return -math.inf


def best_found_rule() -> str | None:
    """The catalog's found rule with the highest held-out fitness (its ``StageHeldout:`` line,
    the funnel's last stage), else the highest search fitness (``Fitness:``), or None.

    Held-out first: search fitness is selected on and overstates (BENCHMARKS.md)."""
    best, best_fit = None, (-math.inf, -math.inf)
    for e in catalog.entries():
        if e.origin != "found":
            continue
        meta = catalog.get(e.name).meta
        fit = (_leading_number(meta.get("StageHeldout", "")), _leading_number(meta.get("Fitness", "")))
        if best is None or fit > best_fit:
            best, best_fit = e.name, fit
    return best
