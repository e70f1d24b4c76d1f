"""The leaderboard of a campaign: its best rules as math, with fitness, intervals and memory."""

from __future__ import annotations

import json
from typing import Any

from ..dsl import parse
from ..dsl.ir import Program
from ..dsl.shapes import MEMORY_REFERENCE_SHAPE, state_elements
from .classify import stored_class
from .store import Store

STATE_BYTES = 4  # fp32 states


def bytes_per_param(p: Program) -> float:
    """fp32 state bytes per parameter entry: 4 per w-shaped state; for rules with matrix states
    (factors are rows^2 and cols^2) the figure of a MEMORY_REFERENCE_SHAPE matrix."""
    if not p.state_shapes:
        return STATE_BYTES * len(p.state_names)
    rows, cols = MEMORY_REFERENCE_SHAPE
    return STATE_BYTES * state_elements([p.state_shape(s) for s in p.state_names], MEMORY_REFERENCE_SHAPE) / (rows * cols)


def _inline(p: Program, name: str, value: float) -> Program:
    from dataclasses import replace

    from ..dsl.ir import Assign, Call, Const, Expr, Name

    def sub(e: Expr) -> Expr:
        if isinstance(e, Name) and e.id == name:
            return Const(value)
        if isinstance(e, Call):
            return Call(e.fn, tuple(sub(a) for a in e.args))
        return e

    hp = tuple((n, v) for n, v in p.hyperparameters if n != name)
    return replace(p, hyperparameters=hp, body=tuple(Assign(s.target, sub(s.expr)) for s in p.body),
                   update=sub(p.update))


def math_text(p: Program) -> str:
    """The rule as equations over its inputs: ``u = ...`` then ``s' = ...`` per state (sympy's
    simplified form)."""
    import sympy  # slow to import; only the math column needs it

    from ..dsl.symbolic import simplify_bounded, to_sympy
    # hyperparameters at their defaults, so the math shows the numbers the search chose
    q = p
    for name, value in p.hyperparameters:
        q = _inline(q, name, value)
    rule = to_sympy(q)

    def short(e):  # decimals read better than sympy's exact rationals (1687/4000)
        return str(e.xreplace({r: sympy.Float(r, 4) for r in e.atoms(sympy.Rational) if not r.is_Integer}))

    def best(e):
        # simplification over common denominators can turn 0.29 g + 0.71 m into
        # 3e9 (2919 g + 7081 m) / ...; keep whichever form is shorter
        return min(short(simplify_bounded(e, 1.0)), short(e), key=len)

    parts = [f"u = {best(rule.update)}"] + [f"{s}' = {best(e)}" for s, e in rule.states.items()]
    return "; ".join(parts)


def rows(store: Store, k: int = 10) -> list[dict[str, Any]]:
    """The best ``k`` distinct rules of a campaign, best first: id, source (simplified where it
    was), math, search fitness with interval, each funnel stage's fitness, states, found or not,
    class (label and line, where the funnel classed it; else None)."""
    found = set(json.loads(store.get_meta("found") or "[]"))
    funnel = json.loads(store.get_meta("funnel") or "[]")
    simplified = {}
    for info in store.simplified():
        simplified[info["id"]] = info
    stage_fit: dict[int, dict[str, float]] = {}
    for stage in funnel:
        for r in stage["rows"]:
            if not r["reference"]:
                stage_fit.setdefault(r["id"], {})[stage["stage"]] = r["fitness"]
    ids: list[int] = [i for i in simplified] + [i for i in stage_fit if i not in simplified]
    for r in store.top_programs():
        if len(ids) >= k * 3:
            break
        ids.append(r.id)
    out, seen = [], set()
    for pid in ids:
        row = store.program(pid)
        if row.fingerprint in seen:
            continue
        seen.add(row.fingerprint)
        if pid in simplified:
            p = parse(simplified[pid]["source"])
        else:  # behaviour-preserving clean-up only (dead code, dead states, constants)
            from .simplify import fold_constants, remove_dead_code
            p = remove_dead_code(fold_constants(remove_dead_code(parse(row.source))))
        source = p.source()
        evs = store.evaluations(pid, "search") or store.evaluations(pid)
        ev = evs[0] if evs else {}
        out.append({"id": pid, "source": source, "math": math_text(p),
                    "fitness": ev.get("fitness", row.fitness), "ci_low": ev.get("ci_low"),
                    "ci_high": ev.get("ci_high"), "stages": stage_fit.get(pid, {}),
                    "states": len(p.state_names), "bytes_per_param": bytes_per_param(p),
                    "found": pid in found, "class": _class_label(store, pid)})
    key = lambda r: (r["found"], len(r["stages"]), r["fitness"] if r["fitness"] is not None else -1e9)
    return sorted(out, key=key, reverse=True)[:k]


