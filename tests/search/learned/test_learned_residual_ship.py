"""The residual optimizer as users get it: learned= weights, the shipped default, fair LR tuning,
``optdisco eval --learned`` and the exporter's refusal."""

from __future__ import annotations

import fnmatch
import io
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

import optdisco
from optdisco.cli import main
from optdisco.cli.commands_learn import eval_learned
from optdisco.discovered.optimizer import resolve_rule
from optdisco.evaluators import get_task, tune
from optdisco.search.learned.learned_eval import evaluate_residual
from optdisco.search.learned.residual import (WEIGHTS_DIR, ResidualLearnedOptimizer, load_theta, save_theta,
                                              theta_size)

ROOT = Path(__file__).resolve().parents[3]


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 1))


def _fit(model: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(8):
        x = torch.randn(8, 4, generator=gen)
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()


def test_learned_path_builds_the_residual_optimizer(tmp_path):
    theta = np.random.default_rng(0).normal(size=theta_size(4)).astype(np.float32)
    path = tmp_path / "r.npz"
    save_theta(path, theta, hidden=4, alpha=0.2)
    a, b = _model(), _model()
    opt = optdisco.Optimizer(a.parameters(), learned=str(path), lr=1e-2, backend="eager")
    assert isinstance(opt, ResidualLearnedOptimizer) and opt.alpha == 0.2 and opt.hidden == 4
    _fit(a, opt)
    _fit(b, ResidualLearnedOptimizer(b.parameters(), lr=1e-2, theta=theta, hidden=4, alpha=0.2, backend="eager"))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    with pytest.raises(FileNotFoundError, match="no learned weights named"):
        optdisco.Optimizer(a.parameters(), learned="no_such_weights")


def test_shipped_default_loads_without_pickle_and_has_provenance():
    path = WEIGHTS_DIR / "default.npz"
    w = load_theta(path)  # np.load(allow_pickle=False) inside
    assert w["theta"].shape == (theta_size(w["hidden"]),) and w["base"] == "adamw"
    assert np.abs(w["theta"]).sum() > 0  # meta-trained, not the zero start
    prov = tomllib.loads((WEIGHTS_DIR / "default.toml").read_text())
    for key in ("command", "seed", "date", "iterations", "inner_runs"):
        assert key in prov["provenance"]
    assert "heldout" in prov["results"]
    model = _model()
    opt = optdisco.Optimizer(model.parameters(), learned="default", lr=1e-3, backend="eager")
    assert torch.equal(opt.theta, torch.from_numpy(w["theta"]))
    _fit(model, opt)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_the_weights_are_package_data():
    """A fresh install carries them: pyproject's package-data globs match every shipped file."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package_dir = ROOT / "optdisco" / "search"
    shipped = [p.relative_to(package_dir).as_posix() for p in WEIGHTS_DIR.iterdir() if p.suffix in (".npz", ".toml")]
    assert {"learned/weights/default.npz", "learned/weights/default.toml"} <= set(shipped)
    for rel in shipped:
        assert any(fnmatch.fnmatch(rel, g) for g in data["optdisco.search"]), rel


def test_zero_theta_is_tuned_exactly_like_a_rule(tmp_path):
    """The residual optimizer's LR search is the evaluators' protocol: at theta = 0 (the catalog
    AdamW) it picks the rate and losses that ``tune`` picks for that rule."""
    task, steps = get_task("teacher_student"), 15
    (ref,) = tune(task, [resolve_rule("adamw")], seeds=[0, 1], steps=steps)
    got = evaluate_residual(np.zeros(theta_size(4)), hidden=4, alpha=0.1, tasks=["teacher_student"], seeds=2,
                            budget=steps / task.steps, cache_dir=str(tmp_path))
    assert got["tuned_lr"]["teacher_student"] == ref.lr
    assert got["losses"]["teacher_student"] == ref.losses
    lo, hi = got["ci"]
    assert lo <= got["fitness"] <= hi


def test_eval_learned_command_reports_the_fitness(tmp_path):
    path = tmp_path / "r.npz"
    save_theta(path, np.full(theta_size(4), 0.05, dtype=np.float32), hidden=4, alpha=0.1)
    out = io.StringIO()
    res = eval_learned(str(path), tasks=["quadratic"], budget=0.05, cache_dir=str(tmp_path),
                       console=Console(file=out, width=200))
    assert f"fitness {res['fitness']:+.4f}" in out.getvalue()
    assert np.isfinite(res["fitness"])


def test_export_refuses_a_learned_optimizer(capsys):
    assert main(["export", "default"]) == 2
    assert "is a learned optimizer, which has no standalone file" in capsys.readouterr().err
