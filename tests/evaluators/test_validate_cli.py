"""``optdisco validate`` end to end at cpu scale: report sections, resume, write-back, learned, errors."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import torch

import optdisco
from optdisco.cli import main
from optdisco.discovered import catalog
from optdisco.discovered.catalog import load_text, rule_file_text
from optdisco.search import validate_support
from optdisco.search.store import Store
from optdisco.search.validate_report import SECTIONS

TINY = ["--task", "ho_quadratic", "--task", "ho_mixer", "--seeds", "2", "--budget", "0.05"]
ROOT = Path(__file__).resolve().parents[2]

NESTEROV_ISH = '''
def mom(w, g, m, *, beta=0.9):
    """Heavy-ball momentum written as a found rule."""
    m = beta * m + g
    return m, m
'''


def found_rule_file(directory: Path) -> Path:
    p = optdisco.parse(NESTEROV_ISH.replace("def mom(", "def found_mom("))
    facts = {"Formula": "m <- beta m + g; w <- w - lr m", "Defaults": "beta=0.9", "Origin": "found",
             "Campaign": "test.db:7 (seed 0)", "StageHeldout": "+9.0 (higher than any real found rule)"}
    path = directory / "found_mom.rule"
    path.write_text(rule_file_text(p, "Found by a test campaign.", facts), encoding="utf-8")
    return path


def test_report_has_every_section_and_a_rerun_trains_nothing(tmp_path, capsys):
    out = tmp_path / "v.html"
    assert main(["validate", "sgd", *TINY, "-o", str(out)]) == 0
    text = out.read_text()
    for section in SECTIONS:
        assert f"<h2>{section}</h2>" in text
    assert text.count("<img") == 1 and "t-interval" in text and ("not reached" in text or "x (" in text)
    for name in ("adamw", "lion", "sgd", "ho_quadratic", "ho_mixer"):
        assert name in text
    assert (tmp_path / "v.results.jsonl").exists()
    first = capsys.readouterr().out
    assert re.search(r"[1-9]\d* trainings run, 0 reused", first) and "optdisco validate: cpu scale" in first
    assert main(["validate", "sgd", *TINY, "-o", str(out)]) == 0
    assert re.search(r"\b0 trainings run, [1-9]\d* reused", capsys.readouterr().out)


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
    assert "ho_mixer" in line and "vs AdamW" in line and "2 seeds" in line
    assert prog.meta["Campaign"] == "test.db:7 (seed 0)"


def test_catalog_found_rule_is_named_not_a_file(tmp_path, monkeypatch):
    # A catalog found rule is validated under its name (its results go to the user data
    # directory); no file of the package is a write-back target.
    path = found_rule_file(tmp_path)
    real = catalog._rule_files()
    monkeypatch.setattr(catalog, "_rule_files",
                        lambda: {**real, "found_mom": ("found", path.read_text(), "found/found_mom.rule")})
    catalog.reload()
    try:
        target = validate_support.resolve_target("found_mom")
        assert target.found_file is None and target.catalog_rule == "found_mom"
        assert target.contender.name == "found_mom"
        assert validate_support.best_found_rule() == "found_mom"
    finally:
        monkeypatch.undo()
        catalog.reload()


def test_learned_optimizer_runs_like_a_rule(tmp_path):
    from optdisco.search.learned.mlp_optimizer import MLPConfig, init_theta, save
    cfg = MLPConfig()
    weights = save(tmp_path / "lopt.npz", cfg, init_theta(cfg), provenance={"lr": 0.01})
    out = tmp_path / "v.html"
    assert main(["validate", "--learned", str(weights), "--task", "ho_mixer", "--seeds", "1", "--budget", "0.05",
                 "-o", str(out)]) == 0
    text = out.read_text()
    assert "learned:lopt.npz" in text and "state bytes/param" in text
    # learned:PATH is the same contender (same weights digest), so nothing trains again
    assert main(["validate", f"learned:{weights}", "--task", "ho_mixer", "--seeds", "1", "--budget", "0.05",
                 "-o", str(out)]) == 0


@pytest.mark.parametrize("argv,message", [
    (["lino"], "did you mean 'lion'"),
    (["missing.db:3"], "no campaign store"),
    (["learned:nowhere.npz"], "no learned-optimizer weights"),
    ([], "give at least one RULE"),
    (["sgd", "--task", "nope"], "unknown task 'nope'"),
])
def test_bad_rule_is_a_clear_error(argv, message, capsys, tmp_path):
    assert main(["validate", *argv, "-o", str(tmp_path / "v.html")]) == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "v.results.jsonl").exists()


def test_unknown_program_id_in_a_real_store(tmp_path, capsys):
    db = tmp_path / "c.db"
    Store(db).close()
    assert main(["validate", f"{db}:42"]) == 2
    assert "has no program 42" in " ".join(capsys.readouterr().err.split())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for machines without CUDA")
def test_gpu_scale_without_cuda_says_so(capsys):
    assert main(["validate", "lion", "--scale", "gpu"]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err


def test_gpu_check_validate_arguments_at_cpu_scale(tmp_path, capsys, monkeypatch):
    # gpu_check.sh's validate command with its own arguments, at cpu scale; then --report-only.
    # The best found rule is a real catalog rule: its provenance goes to the user data directory.
    monkeypatch.setenv("OPTDISCO_DATA", str(tmp_path / "data"))
    before = {p: p.read_bytes() for p in (ROOT / "optdisco" / "discovered").rglob("*.rule")}
    script = (ROOT / "benchmarks" / "gpu_check.sh").read_text()
    args = shlex.split(re.search(r"^VALIDATE_ARGS=\((.*)\)$", script, re.M).group(1))
    assert "best_found_rule" in script and "--report-only" in script
    best = validate_support.best_found_rule() or "lion"
    out = str(tmp_path / "gpu_check.html")
    assert main(["validate", best, "--scale", "cpu", *args, "-o", out]) == 0
    capsys.readouterr()
    assert main(["validate", best, "--scale", "cpu", *args, "-o", out, "--report-only"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "0 trainings run" in printed and "ho_char_lm" in printed and "missing" not in printed
    assert {p: p.read_bytes() for p in (ROOT / "optdisco" / "discovered").rglob("*.rule")} == before


def test_a_store_from_before_validations_gains_the_table(tmp_path):
    db = tmp_path / "old.db"
    with Store(db) as store:
        p = optdisco.parse(NESTEROV_ISH)
        pid = store.add_program(p, p.fingerprint(), parent=None, mutation=None, arm="evolution", phase="search")
        store.db.execute("DROP TABLE validations")
    with Store(db, create=False) as store:
        store.add_validation(pid, "cpu", {"seeds": 1}, {"ho_mixer": {"loss": 1.0}})
        assert store.validations(pid)[0]["summary"] == {"ho_mixer": {"loss": 1.0}}
