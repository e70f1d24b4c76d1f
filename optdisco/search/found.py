"""Found rules out of a campaign store, as catalog rule files with their provenance."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from ..dsl import parse
from .leaderboard import math_text
from .simplify import tidy
from .store import Store


def found_rules(db: str | Path) -> list[dict]:
    """The rules that held up through every funnel stage: id, simplified Program, and facts
    (Formula, Defaults, Origin, Campaign, Fitness, one entry per funnel stage, Date)."""
    with Store(db, create=False) as store:
        found = json.loads(store.get_meta("found") or "[]")
        funnel = json.loads(store.get_meta("funnel") or "[]")
        cfg = json.loads(store.get_meta("config_json") or "{}")
        simplified = {}
        for (value,) in store.db.execute("SELECT value FROM meta WHERE key LIKE 'simplified:%'"):
            info = json.loads(value)
            simplified[info["id"]] = info["source"]
        out = []
        for pid in found:
            row = store.program(pid)
            p = parse(simplified[pid]) if pid in simplified else tidy(parse(row.source))
            name = f"found_{Path(db).stem.replace('-', '_')}_{pid}"
            p = replace(p, name=name, docstring=None)
            facts = {
                "Formula": math_text(p),
                "Defaults": ", ".join(f"{n}={v!r}" for n, v in p.hyperparameters) or "none",
                "Origin": "found",
                "Campaign": f"{Path(db).name}:{pid} (seed {cfg.get('seed')}, warm start "
                            f"{cfg.get('warm_start') or 'random'}, {cfg.get('budget')} candidates, "
                            f"fitness {cfg.get('fitness', {}).get('evaluator')} on "
                            f"{', '.join(cfg.get('fitness', {}).get('tasks') or ['the proxy suite'])})",
                "Fitness": f"{row.fitness:+.4f} (search; mean log(AdamW loss / rule loss))",
                "Date": time.strftime("%Y-%m-%d", time.gmtime(row.created)),
            }
            for stage in funnel:
                for r in stage["rows"]:
                    if r["id"] == pid:
                        key = "Stage" + "".join(part.capitalize() for part in stage["stage"].split("_"))
                        ci = "" if r["ci_low"] is None else f" [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
                        refs = ", ".join(f"{x['name']} {x['fitness']:+.3f}" for x in stage["rows"] if x["reference"])
                        facts[key] = f"{r['fitness']:+.4f}{ci} ({refs})"
            out.append({"id": pid, "program": p, "facts": facts})
        return out


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
