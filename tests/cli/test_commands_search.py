"""What `optdisco search` and `optdisco report` run: a campaign on the shared Ray, a report, a resume."""

from __future__ import annotations

import re

import pytest

from optdisco.cli import commands_search as cli_support
from optdisco.search.config import ConfigError
from optdisco.search.store import Store

pytestmark = pytest.mark.ray

CONFIG = """
budget = 14
warm_start = "sgd"
[fitness]
evaluator = "quadratic"
budget = 0.25
tasks = []
[evolution]
population = 6
tournament = 2
[funnel]
threshold = -100.0
top_k = 2
"""


def test_search_then_report_then_resume(ray_session, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    db = tmp_path / "runs" / "c.db"
    assert cli_support.run_search(str(cfg), {"db": str(db), "seed": 3}, None, None) == 0
    html_path = db.with_suffix(".html")
    assert db.exists() and html_path.exists()
    with Store(db, create=False) as s:
        assert s.counts()["done"] == 14 and s.get_meta("phase") == "finished"
        assert "budget = 14" in s.get_meta("config")
    page = html_path.read_text()
    assert len(re.findall(r'src="data:image/png;base64,', page)) >= 4  # progress, Pareto, curves, lineage
    assert "http://" not in page and "https://" not in page  # self-contained
    assert "evolution" in page and "random" in page
    out = cli_support.write_report(str(db), str(tmp_path / "r.html"))
    assert out.read_text().startswith("<!doctype html>")
    # a finished campaign resumed with a larger budget goes on from where it stopped
    assert cli_support.run_search(None, {"budget": 20}, str(db), None) == 0
    with Store(db, create=False) as s:
        assert s.counts()["done"] == 20


def test_config_mistakes_stop_before_anything_runs(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[evolution]\npopulaton = 3\n")
    with pytest.raises(ConfigError, match="did you mean 'population'"):
        cli_support.run_search(str(bad), {"db": str(tmp_path / "x.db")}, None, None)
    assert not (tmp_path / "x.db").exists()


def test_address_joins_a_running_cluster(ray_session, tmp_path):
    import subprocess
    import sys
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG.replace("budget = 14", "budget = 8").replace("top_k = 2", "top_k = 0"))
    db = tmp_path / "joined.db"
    address = ray_session.get_runtime_context().gcs_address
    code = ("import sys; from optdisco.cli.commands_search import run_search; "
            "sys.exit(run_search(sys.argv[1], {'db': sys.argv[2], 'report': False}, None, sys.argv[3]))")
    proc = subprocess.run([sys.executable, "-c", code, str(cfg), str(db), address],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Started a local Ray instance" not in proc.stderr
    assert f"Connecting to existing Ray cluster at address: {address}" in proc.stderr
    with Store(db, create=False) as s:
        assert s.counts()["done"] == 8
        assert s.evaluations() and all(e["worker"] for e in s.evaluations())


def test_leaderboard_math_reads_as_decimals_and_gets_its_own_lines():
    # simplifying over a common denominator turned 0.29 g + 0.71 m into 3.1e9 (2919 g + 7081 m) / ...
    from rich.console import Console

    from optdisco.dsl import parse
    from optdisco.search.leaderboard import math_text, rich_table
    p = parse("def r(w, g, m, v):\n    m = interp(g, m, 0.7081)\n    v = interp(square(g), v, 0.9986)\n"
              "    return m / 0.01618 / (sqrt(v) / sqrt(0.9986) + 1e-8) + 0.7081 * w, m, v\n")
    text = math_text(p)
    assert "0.2919*g + 0.7081*m" in text and "2919" not in text.replace("0.2919", "")
    console = Console(width=80, record=True)
    with Store(":memory:") as store:
        console.print(rich_table(store))
    header = next(line for line in console.export_text().splitlines() if "rule (math)" in line)
    assert header.split() == ["id", "rule", "(math)"]  # the math has a full-width table of its own
