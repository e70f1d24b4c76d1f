"""Matrix-rule speed rows: SOAP, Shampoo and Muon against their peers, time per step on CPU.

    python benchmarks/bench_matrix.py             # 10.5M parameters in 128 matrices
    python benchmarks/bench_matrix.py --quick     # 0.4M parameters (smoke test)
    python benchmarks/bench_kernels.py --matrix   # the same rows, from the kernel benchmark

Each row is ``optdisco.Optimizer(params, rule).step()`` (``backend="auto"``, which runs matrix
rules on the interpreter) beside the peer's ``step()`` on the same list of matrices, on one CPU
thread, in interleaved rounds (ours, peer, ours, peer, ...) so that load from other processes
hits both alike. A round of SOAP is ``freq`` steps, so it holds exactly one basis refresh of
each. The peers run with the settings that make the two do the same work:

* SOAP: ``pytorch_optimizer.SOAP(betas=(0.95, 0.95), shampoo_beta=0.95, eps=1e-8,
  weight_decay=0.01, precondition_frequency=10)`` against the ``soap`` rule (freq=10); both
  refresh the basis once every 10 steps, the peer by one power-iteration step and a QR
  (float32), the rule by eigh (float64, as the rule's documentation says).
* Shampoo: ``pytorch_optimizer.Shampoo(momentum=0, weight_decay=0,
  preconditioning_compute_steps=1, matrix_eps=1e-6)`` against ``shampoo`` (eps=1e-6): both
  take both inverse fourth roots every step (the peer by SVD, the rule by eigh).
* Muon: ``torch.optim.Muon(momentum=0.95, nesterov=True, weight_decay=0, ns_steps=5,
  ns_coefficients=(3.4445, -4.775, 2.0315), eps=1e-7)`` (adjust_lr_fn=None, the reference's
  sqrt(max(1, rows/cols)) scale) against ``muon``; torch runs Newton-Schulz in bfloat16, the
  rule in float32.

Columns: s/step is the median over rounds of a round's mean step time, best the fastest round's;
median and longest are over single steps (for SOAP: a steady step, and a refresh step). The last
lines are ``cpu <rule> vs <peer>: X``, optdisco's s/step over the peer's (lower is better).
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch

import optdisco

#: ~10.5M parameters: 96 square 256 x 256 matrices and 16 each of 512 x 256 and 256 x 512 (a
#: transformer's attention and MLP weights at width 256). The work per parameter of a step grows
#: with the matrix size (products: n, eigh: n); width 256 keeps a 3-round table under about 10
#: minutes on one loaded core.
MATRIX_SHAPES: list[tuple[int, int]] = [(256, 256)] * 96 + [(512, 256)] * 16 + [(256, 512)] * 16
QUICK_SHAPES: list[tuple[int, int]] = [(128, 128)] * 16 + [(256, 128)] * 4 + [(128, 256)] * 4

SOAP_FREQ = 10


@dataclass(frozen=True)
class Row:
    """One comparison: optdisco's rule and its peer, built on the same parameters."""

    rule: str
    peer_name: str
    ours: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]
    peer: Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]
    steps_per_round: int
    settings: str


