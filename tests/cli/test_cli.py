"""The optdisco command: list, show, export (eval/search/report are tested with their packages)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import pytest

import optdisco
from optdisco.cli import main


def test_list_shows_every_catalog_rule(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    names = optdisco.catalog.names()
    assert {"sgd", "adamw", "lion", "muon", "adafactor"} <= set(names)
    first_cells = {line.split("│")[1].strip() for line in out.splitlines() if line.count("│") > 2}
    assert set(names) <= first_cells  # each name whole in the name column, none cropped
    assert f"({len(names)} rules)" in out


MY_ADAM = """\
def my_adam(w, g, mom, sq, *, beta1=0.9, beta2=0.999, eps=1e-08, wd=0.0):
    \"\"\"Adam, written by hand: the moments renamed, products commuted, one unused statement.

    Origin: known
    \"\"\"
    unused = g * g * 3.0
    dd = w * wd + g
    sq = interp(square(dd), sq, beta2)
    mom = interp(dd, mom, beta1)
    c2 = 1.0 - beta2 ** step
    c1 = 1.0 - beta1 ** step
    step_dir = mom / c1 / (eps + sqrt(sq) / sqrt(c2))
    return step_dir, mom, sq
"""


def test_show_prints_source_math_memory_and_equivalents(capsys, tmp_path):
    # adam written differently (commuted, renamed, a dead statement) is recognised as adam
    adam_body = optdisco.catalog.get("adam").source().split('"""')[2]
    assert "unused" not in adam_body and "w * wd" not in adam_body and "mom" not in adam_body
    rule = tmp_path / "my_adam.rule"
    rule.write_text(MY_ADAM)
    assert main(["show", str(rule)]) == 0
    out = capsys.readouterr().out
    assert "def my_adam(" in out and "simplified math" in out and "LaTeX" in out
    assert "2 state tensors = 8 bytes/param" in out
    equivalents = out.split("equivalent catalog rules:")[1].strip().splitlines()[0]
    assert equivalents.split(", ") == ["adam"]  # exactly adam: not adamw, not the rule itself


def test_show_names_no_equivalent_for_a_different_rule(capsys, tmp_path):
    # The equivalence line can say "none": a rule that is adam with the bias corrections swapped.
    rule = tmp_path / "swapped.rule"
    rule.write_text(MY_ADAM.replace("mom / c1 /", "mom / c2 /").replace("/ sqrt(c2)", "/ sqrt(c1)"))
    assert main(["show", str(rule)]) == 0
    equivalents = capsys.readouterr().out.split("equivalent catalog rules:")[1].strip().splitlines()[0]
    assert equivalents == "none"


def test_export_writes_a_file(tmp_path, capsys):
    out = tmp_path / "lion_opt.py"
    assert main(["export", "lion", "--format", "torch", "-o", str(out)]) == 0
    text = out.read_text()
    assert "class Lion(torch.optim.Optimizer)" in text and "optdisco" not in text.split('"""', 2)[2]


def test_bad_rule_is_a_clean_error(capsys, tmp_path):
    bad = tmp_path / "bad.rule"
    bad.write_text("def f(w, g):\n    return sgn(g)\n")
    assert main(["show", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'sign'" in err and "line 2" in err
    assert main(["show", "lino"]) == 2
    err = capsys.readouterr().err
    # one line naming the close match itself ("lion" alone would also match lion_clip)
    assert "did you mean 'lion'" in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_console_script_entry_point():
    proc = subprocess.run([sys.executable, "-m", "optdisco.cli", "list"], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    # the whole catalog, by name in the first column (a bare "lion" in stdout would also be
    # matched by lion_clip or cautious_lion)
    names = optdisco.catalog.names()
    first_cells = {line.split("│")[1].strip() for line in proc.stdout.splitlines() if line.count("│") > 2}
    assert set(names) <= first_cells and f"optdisco catalog ({len(names)} rules)" in proc.stdout


def test_learn_mlp_then_eval_learned_through_the_command_line(tmp_path, capsys):
    weights = str(tmp_path / "lopt.npz")
    assert main(["learn", "--mlp", "--task", "quadratic", "--iterations", "1", "--pairs", "1",
                 "-o", weights]) == 0
    assert (tmp_path / "lopt.npz").exists() and "wrote" in capsys.readouterr().out
    assert main(["eval", "--learned", weights, "--task", "quadratic", "--budget", "0.05"]) == 0
    # the summary line carries a number, not only the word (the table's header has it too)
    fitness = re.search(r"^fitness ([+-]\d+\.\d{4})$", capsys.readouterr().out, re.M)
    assert fitness is not None and math.isfinite(float(fitness.group(1)))


def test_learn_without_a_target_is_a_clear_error():
    with pytest.raises(SystemExit, match="give a RULE"):
        main(["learn"])


def test_missing_campaign_store_is_named_in_the_error(capsys, tmp_path):
    assert main(["show", str(tmp_path / "missing.db") + ":3"]) == 2
    assert "no campaign store at" in " ".join(capsys.readouterr().err.split())
