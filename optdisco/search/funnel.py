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

from ..discovered import catalog
from ..dsl import parse
from ..dsl.ir import Program
from .cache import fingerprint
from .classify import classify, envelope_comparison, envelope_programs, is_discovery
from .config import stage_settings

REFERENCES = ("adamw", "lion")


def reference_programs() -> dict[str, Program]:
    """AdamW and Lion as the catalog has them (``adamw.rule``, ``lion.rule``)."""
    return {name: catalog.get(name) for name in REFERENCES}


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
    cfg = campaign.cfg["funnel"]
    alive = entrants(campaign)
    refs = reference_programs()
    report: list[dict[str, Any]] = []
    for stage in cfg["stages"]:
        if not alive:
            break
        settings = stage_settings(campaign.cfg, stage)
        stage_refs = dict(refs)
        if settings.get("suite") == "heldout":  # the catalog envelope is judged on held-out tasks only
            stage_refs.update({n: p for n, p in envelope_programs().items() if n not in stage_refs})
        programs = [p for _, p in alive] + list(stage_refs.values())
        parents = [pid for pid, _ in alive] + [None] * len(stage_refs)
        results = campaign.evaluate(programs, stage["name"], settings, parents=parents,
                                    mutation="reference", arm="funnel")
        rows = []
        survivors = []
        for k, (pid, fit, ev) in enumerate(results):
            is_ref = k >= len(alive)
            name = list(stage_refs)[k - len(alive)] if is_ref else f"#{alive[k][0]}"
            passed = (not is_ref) and fit >= cfg["threshold"] and not ev.get("failure")
            rows.append({"id": pid, "name": name, "reference": is_ref, "fitness": fit,
                         "ci_low": ev.get("ci_low"), "ci_high": ev.get("ci_high"),
                         "p_beats_baseline": ev.get("p_beats_baseline"), "passed": passed,
                         "failure": ev.get("failure")})
            if passed:
                survivors.append(alive[k])
        _add_envelope(rows, results)
        report.append({"stage": stage["name"], "settings": settings, "rows": rows})
        alive = survivors
        with campaign.store.transaction():
            campaign.store.set_meta("funnel", json.dumps(report))
    found = [pid for pid, _ in alive] if len(report) == len(cfg["stages"]) else []
    if found:
        _classify_found(campaign, [(pid, p) for pid, p in alive], report[-1])
    return found


def _add_envelope(rows: list[dict[str, Any]], results: list[tuple[int, float, dict[str, Any]]]) -> None:
    """Each candidate row gets ``envelope``: its per-task log-ratio against the best reference
    rule of the stage on that task, with the mean and its bootstrap interval
    (:func:`.classify.envelope_comparison`), where the evaluator recorded per-seed losses."""
    refs = {r["name"]: ev.get("losses") for r, (_, _, ev) in zip(rows, results) if r["reference"]}
    refs = {n: v for n, v in refs.items() if isinstance(v, dict) and v}
    for r, (_, _, ev) in zip(rows, results):
        losses = ev.get("losses")
        if r["reference"] or not refs or not isinstance(losses, dict) or not losses:
            continue
        try:
            e = envelope_comparison(losses, refs)
        except ValueError:  # no task in common: nothing to compare
            continue
        r["envelope"] = {"fitness": e.fitness, "ci_low": e.ci_low, "ci_high": e.ci_high,
                         "per_task": e.per_task, "best_rule": e.best_rule, "line": e.line()}


def _classify_found(campaign, found: list[tuple[int, Program]], last: dict[str, Any]) -> None:
    """Store ``meta['class:<id>']`` for each found rule: its class against the known catalog
    (:func:`.classify.classify`) and whether it is a discovery (:func:`.classify.is_discovery`,
    judged on the last stage when that is the whole held-out suite at full budget with two or
    more seeds; a one-seed interval is no interval)."""
    settings = last["settings"]
    full = (settings.get("suite") == "heldout" and not settings.get("tasks")
            and float(settings.get("budget", 0)) >= 1.0)
    by_id = {r["id"]: r for r in last["rows"] if not r["reference"]}
    for pid, p in found:
        key = f"class:{pid}"
        if campaign.store.get_meta(key):
            continue  # classified before a restart
        try:
            c = classify(p)
        except Exception as e:  # noqa: BLE001 - a rule the probes cannot run stays found, unclassed
            with campaign.store.transaction():
                campaign.store.set_meta(key, json.dumps({"kind": "unclassified", "label": "unclassified",
                                                         "line": f"unclassified ({type(e).__name__}: {e})",
                                                         "discovery": False}))
            continue
        row = by_id.get(pid, {})
        low = row.get("ci_low") if int(settings.get("seeds", 1)) >= 2 else None
        discovery = full and is_discovery(c.kind, float(row.get("fitness", float("nan"))), low)
        info = {"kind": c.kind, "label": "discovery: " + c.label if discovery else c.label,
                "nearest": c.nearest, "corr": c.corr, "diff": c.diff, "line": c.line(),
                "discovery": discovery}
        with campaign.store.transaction():
            campaign.store.set_meta(key, json.dumps(info))
