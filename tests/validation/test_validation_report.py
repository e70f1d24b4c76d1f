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
    assert text.count("<img") == 2 and "profile score" in text and "t-interval" in text
    # lion and sgd on both workloads: a speedup over AdamW's steps, or not reached; nothing missing
    speedups = text[text.index(f"<h2>{SECTIONS[2]}</h2>"):text.index(f"<h2>{SECTIONS[5]}</h2>")]
    cells = re.findall(r"<td>(.*?)</td>", speedups)
    assert cells[0::3] == ["ho_quadratic", "ho_mixer"] and len(cells) == 6
    assert all(re.fullmatch(r"\d+\.\d\dx \(\d+ of \d+ steps\)|not reached \(&lt;1x\)", c)
               for i, c in enumerate(cells) if i % 3), cells
    # each contender listed whole with its kind ("lion" alone would also match lion_clip)
    for name, kind in (("adamw", "baseline"), ("lion", "baseline"), ("sgd", "rule")):
        assert f"<li><b>{name}</b> ({kind}; " in text
    for task in ("ho_quadratic", "ho_mixer"):
        assert f"<td>{task}</td>" in text
    assert (tmp_path / "v.results.jsonl").exists()
    first = capsys.readouterr().out
    assert re.search(r"[1-9]\d* trainings run, 0 reused", first) and "optdisco validate: cpu scale" in first
    assert main(["validate", "sgd", *TINY, "-o", str(out)]) == 0
    assert re.search(r"\b0 trainings run, [1-9]\d* reused", capsys.readouterr().out)
