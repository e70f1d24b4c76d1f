"""benchmarks/bench_discovery.py end to end in its smoke mode: every arm runs, each finished
arm-seed lands in the results file, a rerun resumes from it, and the last line has the form
the issue states."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(results: Path) -> list[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_discovery.py"), "--smoke",
                          "--results", str(results)], capture_output=True, text=True, env=env, timeout=300,
                         cwd=results.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()


def test_smoke_run_writes_every_arm_seed_and_resumes(tmp_path):
    results = tmp_path / "bd.json"
    lines = _run(results)
    assert re.fullmatch(r"rediscovery: evolution \d/1, atomic \d/1, random \d/1", lines[-1]), lines[-1]
    data = json.loads(results.read_text())
    assert sorted(data["runs"]) == ["atomic/0", "evolution/0", "random/0"]
    for run in data["runs"].values():
        assert run["proposed"] >= 1 and run["minutes"] > 0
        assert run["rediscovered"] == (run["best_heldout"] is not None
                                       and run["best_heldout"] >= data["adam_heldout"] - 0.05)
    again = _run(results)
    assert sum("done before" in ln for ln in again) == 3
    assert again[-1] == lines[-1]
