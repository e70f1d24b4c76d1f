"""Catalog rules with a pytorch_optimizer twin (or a short paper listing) match it over 40 steps.

pytorch_optimizer is a test-only peer: an independent, widely used implementation. Rules whose
paper gives a code listing but that have no peer there are written out in plain PyTorch below.
All runs are float64; iterates must agree to 1e-8 relative at every step.
"""

from __future__ import annotations

import pytest
import torch
from reference_problems import PROBLEMS, assert_paths_close, assert_rule_matches_reference, least_squares, rule_path

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
    ("mars", {}, "MARS", {"optimize_1d": True}, 0.01),
    ("mars", {"beta1": 0.9, "beta2": 0.95, "gamma": 0.1, "eps": 1e-6, "wd": 0.1}, "MARS",
     {"betas": (0.9, 0.95), "gamma": 0.1, "eps": 1e-6, "weight_decay": 0.1, "optimize_1d": True}, 0.02),
    ("ademamix", {}, "AdEMAMix", {"weight_decouple": True}, 0.01),
    ("ademamix", {"beta1": 0.8, "beta2": 0.99, "beta3": 0.999, "alpha": 3.0, "t_warmup": 25.0,
                  "eps": 1e-6, "wd": 0.1}, "AdEMAMix",
     {"betas": (0.8, 0.99, 0.999), "alpha": 3.0, "t_alpha_beta3": 25.0, "eps": 1e-6,
      "weight_decay": 0.1, "weight_decouple": True}, 0.02),
    ("novograd", {}, "NovoGrad", {}, 0.05),
    ("novograd", {"beta1": 0.8, "beta2": 0.9, "eps": 1e-6, "wd": 0.1, "averaging": 1.0}, "NovoGrad",
     {"betas": (0.8, 0.9), "eps": 1e-6, "weight_decay": 0.1, "grad_averaging": True}, 0.2),
    ("spam", {}, "SPAM", {}, 0.01),
    # resets at t = 12, 24, 36, cosine ramps of 4 steps after each, clipping from t = 3
    ("spam", {"beta1": 0.8, "beta2": 0.99, "eps": 1e-8, "wd": 0.1, "gap": 12.0, "warmup": 4.0,
              "theta": 2.0, "accumulate": 3.0}, "SPAM",
     {"betas": (0.8, 0.99), "eps": 1e-8, "weight_decay": 0.1, "update_proj_gap": 12,
      "warmup_epoch": 4, "threshold": 2, "grad_accu_steps": 3}, 0.02),
    ("grams", {}, "Grams", {}, 0.01),
    ("grams", {"beta1": 0.8, "beta2": 0.99, "eps": 1e-8, "wd": 0.1}, "Grams",
     {"betas": (0.8, 0.99), "eps": 1e-8, "weight_decay": 0.1}, 0.02),
    ("kate", {}, "Kate", {}, 0.05),
    ("kate", {"delta": 1e-2, "eps": 1e-6, "wd": 0.1}, "Kate", {"delta": 1e-2, "eps": 1e-6, "weight_decay": 0.1}, 0.1),
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


# -- NorMuon (arXiv:2510.05491, Algorithm 1), in plain PyTorch -----------------------------

