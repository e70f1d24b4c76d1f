"""The Formula field is generated from each rule's program, and the generated line computes
what the program computes (read back into a Program and compared by fingerprint)."""

from __future__ import annotations

import random
import shutil
from importlib import resources

import pytest

import optdisco.catalog as catalog  # noqa: E402  (a submodule import, not the lazy attribute)
from optdisco.discovered.formula import formula, main, program_of_formula, with_formula
from optdisco.dsl import DSLError, parse
from optdisco.dsl.generate import random_program

NAMES = catalog.names()


@pytest.mark.parametrize("name", NAMES)
def test_formula_field_is_the_generated_one_and_computes_the_rule(name):
    p = catalog.get(name)
    generated = formula(p)
    assert p.meta["Formula"] == generated, "run: python -m optdisco.discovered.formula --write"
    assert program_of_formula(generated, p).fingerprint() == p.fingerprint()


def test_formula_is_readable_and_keeps_hyperparameter_names():
    assert formula(catalog.get("adam")) == (
        "d = g + wd * w; m <- beta1 * m + (1 - beta1) * d; v <- beta2 * v + (1 - beta2) * d^2; "
        "w <- w - lr * (m / (1 - beta1^t) / (sqrt(v) / sqrt(1 - beta2^t) + eps))")
    # a matrix built-in keeps its name; where() with a flag reads as a conditional
    assert formula(catalog.get("muon")) == (
        "m <- momentum * m + (1 - momentum) * g; w <- w - lr * (orthogonalize(momentum * m + "
        "(1 - momentum) * g if nesterov > 0 else m) + wd * w)")
    # c reads the old m, so it is not written in place after m's update
    assert formula(catalog.get("lion")).startswith("u = sign(beta1 * m + (1 - beta1) * g) + wd * w; m <- ")
    assert formula(catalog.get("adafactor")).count("row_mean(") == 1


def test_step_is_t_unless_the_rule_names_something_t():
    p = parse("def r(w, g, *, t=0.5):\n    return t * g / step, \n")
    assert formula(p) == "w <- w - lr * (t * g / step)"
    assert program_of_formula(formula(p), p).fingerprint() == p.fingerprint()
    q = parse("def r(w, g, m):\n    m = m + g\n    dead = sqrt(g)\n    return m / step, m\n")
    assert formula(q) == "m <- m + g; w <- w - lr * (m / t)"  # the dead statement is left out


@pytest.mark.parametrize("seed", range(25))
def test_formula_of_a_random_program_computes_it(seed):
    p = random_program(random.Random(seed), allow_noise=True, allow_matrix=True)
    assert program_of_formula(formula(p), p).fingerprint() == p.fingerprint(), (p.source(), formula(p))


def test_a_wrong_formula_is_told_apart():
    adam = catalog.get("adam")
    wrong = formula(adam).replace("beta1 * m + (1 - beta1) * d", "(1 - beta1) * m + beta1 * d")
    assert program_of_formula(wrong, adam).fingerprint() != adam.fingerprint()
    for bad in ("m <- m + g", "m <- m +; w <- w - lr * m", "m <- [m]; w <- w - lr * m",
                "m <- m if m else g; w <- w - lr * m"):
        with pytest.raises(DSLError):
            program_of_formula(bad, adam)


def test_write_command_rewrites_only_the_formula_field_and_is_idempotent(tmp_path, capsys):
    source = resources.files("optdisco.discovered") / "known" / "yogi.rule"
    path = tmp_path / "yogi.rule"
    shutil.copyfile(str(source), path)
    original = path.read_text()
    stale = original.replace("Formula: m <- ", "Formula: a hand-written\n        line; m <- ", 1)
    assert stale != original
    path.write_text(stale)
    assert main([str(path)]) == 1 and "stale" in capsys.readouterr().out
    assert main(["--write", str(path)]) == 0
    assert path.read_text() == original
    assert main([str(path)]) == 0 and main(["--write", str(path)]) == 0 and path.read_text() == original
    # a rule without a Formula field gets one, before Defaults
    lines = [ln for ln in original.split("\n")]
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("Formula:"))
    end = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("Defaults:"))
    assert with_formula("\n".join(lines[:start] + lines[end:]), formula(parse(original))) == original


def test_every_shipped_formula_is_current():
    assert main([]) == 0
