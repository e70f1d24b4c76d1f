"""``optdisco validate`` end to end at cpu scale: learned optimizers, errors, gpu_check's arguments."""

from __future__ import annotations

import re
import shlex

import pytest
import torch
from validation_helpers import ROOT

from optdisco.cli import main
from optdisco.search.store import Store
from optdisco.validation import targets


def test_learned_optimizer_runs_like_a_rule(tmp_path, capsys):
    from optdisco.search.learned.mlp_optimizer import MLPConfig, init_theta, save
    cfg = MLPConfig()
    weights = save(tmp_path / "lopt.npz", cfg, init_theta(cfg), provenance={"lr": 0.01})
    out = tmp_path / "v.html"
    assert main(["validate", "--learned", str(weights), "--task", "ho_mixer", "--seeds", "1", "--budget", "0.05",
                 "-o", str(out)]) == 0
    text = out.read_text()
    assert "learned:lopt.npz" in text and "state bytes/param" in text
    assert re.search(r"\b[1-9]\d* trainings run, 0 reused", capsys.readouterr().out)
    # learned:PATH is the same contender (same weights digest), so nothing trains again
    assert main(["validate", f"learned:{weights}", "--task", "ho_mixer", "--seeds", "1", "--budget", "0.05",
                 "-o", str(out)]) == 0
    assert re.search(r"\b0 trainings run, [1-9]\d* reused", capsys.readouterr().out)


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
    best = targets.best_found_rule() or "lion"
    out = str(tmp_path / "gpu_check.html")
    assert main(["validate", best, "--scale", "cpu", *args, "-o", out]) == 0
    capsys.readouterr()
    assert main(["validate", best, "--scale", "cpu", *args, "-o", out, "--report-only"]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "0 trainings run" in printed and "ho_char_lm" in printed and "missing" not in printed
    assert {p: p.read_bytes() for p in (ROOT / "optdisco" / "discovered").rglob("*.rule")} == before