def _soap_peer(params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    from pytorch_optimizer import SOAP  # test and benchmark peer only
    return SOAP(params, lr=3e-3, betas=(0.95, 0.95), shampoo_beta=0.95, eps=1e-8, weight_decay=0.01,
                precondition_frequency=SOAP_FREQ)


def _shampoo_peer(params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    from pytorch_optimizer import Shampoo  # test and benchmark peer only
    return Shampoo(params, lr=1e-3, momentum=0.0, weight_decay=0.0, preconditioning_compute_steps=1,
                   matrix_eps=1e-6)


def _muon_peer(params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.Muon(params, lr=0.02, weight_decay=0.0, momentum=0.95, nesterov=True,
                            ns_coefficients=(3.4445, -4.775, 2.0315), eps=1e-7, ns_steps=5)


ROWS: dict[str, Row] = {
    "soap": Row("soap", "pytorch_optimizer SOAP",
                lambda ps: optdisco.Optimizer(ps, "soap", lr=3e-3, freq=float(SOAP_FREQ)), _soap_peer,
                SOAP_FREQ, f"freq={SOAP_FREQ} (one refresh per round), betas 0.95/0.95, eps 1e-8, wd 0.01"),
    "shampoo": Row("shampoo", "pytorch_optimizer Shampoo",
                   lambda ps: optdisco.Optimizer(ps, "shampoo", lr=1e-3, eps=1e-6), _shampoo_peer,
                   1, "roots every step, eps 1e-6, no momentum or weight decay"),
    "muon": Row("muon", "torch.optim.Muon",
                lambda ps: optdisco.Optimizer(ps, "muon", lr=0.02), _muon_peer,
                2, "5 Newton-Schulz steps (3.4445, -4.775, 2.0315), eps 1e-7, nesterov, wd 0"),
}


def _make_params(shapes: list[tuple[int, int]], seed: int) -> list[torch.nn.Parameter]:
    """Parameters of ``shapes`` with fixed random gradients (the same for every optimizer)."""
    gen = torch.Generator().manual_seed(seed)
    params = []
    for s in shapes:
        p = torch.nn.Parameter(torch.randn(s, generator=gen) * 0.02)
        p.grad = torch.randn(s, generator=gen)
        params.append(p)
    return params


def _time_steps(opt: torch.optim.Optimizer, steps: int) -> list[float]:
    """Seconds of each of ``steps`` consecutive steps."""
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - start)
    return times


def bench_row(row: Row, shapes: list[tuple[int, int]], rounds: int) -> dict[str, list[list[float]]]:
    """Seconds of each step of ``row``'s two optimizers in each of ``rounds`` interleaved rounds
    of ``row.steps_per_round`` steps, after one untimed first step each (state allocation and,
    for SOAP, the first eigenbasis) and, for a rule on the CPU fast path (Muon), its background
    compile."""
    params = _make_params(shapes, 0)
    opts = {"optdisco": row.ours(params), "peer": row.peer(_make_params(shapes, 0))}
    for opt in opts.values():
        opt.step()
    backend = opts["optdisco"]._backend_for(params[0].device)  # type: ignore[attr-defined]
    if hasattr(backend, "wait_compiled"):  # time the steady state, not a background compile
        backend.wait_compiled()
    times: dict[str, list[list[float]]] = {name: [] for name in opts}
    for _ in range(rounds):
        for name, opt in opts.items():
            times[name].append(_time_steps(opt, row.steps_per_round))
    return times


def run(rules: list[str], shapes: list[tuple[int, int]], rounds: int) -> dict[str, float]:
    """Prints the matrix-rule table on one CPU thread; returns ``{rule: ours / peer}`` (median of
    rounds)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    numel = sum(math.prod(s) for s in shapes)
    load = os.getloadavg()[0]
    print(f"\n== matrix rules, optimizer.step() on 1 CPU thread, {len(shapes)} matrices, "
          f"{numel / 1e6:.1f}M parameters, {rounds} interleaved rounds"
          + (f" (loaded machine: load average {load:.2f})" if load > 1.5 else "") + " ==")
    head = (f"{'rule':<10}{'optimizer':<28}{'s/step':>9}{'best':>9}{'median':>9}{'longest':>9}"
            f"{'vs peer':>9}  settings")
    print(head)
    print("-" * len(head))
    ratios = {}
    try:
        for rule in rules:
            row = ROWS[rule]
            times = bench_row(row, shapes, rounds)
            # s/step: the median over rounds of a round's mean step (a SOAP round holds one basis
            # refresh); median and longest: over every single step (the steady step, the refresh)
            per_round = {n: sorted(sum(r) / len(r) for r in t)[len(t) // 2] for n, t in times.items()}
            for name, label in (("optdisco", f"optdisco {rule}"), ("peer", row.peer_name)):
                rounds_mean = sorted(sum(r) / len(r) for r in times[name])
                steps_all = sorted(x for r in times[name] for x in r)
                print(f"{rule:<10}{label:<28}{per_round[name]:>9.3f}{rounds_mean[0]:>9.3f}"
                      f"{steps_all[len(steps_all) // 2]:>9.3f}{steps_all[-1]:>9.3f}"
                      f"{per_round[name] / per_round['peer']:>9.2f}  {row.settings} "
                      f"({row.steps_per_round} steps/round)")
            ratios[rule] = per_round["optdisco"] / per_round["peer"]
            sys.stdout.flush()
    finally:
        torch.set_num_threads(threads)
    return ratios


def print_matrix(quick: bool, rules: list[str] | None = None) -> None:
    """The matrix rows as ``bench_kernels.py --matrix`` prints them, then one ratio line per rule."""
    ratios = run(rules or list(ROWS), QUICK_SHAPES if quick else MATRIX_SHAPES, 3)
    print()
    for rule, ratio in ratios.items():
        print(f"cpu {rule} vs {ROWS[rule].peer_name}: {ratio:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="0.4M parameters (smoke test)")
    ap.add_argument("--rule", action="append", choices=list(ROWS), help="only this rule (repeatable)")
    args = ap.parse_args()
    print(f"optdisco matrix benchmark, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}")
    print_matrix(args.quick, args.rule)


if __name__ == "__main__":
    main()
