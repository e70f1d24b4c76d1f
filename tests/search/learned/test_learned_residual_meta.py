"""ES meta-training of the residual optimizer: progress, a checkpoint that survives a kill, Ray."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from optdisco.cli.commands_learn import learn_residual

from optdisco.search.learned.residual import load_theta, theta_size
from optdisco.search.learned.residual_meta import PRESETS, ResidualESConfig, ResidualMetaTrainer

ROOT = Path(__file__).resolve().parents[3]
SMALL = dict(tasks=("quadratic", "teacher_student"), pairs=2, iterations=3, budget=0.1, hidden=4)


def _iteration(ckpt: Path) -> int:
    try:
        with np.load(ckpt, allow_pickle=False) as z:
            return json.loads(str(z["meta"]))["iteration"]
    except (OSError, ValueError, KeyError):
        return 0


def test_resume_after_a_kill_ends_with_the_same_theta(tmp_path):
    cache = str(tmp_path / "cache")
    out = tmp_path / "w.npz"
    ckpt = Path(str(out) + ".ckpt.npz")
    args = ["learn", "--residual", "--preset", "smoke", "-o", str(out), "--iterations", "3"]
    assert {k: v for k, v in PRESETS["smoke"].items() if k != "iterations"} == \
        {k: v for k, v in SMALL.items() if k != "iterations"}
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPTDISCO_CACHE=cache)
    proc = subprocess.Popen([sys.executable, "-m", "optdisco.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while _iteration(ckpt) < 1 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = _iteration(ckpt)
    assert 1 <= done < 3, f"killed after {done} iterations"

    console = Console(file=io.StringIO(), width=200)
    learn_residual(str(out), preset="smoke", iterations=3, cache_dir=cache, console=console)
    assert f"resuming from {ckpt} at iteration {done}/3" in console.file.getvalue()
    plain = ResidualMetaTrainer(ResidualESConfig(**SMALL), cache_dir=cache).train()
    got = load_theta(out)
    assert np.abs(plain).sum() > 0
    np.testing.assert_array_equal(got["theta"], plain.astype(np.float32))
    assert got["hidden"] == 4 and got["base"] == "adamw"
    prov = tomllib.loads(Path(str(out) + ".toml").read_text())
    assert prov["provenance"]["iterations"] == 3 and prov["es"]["seed"] == 0
    assert "data:image/png;base64," in Path(str(out) + ".html").read_text()


def test_a_checkpoint_with_other_settings_is_refused(tmp_path):
    ckpt = tmp_path / "c.npz"
    ResidualMetaTrainer(ResidualESConfig(**dict(SMALL, iterations=1)), ckpt, cache_dir=str(tmp_path)).train()
    with pytest.raises(ValueError, match="other settings"):
        ResidualMetaTrainer(ResidualESConfig(**dict(SMALL, sigma=0.3)), ckpt)


def test_es_step_descends_on_the_meta_loss(tmp_path):
    """Each entry's progress is measured against the exact AdamW run of the same episode."""
    tr = ResidualMetaTrainer(ResidualESConfig(**dict(SMALL, iterations=2)), cache_dir=str(tmp_path))
    tr.train()
    assert tr.theta.shape == (theta_size(4),)
    first = tr.history[0]
    assert first["mean_vs_adamw"] == 0.0  # theta starts at 0: the mean is AdamW exactly
    assert first["seed"] >= 10_000 and first["diverged"] == 0


def test_meta_training_on_ray_equals_in_process(ray_session, tmp_path):
    cfg = ResidualESConfig(**dict(SMALL, iterations=2))
    assert ray_session.is_initialized()
    on_ray = ResidualMetaTrainer(cfg, cache_dir=str(tmp_path)).train()
    here = ResidualMetaTrainer(cfg, cache_dir=str(tmp_path), use_ray=False).train()
    np.testing.assert_array_equal(on_ray, here)
