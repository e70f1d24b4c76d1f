"""The user data directory: where run-time results about catalog rules are kept.

The catalog in the package is read-only at run time (in a pip install it lives in
site-packages). ``optdisco validate`` records what it measured about a catalog rule here, and
``optdisco show`` merges it into what it prints. The directory is ``$OPTDISCO_DATA`` if set,
else ``$XDG_DATA_HOME/optdisco``, else ``~/.local/share/optdisco``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def data_dir() -> Path:
    """The user data directory: ``$OPTDISCO_DATA``, ``$XDG_DATA_HOME/optdisco`` or ``~/.local/share/optdisco``."""
    if os.environ.get("OPTDISCO_DATA"):
        return Path(os.environ["OPTDISCO_DATA"])
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "optdisco"


def _facts_file(rule: str) -> Path:
    return data_dir() / "rules" / f"{rule}.json"


def rule_facts(rule: str) -> dict[str, str]:
    """The facts recorded about catalog rule ``rule`` (e.g. ``{"ValidationCpu": "..."}``); {} if none."""
    path = _facts_file(rule)
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text(encoding="utf-8")))


def record_rule_fact(rule: str, key: str, value: str) -> Path:
    """Set fact ``key`` of catalog rule ``rule`` to ``value`` (replacing an earlier one); returns the file."""
    path = _facts_file(rule)
    facts = rule_facts(rule)
    facts[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    # Written whole and renamed, so a reader never sees half a file.
    tmp.write_text(json.dumps(facts, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
