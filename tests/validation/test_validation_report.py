"""The HTML report of ``optdisco validate``: every section, and a rerun that reuses every training."""

from __future__ import annotations

import re

from validation_helpers import TINY

from optdisco.cli import main
from optdisco.validation.report import SECTIONS


def test_report_has_every_section_and_a_rerun_trains_nothing(tmp_path, capsys):
    out = tmp_path / "v.html"
    assert main(["validate", "sgd", *TINY, "-o", str(out)]) == 0
    text = out.read_text()
    for section in SECTIONS:
        assert f"<h2>{section}</h2>" in text
    assert text.count("<img") == 2 and "profile score" in text and "t-interval" in text and ("not reached" in text or "x (" in text)
    for name in ("adamw", "lion", "sgd", "ho_quadratic", "ho_mixer"):
        assert name in text
    assert (tmp_path / "v.results.jsonl").exists()
    first = capsys.readouterr().out
    assert re.search(r"[1-9]\d* trainings run, 0 reused", first) and "optdisco validate: cpu scale" in first
    assert main(["validate", "sgd", *TINY, "-o", str(out)]) == 0
    assert re.search(r"\b0 trainings run, [1-9]\d* reused", capsys.readouterr().out)
