"""Found rules out of a campaign store, as catalog rule files with their provenance."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path

from ..dsl import Program, parse
from .classify import canonical_form, classify, stored_class
from .leaderboard import fitness_definition, math_text
from .simplify import tidy
from .store import Store


def default_lr(tuned: list) -> float:
    """The catalog learning rate of a found rule: the geometric mean of its tuned rates over
    the tasks of its last evaluation stage, exp(mean_t log lr_t), to two significant digits."""
    last = tuned[-1] if tuned else []
    values = last.values() if isinstance(last, dict) else last if isinstance(last, list) else [last]
    rates = [float(v) for v in values if isinstance(v, (int, float)) and v > 0]
    if not rates:
        return 1e-3
    return float(f"{math.exp(sum(math.log(v) for v in rates) / len(rates)):.2g}")


def searched_form(source: str) -> str:
    """A program as the search stored it, on one line: its signature, then its statements
    ``; ``-separated (``name(w, g, m, *, wd=0.0): m = ...; return ...``), for the provenance
    of a found rule whose body was tidied for reading. :func:`parse_searched_form` reads it back."""
    text = replace(parse(source), docstring=None).source()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0][len("def "):] + " " + "; ".join(lines[1:])


def parse_searched_form(text: str) -> Program:
    """The Program of a :func:`searched_form` line."""
    head, _, body = text.partition("): ")
    return parse(f"def {head}):\n" + "".join(f"    {stmt}\n" for stmt in body.split("; ")))


def found_rules(db: str | Path) -> list[dict]:
    """The rules that held up through every funnel stage: id, simplified Program, and facts
    (Formula, Defaults with the learning rate of :func:`default_lr`, Origin, Campaign,
    Searched (the stored program), Fitness, Date, Class (:mod:`.classify`: rediscovered,
    variant or new structure, and its nearest catalog rule), Canonical (where a constant
    step scale folds into the learning rate, :func:`.classify.canonical_form`), Tuned (for a rule
    the funnel's ES stage tuned: from which program, by which stage, the values before and
    after), one entry per funnel stage and one per stage with a catalog-envelope comparison)."""
    with Store(db, create=False) as store:
        found = json.loads(store.get_meta("found") or "[]")
        funnel = json.loads(store.get_meta("funnel") or "[]")
        cfg = json.loads(store.get_meta("config_json") or "{}")
        simplified = {}
        for info in store.simplified():
            simplified[info["id"]] = info["source"]
        out = []
        for pid in found:
            row = store.program(pid)
            p = parse(simplified[pid]) if pid in simplified else tidy(parse(row.source))
            name = f"found_{Path(db).stem.replace('-', '_')}_{pid}"
            p = replace(p, name=name, docstring=None)
            tuned = [e["tuned_lr"] for e in store.evaluations(pid) if e.get("tuned_lr")]
            facts = {
                "Formula": math_text(p),
                "Defaults": ", ".join([f"lr={default_lr(tuned)!r}"]
                                      + [f"{n}={v!r}" for n, v in p.hyperparameters]),
                "Origin": "found",
                "Campaign": f"{Path(db).name}:{pid} (seed {cfg.get('seed')}, warm start "
                            f"{cfg.get('warm_start') or 'random'}, {cfg.get('budget')} candidates, "
                            f"fitness {cfg.get('fitness', {}).get('evaluator')} on "
                            f"{', '.join(cfg.get('fitness', {}).get('tasks') or ['the proxy suite'])})",
                "Searched": searched_form(row.source),
                "Fitness": _search_fitness(store, row, cfg),
                "Date": time.strftime("%Y-%m-%d", time.gmtime(row.created)),
            }
            canon = canonical_form(p)
            if canon.scale != 1.0:
                facts["Canonical"] = (f"{searched_form(canon.program.source())} at learning rate "
                                      f"{canon.scale:.4g} lr ({'; '.join(canon.notes)})")
            info = stored_class(store, pid)
            facts["Class"] = info["line"] if info else classify(p).line()
            tuning = store.tuned_from(pid)
            # a tuned rule went through the stages before its tuning as the rule it was tuned from
            ids = {pid} if tuning is None else {pid, tuning["original"]}
            if tuning is not None:
                facts["Tuned"] = f"from #{tuning['original']} by funnel stage '{tuning['stage']}': {tuning['line']}"
            for stage in funnel:
                for r in stage["rows"]:
                    if r["id"] in ids and not r["reference"] and r.get("envelope"):
                        key = "Envelope" + "".join(part.capitalize() for part in stage["stage"].split("_"))
                        facts[key] = r["envelope"]["line"]
                    if r["id"] in ids and not r["reference"]:
                        key = "Stage" + "".join(part.capitalize() for part in stage["stage"].split("_"))
                        ci = "" if r["ci_low"] is None else f" [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
                        refs = ", ".join(f"{x['name']} {x['fitness']:+.3f}" for x in stage["rows"] if x["reference"])
                        facts[key] = f"{r['fitness']:+.4f}{ci} ({refs})"
            out.append({"id": pid, "program": p, "facts": facts})
        return out


def _search_fitness(store: Store, row, cfg: dict) -> str:
    """The fitness the campaign ranked the rule by: its search score, or for a program the
    simplification stage made (it was never scored in the search) that stage's score."""
    if row.fitness is not None:
        return f"{row.fitness:+.4f} (search; {fitness_definition(cfg)})"
    scored = [e["fitness"] for e in store.evaluations(row.id, stage="simplify")]
    if scored:
        return f"{scored[-1]:+.4f} (simplification stage, search settings; {fitness_definition(cfg)})"
    return f"none recorded ({fitness_definition(cfg)})"


def write_found(db: str | Path, directory: str | Path) -> list[Path]:
    """Write each found rule of campaign ``db`` as ``<directory>/<name>.rule`` (the catalog's
    found-rule format, :func:`optdisco.discovered.catalog.rule_file_text`); returns the paths."""
    from ..discovered.catalog import rule_file_text
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for rule in found_rules(db):
        p = rule["program"]
        summary = f"Found by an optdisco campaign ({Path(db).name}, program {rule['id']})."
        path = directory / f"{p.name}.rule"
        path.write_text(rule_file_text(p, summary, rule["facts"]), encoding="utf-8")
        paths.append(path)
    return paths
