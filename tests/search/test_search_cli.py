"""What `optdisco search` and `optdisco report` run: a campaign on the shared Ray, a report, a resume."""

from __future__ import annotations

import re

import pytest

from optdisco.search import cli_support
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
