"""The optdisco command: list, show, export (eval/search/report are tested with their packages)."""

from __future__ import annotations

import subprocess
import sys

import pytest

import optdisco
from optdisco.cli import main


def test_list_shows_every_catalog_rule(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ["sgd", "adamw", "lion", "muon", "adafactor"]:
        assert name in out


def test_show_prints_source_math_memory_and_equivalents(capsys, tmp_path):
    # adam written differently (commuted, renamed, a dead statement) is recognised as adam
    adam = optdisco.catalog.get("adam")
    rule = tmp_path / "my_adam.rule"
    text = adam.source().replace("def adam(", "def my_adam(")
    rule.write_text(text)
    assert main(["show", str(rule)]) == 0
    out = capsys.readouterr().out
    assert "def my_adam(" in out and "simplified math" in out and "LaTeX" in out
    assert "2 state tensors = 8 bytes/param" in out
    assert "equivalent catalog rules:" in out and "adam" in out.split("equivalent catalog rules:")[1]


def test_export_writes_a_file(tmp_path, capsys):
    out = tmp_path / "lion_opt.py"
    assert main(["export", "lion", "--format", "torch", "-o", str(out)]) == 0
    text = out.read_text()
    assert "class Lion(torch.optim.Optimizer)" in text and "optdisco" not in text.split('"""', 2)[2]


def test_bad_rule_is_a_clean_error(capsys, tmp_path):
    bad = tmp_path / "bad.rule"
    bad.write_text("def f(w, g):\n    return sgn(g)\n")
    assert main(["show", str(bad)]) == 2
    err = capsys.readouterr().out
    assert "did you mean 'sign'" in err and "line 2" in err
    assert main(["show", "lino"]) == 2
    assert "lion" in capsys.readouterr().out


def test_console_script_entry_point():
    proc = subprocess.run([sys.executable, "-m", "optdisco.cli", "list"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "lion" in proc.stdout


def test_learn_mlp_then_eval_learned_through_the_command_line(tmp_path, capsys):
    weights = str(tmp_path / "lopt.npz")
    assert main(["learn", "--mlp", "--task", "quadratic", "--iterations", "1", "--pairs", "1",
                 "-o", weights]) == 0
    assert (tmp_path / "lopt.npz").exists() and "wrote" in capsys.readouterr().out
    assert main(["eval", "--learned", weights, "--task", "quadratic", "--budget", "0.05"]) == 0
    assert "fitness" in capsys.readouterr().out


def test_learn_without_a_target_is_a_clear_error():
    with pytest.raises(SystemExit, match="give a RULE"):
        main(["learn"])


def test_missing_campaign_store_is_named_in_the_error(capsys, tmp_path):
    assert main(["show", str(tmp_path / "missing.db") + ":3"]) == 2
    assert "no campaign store at" in " ".join(capsys.readouterr().out.split())
