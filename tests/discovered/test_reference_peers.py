"""Catalog rules with a pytorch_optimizer twin (or a short paper listing) match it over 40 steps.

pytorch_optimizer is a test-only peer: an independent, widely used implementation. Rules whose
paper gives a code listing but that have no peer there are written out in plain PyTorch below.
All runs are float64; iterates must agree to 1e-8 relative at every step.
"""

from __future__ import annotations

import pytest
import torch
from reference_problems import PROBLEMS, assert_rule_matches_reference, rule_path

from optdisco import catalog

pytorch_optimizer = pytest.importorskip("pytorch_optimizer")

STEPS = 40
RTOL = 1e-8

# (rule, rule hyperparameters, peer class name, peer kwargs, lr)
PEER_CASES = [
    ("qhm", {}, "QHM", {"momentum": 0.999, "nu": 0.7}, 0.5),
    ("qhm", {"beta": 0.9, "nu": 0.5, "wd": 0.1}, "QHM",
     {"momentum": 0.9, "nu": 0.5, "weight_decay": 0.1, "weight_decouple": False}, 0.1),
    ("qhadam", {}, "QHAdam", {"nus": (0.7, 1.0)}, 0.01),
    ("qhadam", {"beta1": 0.8, "beta2": 0.99, "nu1": 0.6, "nu2": 0.8, "eps": 1e-6, "wd": 0.1},
     "QHAdam", {"betas": (0.8, 0.99), "nus": (0.6, 0.8), "eps": 1e-6, "weight_decay": 0.1,
                "weight_decouple": False}, 0.02),
    ("adopt", {}, "ADOPT", {}, 0.01),
    ("adopt", {"beta1": 0.8, "beta2": 0.99, "eps": 1e-8, "wd": 0.1}, "ADOPT",
     {"betas": (0.8, 0.99), "eps": 1e-8, "weight_decay": 0.1}, 0.02),
    ("yogi", {}, "Yogi", {}, 0.05),
    ("yogi", {"beta1": 0.8, "beta2": 0.99, "eps": 1e-4, "v0": 0.01, "wd": 0.1}, "Yogi",
     {"betas": (0.8, 0.99), "eps": 1e-4, "initial_accumulator": 0.01, "weight_decay": 0.1}, 0.05),
    ("tiger", {}, "Tiger", {}, 0.01),
    ("tiger", {"beta": 0.9, "wd": 0.1}, "Tiger", {"beta": 0.9, "weight_decay": 0.1}, 0.02),
]


def qhadam_float64_state(p: torch.Tensor) -> dict:
    # pytorch_optimizer keeps QHAdam's bias-correction sums in float32, which alone moves a
    # 40-step path by ~1e-8; given its state up front (it only fills an empty one) it runs in
    # float64 throughout.
    return {"beta1_weight": torch.zeros(1, dtype=p.dtype), "beta2_weight": torch.zeros(1, dtype=p.dtype),
            "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}


FLOAT64_STATE = {"QHAdam": qhadam_float64_state}


def peer_path(cls_name: str, kwargs: dict, w0: torch.Tensor, grad, steps: int,
              lr: float) -> list[torch.Tensor]:
    """The peer's iterates, with the gradient set from the current parameter each step."""
    p = torch.nn.Parameter(w0.clone())
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # peers keep scalar state in the default dtype
    try:
        opt = getattr(pytorch_optimizer, cls_name)([p], lr=lr, **kwargs)
        if cls_name in FLOAT64_STATE:
            opt.state[p].update(FLOAT64_STATE[cls_name](p.detach()))
        out = []
        for t in range(1, steps + 1):
            p.grad = grad(p.detach().clone(), t)
            opt.step()
            out.append(p.detach().clone())
        return out
    finally:
        torch.set_default_dtype(previous)


def case_id(case) -> str:
    return case[0] + ("-custom" if case[1] else "-defaults")


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("case", PEER_CASES, ids=[case_id(c) for c in PEER_CASES])
def test_rule_matches_pytorch_optimizer(case, problem):
    name, hyper, cls_name, kwargs, lr = case
    assert_rule_matches_reference(catalog.get(name), hyper,
                                  lambda w0, grad: peer_path(cls_name, kwargs, w0, grad, STEPS, lr),
                                  problem, STEPS, lr, rtol=RTOL, stable_rtol=1e-11)


# -- the Cautious Optimizers listing (arXiv:2411.16085), in plain PyTorch ---------------------

def cautious_mask(u: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    mask = (u * g > 0).to(g.dtype)
    return mask * (mask.numel() / (mask.sum() + 1))


def cautious_lion(w, g, st, t, lr, beta1=0.9, beta2=0.99, wd=0.0):
    m = st.setdefault("m", torch.zeros_like(w))
    w = w * (1 - lr * wd)
    u = torch.sign(beta1 * m + (1 - beta1) * g)
    w = w - lr * u * cautious_mask(u, g)
    st["m"] = beta2 * m + (1 - beta2) * g
    return w


def cautious_adamw(w, g, st, t, lr, beta1=0.9, beta2=0.999, eps=1e-8, wd=0.01):
    m = st.setdefault("m", torch.zeros_like(w))
    v = st.setdefault("v", torch.zeros_like(w))
    m.mul_(beta1).add_(g, alpha=1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    w = w * (1 - lr * wd)
    u = (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)).sqrt() + eps)
    return w - lr * u * cautious_mask(u, g)


LISTINGS = {"cautious_lion": cautious_lion, "cautious_adamw": cautious_adamw}
LISTING_CASES = [
    ("cautious_lion", {}, 0.01), ("cautious_lion", {"beta1": 0.8, "beta2": 0.9, "wd": 0.1}, 0.02),
    ("cautious_adamw", {}, 0.01),
    ("cautious_adamw", {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "wd": 0.1}, 0.02),
]


def listing_path(name, hyper, w0, grad, steps, lr):
    step, st, w, out = LISTINGS[name], {}, w0.clone(), []
    for t in range(1, steps + 1):
        w = step(w, grad(w, t), st, t, lr, **hyper)
        out.append(w.clone())
    return out


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("case", LISTING_CASES, ids=[case_id(c) for c in LISTING_CASES])
def test_rule_matches_paper_listing(case, problem):
    name, hyper, lr = case
    assert_rule_matches_reference(catalog.get(name), hyper,
                                  lambda w0, grad: listing_path(name, hyper, w0, grad, STEPS, lr),
                                  problem, STEPS, lr, rtol=RTOL, stable_rtol=1e-11)


def test_the_cautious_mask_really_masks():
    # On the quadratic some coordinates' Lion step disagrees with the gradient: the cautious
    # rule must then differ from plain Lion.
    w0, grad = PROBLEMS["quadratic"]()
    plain = rule_path(catalog.get("lion"), w0, grad, STEPS, 0.01)
    cautious = rule_path(catalog.get("cautious_lion"), w0, grad, STEPS, 0.01)
    assert (plain[-1] - cautious[-1]).abs().max() > 1e-3


PEER_TESTED = {c[0] for c in PEER_CASES} | set(LISTINGS)
