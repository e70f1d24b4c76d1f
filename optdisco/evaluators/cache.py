"""The on-disk cache of tuned baselines: one JSON file per (task, rule, budget, grid).

Location: ``cache_dir`` if given, else ``$OPTDISCO_CACHE``, else ``~/.cache/optdisco``.
An entry holds the tuned learning rate, the validation loss per seed (seeds are added as
they are asked for), the seed-0 curve and solution properties. Writes are atomic
(write-then-rename), so concurrent workers at worst compute an entry twice.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

from ..dsl import Program
from .tasks import Task


def cache_root(cache_dir: "str | Path | None" = None) -> Path:
    """The cache directory (not created)."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("OPTDISCO_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "optdisco"


def entry_path(root: Path, task: Task, rule: Program, steps: int, grid: Sequence[float],
               refine: float | None, scale: str) -> Path:
    """The file of one baseline entry; the name carries everything that changes its numbers."""
    ident = json.dumps([rule.source(), [float(x) for x in grid], refine, scale])
    h = hashlib.sha256(ident.encode()).hexdigest()[:16]
    return root / "baselines" / f"{task.key}-{rule.name}-s{steps}-{h}.json"


def load(path: Path) -> dict | None:
    """The entry at ``path``, or None when absent or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def store(path: Path, entry: dict) -> None:
    """Write ``entry`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(entry, indent=1))
    os.replace(tmp, path)
