"""Fixtures shared by the test directories: one real local Ray instance for the whole session,
rule programs of the evaluator and validation tests, and torch on one thread."""

from __future__ import annotations

import os

import pytest
import torch

import optdisco


@pytest.fixture(scope="session")
def ray_session():
    """Ray started once (2 CPUs, no dashboard) and shut down at the end of the session."""
    ray = pytest.importorskip("ray")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        started = True
    yield ray
    if started:
        ray.shutdown()


LION = optdisco.parse('''
def lion(w, g, m, *, beta1=0.9, beta2=0.99, wd=0.0):
    """Lion."""
    c = interp(g, m, beta1)
    u = sign(c) + wd * w
    m = interp(g, m, beta2)
    return u, m
''')
SGD = optdisco.parse('''
def sgd(w, g):
    """Plain gradient descent."""
    return g
''')
NORMED = optdisco.parse('''
def normed(w, g, m, *, beta=0.9):
    """Momentum normalized per tensor (exercises the per-tensor path)."""
    m = interp(g, m, beta)
    u = m / (norm(m) + 1e-8) * sqrt(numel(m))
    return u, m
''')
EXPLODER = optdisco.parse('''
def exploder(w, g):
    """Pushes the weights away exponentially: diverges at any learning rate."""
    return -1000000.0 * (w + 1.0)
''')


@pytest.fixture
def rules():
    """Rule programs shared by the evaluator and validation tests."""
    return {"lion": LION, "sgd": SGD, "normed": NORMED, "exploder": EXPLODER}


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (the machine's cores are shared), restored after."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
