"""The funnel: promising rules re-evaluated under ever harder settings; only survivors are found.

Entrants are the simplified winners and the best search results whose fitness reaches
``funnel.threshold`` (``funnel.top_k`` of them, distinct by fingerprint). Each stage
(``funnel.stages``: more seeds, a longer budget, finally the held-out suite) evaluates
the survivors beside the reference rules (AdamW and Lion) and keeps those that still
reach the threshold. The stages' numbers go to the store (``meta['funnel']``) for the
leaderboard and the report.

A stage with ``kind = "es"`` trains no new judgment: it tunes each survivor's constants
(hyperparameter defaults and literals) by the evolution strategy of ``optdisco learn``
(:class:`.learned.constants.ConstantLearner`) on the stage's settings (the search's
proxy tasks unless it says otherwise), and the survivor is replaced by its tuned form when
that scores at least as well as the untuned rule there; the later stages judge the tuned
rule. Every ES evaluation goes through the campaign's executor and store, so a stage killed
midway replays its finished iterations from the store and ends as an uninterrupted one does;
the outcome of each tuning is kept by :meth:`.store.Store.add_tuning`.
"""

from __future__ import annotations

import json
from typing import Any

from ..discovered import catalog
from ..dsl import parse
from ..dsl.ir import Program
from .cache import fingerprint
from .classify import classify, envelope_comparison, envelope_programs, is_discovery
from .config import ES_STAGE_DEFAULTS, stage_settings
from .learned.constants import ConstantLearner, LearnConfig, parameters_of

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
        tune_rows: list[dict[str, Any]] = []
        if stage.get("kind") == "es":
            alive, tune_rows = _tune_stage(campaign, alive, stage, settings, len(report))
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
            if stage.get("kind") == "es" and not is_ref:
                rows[-1]["tuning"] = tune_rows[k]
        _add_envelope(rows, results)
        report.append({"stage": stage["name"], "settings": settings, "rows": rows})
        alive = survivors
        with campaign.store.transaction():
            campaign.store.set_meta("funnel", json.dumps(report))
    found = [pid for pid, _ in alive] if len(report) == len(cfg["stages"]) else []
    if found:
        _classify_found(campaign, [(pid, p) for pid, p in alive], report[-1])
    return found


def _tune_stage(campaign, alive: list[tuple[int, Program]], stage: dict[str, Any],
                settings: dict[str, Any], index: int) -> tuple[list[tuple[int, Program]], list[dict[str, Any]]]:
    """Tune each entrant's constants by ES on ``settings``; returns the entrants as the later
    stages see them (the tuned rule where it scored at least the untuned one's fitness on
    ``settings``, else the untuned rule) and, per entrant, what the tuning did."""
    es = {k: stage.get(k, v) for k, v in ES_STAGE_DEFAULTS.items()}
    out: list[tuple[int, Program]] = []
    rows: list[dict[str, Any]] = []
    name = stage["name"]
    for pid, program in alive:
        done = campaign.store.tuning(pid, name)
        if done is not None:  # tuned before a restart: the store has the outcome
            kept = done["tuned"]
            out.append((kept, program if kept == pid else campaign.parse_row(campaign.store.program(kept))))
            rows.append(_tuning_row(done))
            continue
        info = _tune_one(campaign, pid, program, es, name, settings, seed=campaign.cfg["seed"] * 1009 + index)
        kept = info["tuned"]
        with campaign.store.transaction():
            campaign.store.add_tuning(pid, name, kept, {k: v for k, v in info.items() if k != "tuned"})
        done = campaign.store.tuning(pid, name)
        assert done is not None
        out.append((kept, program if kept == pid else campaign.parse_row(campaign.store.program(kept))))
        rows.append(_tuning_row(done))
    return out, rows


def _tuning_row(done: dict[str, Any]) -> dict[str, Any]:
    """The part of a tuning that the funnel report and the found rule's file show."""
    return {k: done.get(k) for k in ("original", "tuned", "names", "before", "after", "fitness_before",
                                      "fitness_after", "adopted", "es", "line")}


def _tune_one(campaign, pid: int, program: Program, es: dict[str, Any], stage: str,
              settings: dict[str, Any], seed: int) -> dict[str, Any]:
    """ES over ``program``'s constants (``es``: pairs, iterations, sigma, meta_lr) with every
    evaluation made by ``campaign.evaluate`` on ``settings``; then the tuned rule (values to
    4 significant digits) and the untuned one side by side. Returns the tuning's record."""
    log = campaign.log
    if not parameters_of(program):
        log(f"tune #{pid}: no constants to tune; it goes on as it is")
        return {"tuned": pid, "names": [], "before": [], "after": [], "fitness_before": None,
                "fitness_after": None, "adopted": False, "es": es, "line": "no constants to tune"}

    def evaluate(sources, _settings) -> list[dict[str, Any]]:
        # the stage's own settings, not the learner's: the store's cache keys are the funnel's
        programs = [parse(s) for s in sources]
        return [ev for _, _, ev in campaign.evaluate(programs, stage, settings, parents=[pid] * len(programs),
                                                     mutation="tune", arm="funnel")]

    cfg = LearnConfig(pairs=es["pairs"], sigma=es["sigma"], meta_lr=es["meta_lr"], iterations=es["iterations"],
                      seed=seed)
    learner = ConstantLearner(program, cfg, checkpoint=None, evaluate=evaluate)
    log(f"tune #{pid}: ES over {len(learner.names)} constant(s) ({', '.join(learner.names)}), "
        f"{cfg.iterations} iteration(s) of {2 * cfg.pairs + 1} evaluations")

    def on_step(e: dict[str, Any]) -> None:
        log(f"tune #{pid}: iteration {e['iteration']}/{cfg.iterations}: fitness of the mean "
            f"{e['mean_fitness']:+.4f}, best member {e['best_member']:+.4f}")

    learner.train(progress=False, on_step=on_step)
    tuned = learner.program_at(learner.z, rounded=True)
    (_, f0, _), (tid, f1, ev1) = campaign.evaluate([program, tuned], stage, settings, parents=[pid, pid],
                                                   mutation="tune", arm="funnel")
    adopted = bool(f1 >= f0 and not ev1.get("failure"))
    after = [v for _, v in parameters_of(tuned)]
    changes = "; ".join(f"{n}: {a:.4g} -> {b:.4g}" for n, a, b in zip(learner.names, learner.x0, after))
    line = (f"ES ({cfg.pairs} antithetic pairs, sigma {cfg.sigma}, meta lr {cfg.meta_lr}, {cfg.iterations} "
            f"iterations, seed {seed}) on stage '{stage}': {changes}; fitness {f0:+.4f} -> {f1:+.4f}, "
            + (f"adopted as #{tid}" if adopted else "not adopted (no better than the untuned rule)"))
    log(f"tune #{pid}: {line}")
    return {"tuned": tid if adopted else pid, "names": learner.names, "before": list(learner.x0), "after": after,
            "fitness_before": f0, "fitness_after": f1, "adopted": adopted, "es": es, "line": line,
            "history": learner.history}


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
