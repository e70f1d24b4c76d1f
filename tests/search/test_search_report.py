"""The report and the leaderboard of a tiny real campaign: the class of each found rule, the
catalog envelope of the held-out stage, math on its own full-width row, plots that fit."""

from __future__ import annotations

import json
import re

import pytest
from search_helpers import quadratic_config

from optdisco.dsl import parse
from optdisco.search.campaign import Campaign
from optdisco.search.classify import ENVELOPE_RULES
from optdisco.search.executors import InProcessExecutor
from optdisco.search.found import write_found
from optdisco.search.leaderboard import rows
from optdisco.search.mutate import SEED_RULE
from optdisco.search.report import write_report
from optdisco.search.store import Store


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    cfg = quadratic_config(**{"budget": 24, "funnel.threshold": -100.0, "funnel.top_k": 1})
    store = Store(tmp / "c.db")
    found = Campaign(cfg, store, InProcessExecutor("quadratic"), warm_start=parse(SEED_RULE)).run()
    assert found
    return store, found, tmp


def test_found_rules_are_classed_and_the_heldout_stage_has_the_envelope(campaign):
    store, found, _ = campaign
    info = json.loads(store.get_meta(f"class:{found[0]}"))
    assert info["kind"] in {"rediscovered", "variant", "new structure"}
    # a composition's label names its move after the rule: "variant of rmsprop (+ trust ratio)"
    expected = {"rediscovered": f"rediscovered {info['nearest']}", "variant": f"variant of {info['nearest']}",
                "new structure": "new structure"}[info["kind"]]
    assert info["label"] == expected or info["label"].startswith(expected + " (+ ")
    # the quadratic evaluator gives no per-seed losses (no envelope), not a discovery at one seed
    assert info["discovery"] is False
    heldout = json.loads(store.get_meta("funnel"))[-1]
    refs = {r["name"] for r in heldout["rows"] if r["reference"]}
    assert {"adamw", "lion", "rmsprop", "adam", "momentum"} <= refs <= set(ENVELOPE_RULES)
    board = {r["id"]: r for r in rows(store, 10)}
    assert board[found[0]]["class"]["label"] == info["label"]


def test_found_rule_file_says_its_class(campaign):
    store, found, tmp = campaign
    (path,) = write_found(store.path, tmp / "found")
    text = path.read_text()
    info = json.loads(store.get_meta(f"class:{found[0]}"))
    assert f"Class: {info['line']}" in text


def test_report_puts_math_under_each_row_and_fits_its_plots(campaign):
    store, found, tmp = campaign
    page = write_report(store.path, tmp / "r.html").read_text()
    table = page[page.index("<h2>Leaderboard</h2>"):]
    header = re.search(r"<tr>(.*?)</tr>", table).group(1)
    assert "<th>class</th>" in header and "<th>math</th>" not in header
    n_cols = header.count("<th>")
    math_rows = re.findall(r'<tr class="math"><td></td><td colspan="(\d+)">(.*?)</td></tr>', table, re.S)
    assert math_rows and all(int(c) == n_cols - 1 for c, _ in math_rows)
    assert all(m.startswith("u = ") for _, m in math_rows)
    assert "img.plot{max-width:100%" in page and 'class="plot"' in page
    info = json.loads(store.get_meta(f"class:{found[0]}"))
    assert f"class: {info['line']}" in page.replace("&#x27;", "'")
