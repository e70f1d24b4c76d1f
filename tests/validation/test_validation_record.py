"""Write-back of ``optdisco validate``: a campaign store's row, a found-rule file's line."""

from __future__ import annotations

import re

from validation_helpers import NESTEROV_ISH, TINY, found_rule_file

import optdisco
from optdisco.cli import main
from optdisco.discovered.catalog import load_text
from optdisco.search.store import Store


def test_db_id_result_is_written_back_to_the_store(tmp_path):
    db = tmp_path / "campaign.db"
    with Store(db) as store:
        p = optdisco.parse(NESTEROV_ISH)
        pid = store.add_program(p, p.fingerprint(), parent=None, mutation=None, arm="evolution", phase="search")
    assert main(["validate", f"{db}:{pid}", *TINY, "-o", str(tmp_path / "v.html")]) == 0
    with Store(db, create=False) as store:
        (row,) = store.validations(pid)
    assert row["scale"] == "cpu" and row["settings"]["seeds"] == 2 and row["report"].endswith("v.html")
    assert set(row["summary"]) == {"ho_quadratic", "ho_mixer"}
    s = row["summary"]["ho_mixer"]
    assert s["loss"] > 0 and s["adamw_loss"] > 0 and s["lr"] > 0 and s["seeds"] == 2


def test_found_rule_provenance_is_recorded_in_its_file(tmp_path):
    path = found_rule_file(tmp_path)
    for _ in range(2):  # a second validation replaces the line
        assert main(["validate", str(path), *TINY, "-o", str(tmp_path / "v.html")]) == 0
    text = path.read_text()
    assert text.count("ValidationCpu:") == 1
    prog = load_text("found_mom", text, "found", str(path))
    line = prog.meta["ValidationCpu"]
    # date, settings, then each workload: loss [interval] vs AdamW's loss (speedup)
    assert re.match(r"\d{4}-\d\d-\d\d, 2 seeds, budget 0.05, cpu fp32: ", line), line
    num = r"[-+]?\d[\d.e+-]*"
    for task in ("ho_quadratic", "ho_mixer"):
        assert re.search(rf"{task} {num} \[{num}, {num}\] vs AdamW {num} \((\d+\.\d\dx|<1x)\)", line), line
    assert prog.meta["Campaign"] == "test.db:7 (seed 0)"


def test_a_store_from_before_validations_gains_the_table(tmp_path):
    db = tmp_path / "old.db"
    with Store(db) as store:
        p = optdisco.parse(NESTEROV_ISH)
        pid = store.add_program(p, p.fingerprint(), parent=None, mutation=None, arm="evolution", phase="search")
        store.db.execute("DROP TABLE validations")
    with Store(db, create=False) as store:
        store.add_validation(pid, "cpu", {"seeds": 1}, {"ho_mixer": {"loss": 1.0}})
        assert store.validations(pid)[0]["summary"] == {"ho_mixer": {"loss": 1.0}}
