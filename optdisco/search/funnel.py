"""The funnel: promising rules re-evaluated under ever harder settings; only survivors are found.

Entrants are the simplified winners and the best search results whose fitness reaches
``funnel.threshold`` (``funnel.top_k`` of them, distinct by fingerprint). Each stage
(``funnel.stages``: more seeds, a longer budget, finally the held-out suite) evaluates
the survivors beside the reference rules (AdamW and Lion) and keeps those that still
reach the threshold. The stages' numbers go to the store (``meta['funnel']``) for the
leaderboard and the report.
"""

from __future__ import annotations

import json
from typing import Any

from ..dsl import parse
from ..dsl.ir import Program
from .cache import fingerprint
from .fitness import ADAMW_TEXT

LION_TEXT = """def lion(w, g, m, *, beta1=0.9, beta2=0.99, wd=0.0):
    c = interp(g, m, beta1)
    m = interp(g, m, beta2)
    return sign(c) + wd * w, m
"""
REFERENCES = ("adamw", "lion")


def reference_programs() -> dict[str, Program]:
    """AdamW and Lion from the catalog (or their standard texts when the catalog lacks them)."""
    out = {}
    for name, text in (("adamw", ADAMW_TEXT), ("lion", LION_TEXT)):
        try:
            from .. import catalog  # type: ignore[attr-defined]
            out[name] = catalog.get(name)
        except Exception:  # noqa: BLE001 - no catalog yet: the paper's rule as text
            out[name] = parse(text)
    return out


def entrants(campaign) -> list[tuple[int, Program]]:
    """(id, program) of the rules that enter the funnel, best first."""
    cfg = campaign.cfg["funnel"]
    store = campaign.store
    chosen: list[tuple[int, Program]] = []
    seen: set[str] = set()
    for info in store.simplified(by_key=True):
        p = parse(info["source"])
        if info["fitness"] >= cfg["threshold"] and fingerprint(p) not in seen:
            seen.add(fingerprint(p))
            chosen.append((info["id"], p))
    for row in campaign.top(cfg["top_k"] * 3):
        if len(chosen) >= cfg["top_k"]:
            break
        if row.fitness is not None and row.fitness >= cfg["threshold"] and row.fingerprint not in seen:
            seen.add(row.fingerprint)
            chosen.append((row.id, campaign.parse_row(row)))
    return chosen[:max(cfg["top_k"], 0)]


def run_funnel(campaign) -> list[int]:
    """Run every stage; returns the ids of the rules that held up in all of them."""
    from .campaign import stage_settings
    cfg = campaign.cfg["funnel"]
    alive = entrants(campaign)
    refs = reference_programs()
    report: list[dict[str, Any]] = []
    for stage in cfg["stages"]:
        if not alive:
            break
        settings = stage_settings(campaign.cfg, stage)
        programs = [p for _, p in alive] + list(refs.values())
        parents = [pid for pid, _ in alive] + [None] * len(refs)
        results = campaign.evaluate(programs, stage["name"], settings, parents=parents,
                                    mutation="reference", arm="funnel")
        rows = []
        survivors = []
        for k, (pid, fit, ev) in enumerate(results):
            is_ref = k >= len(alive)
            name = list(refs)[k - len(alive)] if is_ref else f"#{alive[k][0]}"
            passed = (not is_ref) and fit >= cfg["threshold"] and not ev.get("failure")
            rows.append({"id": pid, "name": name, "reference": is_ref, "fitness": fit,
                         "ci_low": ev.get("ci_low"), "ci_high": ev.get("ci_high"),
                         "p_beats_baseline": ev.get("p_beats_baseline"), "passed": passed,
                         "failure": ev.get("failure")})
            if passed:
                survivors.append(alive[k])
        report.append({"stage": stage["name"], "settings": settings, "rows": rows})
        alive = survivors
        with campaign.store.transaction():
            campaign.store.set_meta("funnel", json.dumps(report))
    return [pid for pid, _ in alive] if len(report) == len(cfg["stages"]) else []