def _class_label(store: Store, pid: int) -> dict[str, str] | None:
    """The stored class of a rule (:func:`.classify.stored_class`): its label and its line."""
    info = stored_class(store, pid)
    return {"label": info["label"], "line": info["line"]} if info else None


def references(store: Store) -> list[dict[str, Any]]:
    """The reference rules' (AdamW, Lion) fitness in each funnel stage."""
    out = []
    for stage in json.loads(store.get_meta("funnel") or "[]"):
        for r in stage["rows"]:
            if r["reference"]:
                out.append({"stage": stage["stage"], "name": r["name"], "fitness": r["fitness"],
                            "ci_low": r["ci_low"], "ci_high": r["ci_high"]})
    return out


def fitness_definition(cfg: dict[str, Any]) -> str:
    """How a campaign's search fitness is computed, in words (its ``fitness.aggregate``)."""
    if cfg.get("fitness", {}).get("aggregate", "mean") == "standardized":
        return "mean log(AdamW loss / rule loss) / task spread"
    return "mean log(AdamW loss / rule loss)"


def rejections_text(store: Store) -> str:
    """The candidates the free pre-filters rejected untrained, counted by reason, and those the
    hurdle screened out before the full fitness, as one line."""
    counts = store.rejection_counts()
    h = store.hurdle_counts()
    # only campaigns that screened say so: the line of a campaign without hurdles is as before
    screened = (f"; screened out by the hurdle: {h['screened_out']} of {h['screened']} screened"
                if h["screened"] else "")
    if not counts:
        return "rejected untrained by the pre-filters: none" + screened
    per = ", ".join(f"{reason}: {n}" for reason, n in counts.items())
    return f"rejected untrained by the pre-filters: {sum(counts.values())} ({per})" + screened


def rich_table(store: Store, k: int = 8):
    """The leaderboard for a terminal: a table of the numbers, then each rule's math on its
    own full-width line (a formula squeezed into a column of a 9-column table in an
    80-column terminal is unreadable)."""
    # the live display only; rich is slow to import
    from rich.console import Group
    from rich.table import Table
    stages = [s["stage"] for s in json.loads(store.get_meta("funnel") or "[]")]
    cfg = json.loads(store.get_meta("config_json") or "{}")
    t = Table(title=f"leaderboard (fitness = {fitness_definition(cfg)}; > 0 beats AdamW)",
              caption=rejections_text(store))
    t.add_column("#", no_wrap=True)
    t.add_column("id", no_wrap=True)
    for col in ["search", *stages, "states", "found", "class"]:
        t.add_column(col, no_wrap=True)
    rules = Table(show_header=True, show_edge=False, box=None, expand=True)
    rules.add_column("id", no_wrap=True)
    rules.add_column("rule (math)", ratio=1, overflow="fold")
    for rank, r in enumerate(rows(store, k), 1):
        ci = "" if r["ci_low"] is None or r["ci_low"] == r["ci_high"] else \
            f" [{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]"
        fit = "—" if r["fitness"] is None else f"{r['fitness']:+.3f}{ci}"
        math = r["math"] if len(r["math"]) <= 240 else r["math"][:237] + "..."
        t.add_row(str(rank), str(r["id"]), fit,
                  *[f"{r['stages'][s]:+.3f}" if s in r["stages"] else "" for s in stages],
                  f"{r['states']} ({r['bytes_per_param']} B)", "yes" if r["found"] else "",
                  r["class"]["label"] if r["class"] else "")
        rules.add_row(str(r["id"]), math + (f"\n  class: {r['class']['line']}" if r["class"] else ""))
    return Group(t, rules)
