"""Catalog rules without a torch.optim twin equal plain-PyTorch versions of their papers' algorithms.

Each reference below is written from the paper (or the authors' released code where the
rule file says so), in the imperative style of those sources, not from the rule text. All
runs are float64; iterates must agree to 1e-10 relative at every step.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import optdisco.catalog as catalog
from reference_problems import (PROBLEMS, assert_paths_close, least_squares, rule_path,
                                scale_invariant)

STEPS = 30


def zeros(st: dict, key: str, w: torch.Tensor) -> torch.Tensor:
    if key not in st:
        st[key] = torch.zeros_like(w)
    return st[key]


# -- references: step(w, g, state, t, lr, **hyper) -> new w ---------------------------------

def lion_family(direction):
    def step(w, g, st, t, lr, beta1=0.9, beta2=0.99, wd=0.0, **k):
        m = zeros(st, "m", w)
        c = beta1 * m + (1 - beta1) * g
        new = w - lr * (direction(c, **k) + wd * w)
        st["m"] = beta2 * m + (1 - beta2) * g
        return new
    return step


def signsgd(w, g, st, t, lr, wd=0.0):
    return w - lr * (torch.sign(g) + wd * w)


def signum(w, g, st, t, lr, beta=0.9, wd=0.0):
    m = zeros(st, "m", w)
    m.mul_(beta).add_((1 - beta) * g)
    return w - lr * (torch.sign(m) + wd * w)


def ldog(w, g, st, t, lr, reps_rel=1e-6, eps=1e-8, wd=0.0):
    # The authors' LDoG for one layer: rbar and G start at the first step.
    d = g + wd * w
    if t == 1:
        st["x0"] = w.clone()
        st["rbar"] = reps_rel * (1 + w.norm())
        st["G"] = (d ** 2).sum() + eps
    else:
        st["rbar"] = torch.maximum(st["rbar"], torch.norm(w - st["x0"]))
        st["G"] = st["G"] + (d ** 2).sum()
    return w - lr * st["rbar"] / torch.sqrt(st["G"]) * d


def powersign(w, g, st, t, lr, beta=0.9, alpha=math.e):
    m = zeros(st, "m", w)
    m.mul_(beta).add_((1 - beta) * g)
    return w - lr * torch.exp(math.log(alpha) * torch.sign(g) * torch.sign(m)) * g


def addsign(w, g, st, t, lr, beta=0.9, alpha=1.0):
    m = zeros(st, "m", w)
    m.mul_(beta).add_((1 - beta) * g)
    return w - lr * (alpha + torch.sign(g) * torch.sign(m)) * g


def adagradnorm(w, g, st, t, lr, b0=0.01):
    st["b2"] = st.get("b2", b0 ** 2) + g.pow(2).sum().item()
    return w - lr / math.sqrt(st["b2"]) * g


def lamb(w, g, st, t, lr, beta1=0.9, beta2=0.999, eps=1e-6, wd=0.01):
    m, v = zeros(st, "m", w), zeros(st, "v", w)
    m.mul_(beta1).add_(g, alpha=1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    r = (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)).sqrt() + eps) + wd * w
    wn, rn = w.norm().item(), r.norm().item()
    trust = wn / rn if wn > 0 and rn > 0 else 1.0
    return w - lr * trust * r


def lars(w, g, st, t, lr, momentum=0.9, wd=0.0005, eta=0.001):
    # Algorithm 1 of the paper: the global rate sits inside the velocity, w <- w - v.
    v = zeros(st, "v", w)
    wn, gn = w.norm().item(), g.norm().item()
    local = eta * wn / (gn + wd * wn) if wn > 0 and gn > 0 else 1.0
    v.mul_(momentum).add_(lr * local * (g + wd * w))
    return w - v


def adan(w, g, st, t, lr, beta1=0.98, beta2=0.92, beta3=0.99, eps=1e-8, wd=0.0):
    m, d, n = zeros(st, "m", w), zeros(st, "d", w), zeros(st, "n", w)
    prev = st.get("prev", g)  # the first difference is zero
    diff = g - prev
    m.mul_(beta1).add_(g, alpha=1 - beta1)
    d.mul_(beta2).add_(diff, alpha=1 - beta2)
    upd = g + beta2 * diff
    n.mul_(beta3).addcmul_(upd, upd, value=1 - beta3)
    denom = n.sqrt() / math.sqrt(1 - beta3 ** t) + eps
    step_ = (m / (1 - beta1 ** t) + beta2 * d / (1 - beta2 ** t)) / denom
    st["prev"] = g.clone()
    return (w - lr * step_) / (1 + lr * wd)


def nadamw_algoperf(w, g, st, t, lr, beta1=0.9, beta2=0.999, eps=1e-8, wd=0.01):
    # The AlgoPerf baseline: Adam's update with exp_avg advanced once more, decoupled decay.
    m, v = zeros(st, "m", w), zeros(st, "v", w)
    w = w * (1 - lr * wd)
    m.mul_(beta1).add_(g, alpha=1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    nesterov = m * beta1 + (1 - beta1) * g
    denom = v.sqrt() / math.sqrt(1 - beta2 ** t) + eps
    return w - lr / (1 - beta1 ** t) * nesterov / denom


def adabelief(w, g, st, t, lr, beta1=0.9, beta2=0.999, eps=1e-16, wd=0.0):
    m, s = zeros(st, "m", w), zeros(st, "s", w)
    w = w * (1 - lr * wd)
    m.mul_(beta1).add_(g, alpha=1 - beta1)
    resid = g - m
    s.mul_(beta2).addcmul_(resid, resid, value=1 - beta2).add_(eps)
    denom = s.sqrt() / math.sqrt(1 - beta2 ** t) + eps
    return w - lr / (1 - beta1 ** t) * m / denom


def _project(w, g, perturb, st, delta, wd_ratio, eps):
    # The paper's test on the whole tensor: |cos(w, g)| < delta / sqrt(dim w).
    cos = F.cosine_similarity(g.reshape(1, -1), w.reshape(1, -1), dim=1, eps=eps).abs()
    if cos.max() < delta / math.sqrt(w.numel()):
        w_hat = w / (w.reshape(1, -1).norm(dim=1) + eps)
        st["projected"] = st.get("projected", 0) + 1
        return perturb - w_hat * (w_hat * perturb).sum(), wd_ratio
    return perturb, 1.0


def adamp(w, g, st, t, lr, beta1=0.9, beta2=0.999, eps=1e-8, wd=0.0, delta=0.1, wd_ratio=0.1):
    m, v = zeros(st, "m", w), zeros(st, "v", w)
    m.mul_(beta1).add_(g, alpha=1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    perturb = m / (v.sqrt() / math.sqrt(1 - beta2 ** t) + eps)
    perturb, ratio = _project(w, g, perturb, st, delta, wd_ratio, eps)
    w = w * (1 - lr * wd * ratio)
    return w - lr / (1 - beta1 ** t) * perturb


def sgdp(w, g, st, t, lr, momentum=0.9, dampening=0.0, wd=0.0, eps=1e-8, delta=0.1, wd_ratio=0.1):
    buf = zeros(st, "buf", w)
    buf.mul_(momentum).add_(g, alpha=1 - dampening)
    d_p, ratio = _project(w, g, buf.clone(), st, delta, wd_ratio, eps)
    w = w * (1 - lr * wd * ratio / (1 - momentum))
    return w - lr * d_p


def exadam(w, g, st, t, lr, beta1=0.9, beta2=0.999, eps=1e-8, wd=0.0):
    m, v = zeros(st, "m", w), zeros(st, "v", w)
    w = w - lr * wd * w
    m.mul_(beta1).add_(g, alpha=1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    b1t, b2t = beta1 ** t, beta2 ** t
    d1 = 1 + v / (v + eps) * b2t
    d2 = 1 + m.pow(2) / (m.pow(2) + eps) * b1t
    m_tilde = m / (1 - b1t) * d1
    v_tilde = v / (1 - b2t) * d2
    g_tilde = g / (1 - b1t) * d1
    return w - lr * (m_tilde + g_tilde) / (v_tilde.sqrt() + eps)


def gradient_noise(w, g, st, t, lr, eta=0.01, gamma=0.55):
    sigma = math.sqrt(eta / (1 + (t - 1)) ** gamma)
    noise = torch.randn(w.shape, generator=st["gen"], dtype=w.dtype)
    return w - lr * (g + sigma * noise)


def newton_schulz5(G, steps=5, eps=1e-7):
    a, b, c = 3.4445, -4.7750, 2.0315
    X = G.clone()
    tall = G.size(-2) > G.size(-1)
    if tall:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + eps)
    for _ in range(steps):
        A = X @ X.mT
        X = a * X + (b * A + c * A @ A) @ X
    return X.mT if tall else X


def muon(w, g, st, t, lr, momentum=0.95, nesterov=1.0, wd=0.0):
    buf = zeros(st, "buf", w)
    buf.lerp_(g, 1 - momentum)
    update = g.lerp(buf, momentum) if nesterov else buf
    mat = update.reshape(len(update), -1) if update.ndim >= 2 else update.reshape(1, -1)
    o = newton_schulz5(mat) * max(1, mat.size(-2) / mat.size(-1)) ** 0.5
    w = w * (1 - lr * wd)
    return w - lr * o.reshape(w.shape)


def adafactor(w, g, st, t, lr, decay_rate=0.8, eps1=1e-30, eps2=1e-3, d=1.0, rho_max=0.01):
    # Algorithms 4 (matrices: row sums R, column sums C) and 5 (vectors) of the paper, beta1 = 0.
    beta2t = 1 - t ** (-decay_rate)
    g2 = g * g + eps1
    if w.ndim == 2:
        R = st.get("R", torch.zeros(w.shape[0], dtype=w.dtype))
        C = st.get("C", torch.zeros(w.shape[1], dtype=w.dtype))
        st["R"] = R = beta2t * R + (1 - beta2t) * g2.sum(dim=1)
        st["C"] = C = beta2t * C + (1 - beta2t) * g2.sum(dim=0)
        V = torch.outer(R, C) / R.sum()
    else:
        st["V"] = V = beta2t * st.get("V", torch.zeros_like(w)) + (1 - beta2t) * g2
    U = g / V.sqrt()

    def rms(x):
        return x.pow(2).mean().sqrt().item()

    U = U / max(1.0, rms(U) / d)
    alpha = max(eps2, rms(w)) * min(rho_max, 1 / math.sqrt(t))
    return w - lr * alpha * U


REFERENCES = {
    "lion": lion_family(lambda c: torch.sign(c)),
    "lion_tanh": lion_family(lambda c, kappa=1000.0: torch.tanh(kappa * c)),
    "lion_clip": lion_family(lambda c, kappa=1000.0: torch.clamp(kappa * c, -1.0, 1.0)),
    "signsgd": signsgd, "signum": signum, "ldog": ldog, "powersign": powersign,
    "addsign": addsign, "adagradnorm": adagradnorm,
    "lamb": lamb, "lars": lars, "adan": adan, "adabelief": adabelief, "adamp": adamp,
    "sgdp": sgdp, "exadam": exadam, "nadamw_algoperf": nadamw_algoperf, "gradient_noise": gradient_noise, "muon": muon,
    "adafactor": adafactor,
}
# Tested against torch.optim in test_reference_torch.py.
TORCH_TWINS = {"sgd", "momentum", "nesterov", "adam", "adamw", "nadam", "nadamw", "radam",
               "rmsprop", "adagrad", "adamax", "amsgrad"}

# (rule, hyperparameters, lr); every rule with its defaults and once with other values.
CASES = [
    ("lion", {}, 0.01), ("lion", {"beta1": 0.8, "beta2": 0.95, "wd": 0.1}, 0.01),
    ("lion_tanh", {}, 0.01), ("lion_tanh", {"kappa": 3.0, "wd": 0.1, "beta2": 0.9}, 0.02),
    ("lion_clip", {}, 0.01), ("lion_clip", {"kappa": 2.0, "wd": 0.1, "beta1": 0.5}, 0.02),
    ("signsgd", {}, 0.01), ("signsgd", {"wd": 0.2}, 0.01),
    ("signum", {}, 0.01), ("signum", {"beta": 0.5, "wd": 0.2}, 0.01),
    ("ldog", {}, 1.0), ("ldog", {"reps_rel": 1e-3, "eps": 1e-6, "wd": 0.1}, 0.5),
    ("powersign", {}, 0.02), ("powersign", {"beta": 0.5, "alpha": 2.0}, 0.02),
    ("addsign", {}, 0.02), ("addsign", {"beta": 0.7, "alpha": 1.5}, 0.02),
    ("adagradnorm", {}, 0.5), ("adagradnorm", {"b0": 2.0}, 1.0),
    ("lamb", {}, 0.01), ("lamb", {"beta1": 0.8, "beta2": 0.99, "eps": 1e-8, "wd": 0.1}, 0.02),
    ("lars", {}, 0.1), ("lars", {"momentum": 0.5, "wd": 0.01, "eta": 0.1}, 0.1),
    ("adan", {}, 0.01), ("adan", {"beta1": 0.9, "beta2": 0.8, "beta3": 0.95, "wd": 0.1}, 0.02),
    ("nadamw_algoperf", {}, 0.01),
    ("nadamw_algoperf", {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "wd": 0.2}, 0.02),
    ("adabelief", {}, 0.01), ("adabelief", {"beta1": 0.8, "beta2": 0.99, "eps": 1e-10, "wd": 0.1}, 0.02),
    ("adamp", {}, 0.01), ("adamp", {"beta1": 0.8, "wd": 0.1, "delta": 0.5, "wd_ratio": 0.3}, 0.02),
    ("sgdp", {}, 0.02), ("sgdp", {"momentum": 0.5, "dampening": 0.2, "wd": 0.1, "wd_ratio": 0.5}, 0.05),
    ("exadam", {}, 0.01), ("exadam", {"beta1": 0.8, "beta2": 0.99, "eps": 1e-6, "wd": 0.1}, 0.02),
    ("gradient_noise", {}, 0.02), ("gradient_noise", {"eta": 0.3, "gamma": 0.7}, 0.02),
    ("muon", {}, 0.02), ("muon", {"momentum": 0.8, "nesterov": 0.0, "wd": 0.1}, 0.02),
    ("adafactor", {}, 1.0), ("adafactor", {"decay_rate": 0.5, "eps2": 0.01, "d": 0.5, "rho_max": 0.05}, 0.5),
]
EXTRA_PROBLEMS = {
    "tall": lambda: least_squares(rows=6, cols=4, seed=3),
    "scale_invariant": scale_invariant,
}


def reference_path(name, hyper, w0, grad, steps, lr, seed=None):
    step, st, w, out = REFERENCES[name], {}, w0.clone(), []
    if seed is not None:
        st["gen"] = torch.Generator().manual_seed(seed)
    for t in range(1, steps + 1):
        w = step(w, grad(w, t), st, t, lr, **hyper)
        out.append(w.clone())
    return out, st


def problems_for(name):
    names = ["quadratic", "least_squares"]
    if name in ("muon", "adafactor", "lamb", "lars"):
        names.append("tall")
    if name in ("adamp", "sgdp"):
        names.append("scale_invariant")
    return names


PARAMS = [(case, prob) for case in CASES for prob in problems_for(case[0])]


def test_every_known_catalog_rule_has_a_reference_test():
    # found rules are checked against their searched form and a plain implementation in test_found.py
    from test_reference_group import GROUP_TESTED
    from test_reference_matrix import MATRIX_TESTED
    from test_reference_peers import PEER_TESTED
    known = {e.name for e in catalog.entries() if e.origin == "known"}
    assert set(REFERENCES) | TORCH_TWINS | PEER_TESTED | MATRIX_TESTED | GROUP_TESTED == known
    assert {c[0] for c in CASES} == set(REFERENCES)


@pytest.mark.parametrize("case,problem", PARAMS,
                         ids=[f"{c[0]}-{'defaults' if not c[1] else 'custom'}-{p}" for c, p in PARAMS])
def test_rule_matches_paper_reference(case, problem):
    name, hyper, lr = case
    w0, grad = {**PROBLEMS, **EXTRA_PROBLEMS}[problem]()
    seed = 1234 if name == "gradient_noise" else None
    want, state = reference_path(name, hyper, w0, grad, STEPS, lr, seed)
    # Only a well-conditioned run can be compared to 1e-10: the reference from a start
    # perturbed by 1e-15 must stay within 1e-12 of itself.
    assert_paths_close(reference_path(name, hyper, w0 * (1 + 1e-15), grad, STEPS, lr, seed)[0],
                       want, 1e-12)
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    got = rule_path(catalog.get(name), w0, grad, STEPS, lr, hyper, generator=gen)
    assert_paths_close(got, want)
    assert (want[-1] - w0).abs().max() > 1e-4, "the reference barely moved: a weak test"
    if problem == "scale_invariant":
        assert state["projected"] == STEPS  # the projection branch ran at every step


def test_gradient_noise_really_adds_noise():
    w0, grad = PROBLEMS["quadratic"]()
    prog = catalog.get("gradient_noise")
    a = rule_path(prog, w0, grad, 5, 0.1, generator=torch.Generator().manual_seed(1))
    b = rule_path(prog, w0, grad, 5, 0.1, generator=torch.Generator().manual_seed(2))
    assert (a[-1] - b[-1]).abs().max() > 1e-3


def test_adafactor_matrix_moment_is_factored_not_elementwise():
    # V = R C / sum(R) differs from Adam's elementwise g^2 on a matrix: a factored rule
    # must not equal the unfactored one there.
    w0, grad = least_squares()
    factored = reference_path("adafactor", {}, w0, grad, 3, 1.0)[0][-1]
    flat_grad = lambda w, t: grad(w.reshape(w0.shape), t).reshape(-1)  # noqa: E731
    unfactored = reference_path("adafactor", {}, w0.reshape(-1), flat_grad, 3, 1.0)[0][-1]
    got = rule_path(catalog.get("adafactor"), w0, grad, 3, 1.0)[-1]
    assert (got - factored).abs().max() < 1e-12
    assert (got.reshape(-1) - unfactored).abs().max() > 1e-6