def muon_newton_schulz(x: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    # Muon's quintic iteration as the NorMuon and modded-nanogpt code write it.
    a, b, c = 3.4445, -4.7750, 2.0315
    tall = x.size(0) > x.size(1)
    y = x.mT if tall else x
    y = y / (y.norm() + eps)
    for _ in range(5):
        s = y @ y.mT
        y = a * y + (b * s + c * s @ s) @ y
    return y.mT if tall else y


def normuon_listing(w0, grad, steps, lr, momentum=0.95, beta2=0.95, nesterov=1.0, eps=1e-10, wd=0.0):
    w, buf, out = w0.clone(), torch.zeros_like(w0), []
    v = torch.zeros(w0.shape[0], 1, dtype=w0.dtype)
    for t in range(1, steps + 1):
        g = grad(w, t)
        buf = momentum * buf + (1 - momentum) * g
        d = momentum * buf + (1 - momentum) * g if nesterov else buf
        o = muon_newton_schulz(d)
        v = beta2 * v + (1 - beta2) * (o * o).mean(dim=1, keepdim=True)
        n = o / (v.sqrt() + eps)
        w = w * (1 - lr * wd) - lr * 0.2 * n.numel() ** 0.5 * n / (n.norm() + eps)
        out.append(w.clone())
    return out


MATRIX_PROBLEMS = {"least_squares": least_squares, "tall": lambda: least_squares(rows=6, cols=4, seed=3)}
NORMUON_CASES = [({}, 0.02), ({"momentum": 0.8, "beta2": 0.9, "nesterov": 0.0, "wd": 0.1}, 0.02)]


@pytest.mark.parametrize("problem", sorted(MATRIX_PROBLEMS))
@pytest.mark.parametrize("hyper,lr", NORMUON_CASES)
def test_normuon_matches_the_paper_and_pytorch_optimizer(hyper, lr, problem):
    import functools

    import pytorch_optimizer.optimizer.muon.normuon as normuon_module
    w0, grad = MATRIX_PROBLEMS[problem]()
    want = normuon_listing(w0, grad, STEPS, lr, **hyper)
    got = rule_path(catalog.get("normuon"), w0, grad, STEPS, lr, hyper)
    assert_paths_close(got, want, RTOL)
    assert (want[-1] - w0).abs().max() > 1e-2, "the listing barely moved: a weak test"
    # The peer, with its Newton-Schulz in float64 (bfloat16 by default) and its per-tensor
    # path (its foreach path differs from that one by ~1e-3 here). It normalizes the
    # Newton-Schulz input by max(||x||, 1e-7), Muon's code by ||x|| + 1e-7: ~5e-8 apart.
    ns = normuon_module.zero_power_via_newton_schulz_5
    kwargs = {"momentum": hyper.get("momentum", 0.95), "beta2": hyper.get("beta2", 0.95),
              "nesterov": bool(hyper.get("nesterov", 1.0)), "weight_decay": hyper.get("wd", 0.0),
              "update_scale": "match_rms", "foreach": False}
    p = torch.nn.Parameter(w0.clone())
    try:
        normuon_module.zero_power_via_newton_schulz_5 = functools.partial(ns, dtype=torch.float64)
        opt = pytorch_optimizer.NorMuon([{"params": [p], "use_muon": True}], lr=lr, **kwargs)
        peer = []
        for t in range(1, STEPS + 1):
            p.grad = grad(p.detach().clone(), t)
            opt.step()
            peer.append(p.detach().clone())
    finally:
        normuon_module.zero_power_via_newton_schulz_5 = ns
    assert_paths_close(got, peer, 1e-6)


PEER_TESTED |= {"normuon", "schedulefree_adamw"}  # the latter in test_schedulefree.py


# -- LARS: the peer is this rule on matrices and plain momentum SGD on vectors -------------

LARS_CASES = [({}, {"weight_decay": 0.0005, "trust_coefficient": 0.001}, 0.1),
              ({"momentum": 0.5, "wd": 0.01, "eta": 0.1},
               {"momentum": 0.5, "weight_decay": 0.01, "trust_coefficient": 0.1}, 0.1)]


@pytest.mark.parametrize("hyper,kwargs,lr", LARS_CASES)
def test_lars_is_pytorch_optimizer_lars_on_matrices_and_differs_on_vectors(hyper, kwargs, lr):
    for problem in MATRIX_PROBLEMS.values():
        w0, grad = problem()
        want = peer_path("LARS", kwargs, w0, grad, STEPS, lr)
        assert_paths_close(rule_path(catalog.get("lars"), w0, grad, STEPS, lr, hyper), want, RTOL)
        assert (want[-1] - w0).abs().max() > 1e-2
    # On a vector the peer leaves out the trust ratio and the decay: heavy-ball momentum SGD.
    w0, grad = PROBLEMS["quadratic"]()
    peer = peer_path("LARS", kwargs, w0, grad, STEPS, lr)
    w, buf, momentum_sgd = w0.clone(), torch.zeros_like(w0), []
    for t in range(1, STEPS + 1):
        buf = kwargs.get("momentum", 0.9) * buf + grad(w, t)
        w = w - lr * buf
        momentum_sgd.append(w)
    assert_paths_close(peer, momentum_sgd, RTOL)
    ours = rule_path(catalog.get("lars"), w0, grad, STEPS, lr, hyper)
    assert (ours[-1] - peer[-1]).abs().max() > 0.1 * peer[-1].abs().max()


def test_spam_resets_ramps_and_clips_in_the_custom_case():
    custom = next(c[1] for c in PEER_CASES if c[0] == "spam" and c[1])
    w0, grad = PROBLEMS["least_squares"]()
    base = rule_path(catalog.get("spam"), w0, grad, STEPS, 0.02, custom)
    for change in ({"gap": 1000.0}, {"warmup": 0.0}, {"theta": 0.0}):
        other = rule_path(catalog.get("spam"), w0, grad, STEPS, 0.02, {**custom, **change})
        assert (other[-1] - base[-1]).abs().max() > 1e-4, change
