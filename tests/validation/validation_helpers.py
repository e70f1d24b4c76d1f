"""What the validation tests share: cpu-scale arguments, and a found rule written to a file."""

from __future__ import annotations

from pathlib import Path

import optdisco
from optdisco.discovered.catalog import rule_file_text

#: Two small workloads, two seeds, 5% of their steps: every contender tunes and trains in seconds.
TINY = ["--task", "ho_quadratic", "--task", "ho_mixer", "--seeds", "2", "--budget", "0.05"]
ROOT = Path(__file__).resolve().parents[2]

NESTEROV_ISH = '''
def mom(w, g, m, *, beta=0.9):
    """Heavy-ball momentum written as a found rule."""
    m = beta * m + g
    return m, m
'''


def found_rule_file(directory: Path) -> Path:
    """A found rule (heavy-ball momentum, ``found_mom``) written as a rule file in ``directory``,
    with a held-out fitness above any real found rule's."""
    p = optdisco.parse(NESTEROV_ISH.replace("def mom(", "def found_mom("))
    facts = {"Formula": "m <- beta m + g; w <- w - lr m", "Defaults": "beta=0.9", "Origin": "found",
             "Campaign": "test.db:7 (seed 0)", "StageHeldout": "+9.0 (higher than any real found rule)"}
    path = directory / "found_mom.rule"
    path.write_text(rule_file_text(p, "Found by a test campaign.", facts), encoding="utf-8")
    return path
