"""The leaderboard of a campaign: its best rules as math, with fitness, intervals and memory."""

from __future__ import annotations

import json
from typing import Any

from ..dsl import parse
from ..dsl.ir import Program
from ..dsl.printer import expr_source
from .store import Store

STATE_BYTES = 4  # fp32 states


def math_text(p: Program) -> str:
    """The rule as equations over its inputs: ``u = ...`` then ``s' = ...`` per state (sympy's
    simplified form where the language provides it, else temporaries substituted)."""
    try:
        import sympy
        exprs = p.sympy()
        update, states = (exprs[0], exprs[1:]) if isinstance(exprs, (tuple, list)) else (exprs, ())
        if isinstance(update, (tuple, list)):
            update, states = update[0], update[1:]
        parts = [f"u = {sympy.simplify(update)}"]
        if isinstance(states, (tuple, list)) and len(states) == 1 and isinstance(states[0], (tuple, list)):
            states = states[0]
        parts += [f"{s}' = {sympy.simplify(e)}" for s, e in zip(p.state_names, states)]
        return "; ".join(parts)
    except Exception:  # noqa: BLE001 - no sympy bridge (yet): show the resolved expressions
        update, states = p.outputs()
        parts = [f"u = {expr_source(update)}"]
        parts += [f"{s}' = {expr_source(e)}" for s, e in zip(p.state_names, states)]
        return "; ".join(parts)


def rows(store: Store, k: int = 10) -> list[dict[str, Any]]:
    """The best ``k`` distinct rules of a campaign, best first: id, source (simplified where it
    was), math, search fitness with interval, each funnel stage's fitness, states, found or not."""
    found = set(json.loads(store.get_meta("found") or "[]"))
    funnel = json.loads(store.get_meta("funnel") or "[]")
    simplified = {}
    for _, value in store.db.execute("SELECT key, value FROM meta WHERE key LIKE 'simplified:%'"):
        info = json.loads(value)
        simplified[info["id"]] = info
    stage_fit: dict[int, dict[str, float]] = {}
    for stage in funnel:
        for r in stage["rows"]:
            if not r["reference"]:
                stage_fit.setdefault(r["id"], {})[stage["stage"]] = r["fitness"]
    ids: list[int] = [i for i in simplified] + [i for i in stage_fit if i not in simplified]
    for r in store.programs("phase = 'search' AND cache_of IS NULL AND seq IS NOT NULL AND status = 'done'",
                            order="fitness DESC, seq"):
        if len(ids) >= k * 3:
            break
        ids.append(r.id)
    out, seen = [], set()
    for pid in ids:
        row = store.program(pid)
        if row.fingerprint in seen:
            continue
        seen.add(row.fingerprint)
        source = simplified[pid]["source"] if pid in simplified else row.source
        p = parse(source)
        evs = store.evaluations(pid, "search") or store.evaluations(pid)
        ev = evs[0] if evs else {}
        out.append({"id": pid, "source": source, "math": math_text(p),
                    "fitness": ev.get("fitness", row.fitness), "ci_low": ev.get("ci_low"),
                    "ci_high": ev.get("ci_high"), "stages": stage_fit.get(pid, {}),
                    "states": len(p.state_names), "bytes_per_param": STATE_BYTES * len(p.state_names),
                    "found": pid in found})
    key = lambda r: (r["found"], len(r["stages"]), r["fitness"] if r["fitness"] is not None else -1e9)
    return sorted(out, key=key, reverse=True)[:k]


def references(store: Store) -> list[dict[str, Any]]:
    """The reference rules' (AdamW, Lion) fitness in each funnel stage."""
    out = []
    for stage in json.loads(store.get_meta("funnel") or "[]"):
        for r in stage["rows"]:
            if r["reference"]:
                out.append({"stage": stage["stage"], "name": r["name"], "fitness": r["fitness"],
                            "ci_low": r["ci_low"], "ci_high": r["ci_high"]})
    return out


def rich_table(store: Store, k: int = 8):
    """The leaderboard as a rich Table."""
    from rich.table import Table
    stages = [s["stage"] for s in json.loads(store.get_meta("funnel") or "[]")]
    t = Table(title="leaderboard (fitness = mean log(AdamW loss / rule loss); > 0 beats AdamW)")
    for col in ["#", "id", "rule (math)", "fitness [interval]", *stages, "state memory", "found"]:
        t.add_column(col, overflow="fold")
    for rank, r in enumerate(rows(store, k), 1):
        ci = "" if r["ci_low"] is None else f" [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
        fit = "—" if r["fitness"] is None else f"{r['fitness']:+.3f}{ci}"
        t.add_row(str(rank), str(r["id"]), r["math"], fit,
                  *[f"{r['stages'][s]:+.3f}" if s in r["stages"] else "" for s in stages],
                  f"{r['states']} x fp32 = {r['bytes_per_param']} B/param", "yes" if r["found"] else "")
    return t
