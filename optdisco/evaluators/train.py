"""Batched training: many (rule, learning rate, seed) runs on one task as one computation.

All runs' parameters live in one flat buffer ``(P, N)`` (P runs, N scalars per run). Each
step does one batched forward/backward for all P runs (the task's losses are independent
per run, so the gradient of their sum is every run's own gradient; each parameter tensor
is its own autograd leaf), then applies each rule's update to its contiguous slice of
rows with the rule compiled for the flat layout (:class:`optdisco.evaluators.tape.FlatTape`;
learning rates are a ``(rows, 1)`` tensor): elementwise work runs once over the whole
slice, and ``norm`` or ``orthogonalize`` see each weight as the rule language defines.

Schedule: linear warmup over the first ``warmup`` fraction of steps, then cosine decay to
zero: lr_t = lr * min(t / t_w, 1/2 (1 + cos(pi (t - t_w) / (T - t_w)))).

Robustness: a run whose training loss is nan/inf or exceeds ``explode`` times its initial
loss stops (its row is reset to the initial point and masked out of the loss) with a
reason; a rule whose update raises (or returns non-finite values everywhere) fails all of
its runs with the error text. Other runs are unaffected.
"""

from __future__ import annotations

import dataclasses
import math
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import torch

from ..dsl import Program
from ..dsl.interpreter import cpu_threads
from ..training import GradientSpec, cge_rows, rge_rows
from . import workers
from .tape import flat_layout, make_step, state_widths
from .tasks import Task, get_task

EXPLODE = 100.0
#: One core by default: the search runs one worker per core. More cores train different
#: programs side by side, each on one torch thread (see :func:`train`): a multi-threaded
#: matrix product splits its work by the batch's shape, so a rule trained beside others
#: would round differently from the same rule trained alone (or from its cached baseline),
#: and chaotic training turns that rounding into loss differences of tens of percent.
TRAIN_THREADS = 1
WARMUP = 0.05


@dataclass(frozen=True)
class Run:
    """One training run: which program (index into the list given), peak learning rate, seed."""

    program: int
    lr: float
    seed: int


@dataclass
class RunResult:
    """What a run ended with: validation loss (inf if failed), curve, failure reason, final weights."""

    loss: float
    curve: list[float]
    failure: str | None
    params: torch.Tensor | None = None   # flat final parameters (N,), or None if failed
    train_loss: float = float("nan")
    steps_done: int = 0


def schedule(t: int, steps: int, warmup: float = WARMUP) -> float:
    """Warmup-then-cosine multiplier at step t (1-based) of ``steps``; reaches 0 after the last step."""
    tw = max(1, int(round(warmup * steps)))
    if t <= tw:
        return t / tw
    return 0.5 * (1.0 + math.cos(math.pi * (t - tw) / max(1, steps - tw)))


def seed_generator(task: Task, seed: int, purpose: str) -> torch.Generator:
    """A generator determined by (task, seed, purpose) alone, so runs are reproducible."""
    return torch.Generator().manual_seed(zlib.crc32(f"{task.name}/{seed}/{purpose}".encode()))


def _layout(task: Task) -> list[tuple[int, int, tuple[int, ...]]]:
    return flat_layout([shape for _, shape in task.shapes])


def _unflatten(flat: torch.Tensor, layout) -> list[torch.Tensor]:
    P = flat.shape[0]
    return [flat[:, o:o + n].view(P, *shape) for o, n, shape in layout]


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}"[:300]


def train(task: Task, programs: Sequence[Program], runs: Sequence[Run], *, steps: int | None = None,
          n_evals: int = 8, time_limit: float | None = None, keep_params: bool = True,
          dtype: torch.dtype = torch.float32, threads: int | None = TRAIN_THREADS) -> list[RunResult]:
    """Train every run for ``steps`` updates (task default if None); results in the order of ``runs``.

    ``time_limit`` (seconds) applies per program: its own update time plus an equal share of
    the shared forward/backward time; a program over the limit fails with that reason.
    ``threads``: CPU cores to use; None leaves torch's thread setting as it is. The
    programs are dealt into up to ``threads`` groups trained side by side on one torch
    thread each: in worker processes for the registered tasks (:mod:`.workers`; spawned
    once, so a script calling this with ``threads > 1`` needs the usual
    ``if __name__ == "__main__":`` guard), else in Python threads (a program's runs stay
    together, so one program uses one core). The numbers are therefore bit for bit the
    same for every ``threads``: torch's own threading splits matrix products by the batch's
    shape, which changes their rounding and would make a candidate's loss depend on the
    machine it ran on. On the small tasks this is also faster than torch's threading.
    """
    kwargs: dict = dict(steps=steps, n_evals=n_evals, time_limit=time_limit, keep_params=keep_params, dtype=dtype)
    if task.device != "cpu" or threads is None:
        return _train(task, programs, runs, **kwargs)
    parts = _deal_programs(runs, threads)
    if len(parts) <= 1:
        with cpu_threads(1):
            return _train(task, programs, runs, **kwargs)
    results: list[RunResult | None] = [None] * len(runs)
    ref = workers.task_ref(task)
    if ref is not None:
        by_part = _train_in_processes(task, ref, programs, runs, parts, kwargs)
    else:  # a task built by hand: threads (1.2-1.4x on 2 cores, against 2x in processes)
        with cpu_threads(1), ThreadPoolExecutor(len(parts), thread_name_prefix="optdisco-train") as pool:
            futures = [pool.submit(_train, task, programs, [runs[i] for i in part], **kwargs) for part in parts]
            by_part = [f.result() for f in futures]
    for part, part_results in zip(parts, by_part):
        for i, res in zip(part, part_results):
            results[i] = res
    return results  # type: ignore[return-value]


def train_in_worker(ref: tuple[str, str, str], programs: Sequence[Program], runs: Sequence[Run],
                    kwargs: dict) -> list[RunResult]:
    """Runs in a worker process: :func:`_train` of the registered task ``ref`` on one torch thread."""
    kwargs = dict(kwargs)
    task = get_task(*ref)
    gradients = kwargs.pop("gradients", "backprop")
    if gradients != "backprop":
        task = dataclasses.replace(task, gradients=gradients)
    with cpu_threads(1):
        return _train(task, programs, runs, **kwargs)


def _train_in_processes(task: Task, ref: tuple[str, str, str], programs: Sequence[Program], runs: Sequence[Run],
                        parts: list[list[int]], kwargs: dict) -> list[list[RunResult]]:
    """All groups but the first in worker processes (:mod:`.workers`; ``ref`` rebuilds the
    task there), the first here."""
    remote = {**kwargs, "gradients": task.gradients}  # the worker rebuilds the task by name
    futures = [workers.submit(len(parts) - 1, train_in_worker, ref, programs, [runs[i] for i in part], remote)
               for part in parts[1:]]
    with cpu_threads(1):
        out = [_train(task, programs, [runs[i] for i in parts[0]], **kwargs)]
    for part, future in zip(parts[1:], futures):
        try:
            out.append(future.result())
        except workers.BrokenProcessPool:  # a worker died (killed, out of memory): train it here
            workers.reset()
            with cpu_threads(1):
                out.append(_train(task, programs, [runs[i] for i in part], **kwargs))
    return out


def _deal_programs(runs: Sequence[Run], n: int) -> list[list[int]]:
    """Indices of ``runs`` in at most ``n`` groups, each program's runs in one group, the
    groups' run counts as even as a greedy deal (most runs first) makes them."""
    by_program: dict[int, list[int]] = {}
    for i, r in enumerate(runs):
        by_program.setdefault(r.program, []).append(i)
    parts: list[list[int]] = [[] for _ in range(min(n, len(by_program)))]
    for idx in sorted(by_program.values(), key=len, reverse=True):
        min(parts, key=len).extend(idx)
    return [p for p in parts if p]


def _train(task: Task, programs: Sequence[Program], runs: Sequence[Run], *, steps: int | None,
           n_evals: int, time_limit: float | None, keep_params: bool, dtype: torch.dtype) -> list[RunResult]:
    steps = steps or task.steps
    order = sorted(range(len(runs)), key=lambda i: runs[i].program)  # contiguous rows per program
    rows = [runs[i] for i in order]
    P = len(rows)
    layout = _layout(task)
    seeds = sorted({r.seed for r in rows})
    seed_row = {s: i for i, s in enumerate(seeds)}
    dev = torch.device(task.device)
    inits = [torch.cat([p.reshape(-1) for p in task.init(seed_generator(task, s, "init"))]) for s in seeds]
    batches = torch.stack([task.sample(seed_generator(task, s, "data"), steps) for s in seeds]).to(dev)
    seed_idx = torch.tensor([seed_row[r.seed] for r in rows], device=dev)
    init_flat = torch.stack(inits).to(dev, dtype)[seed_idx]
    flat = init_flat.clone()
    lrs = torch.tensor([r.lr for r in rows], dtype=dtype, device=dev).unsqueeze(1)

    groups: list[tuple[int, int, int]] = []  # (program index, start row, end row)
    for i, r in enumerate(rows):
        if groups and groups[-1][0] == r.program:
            groups[-1] = (r.program, groups[-1][1], i + 1)
        else:
            groups.append((r.program, i, i + 1))
    # a state's row is as wide as its storage: the parameter count, or less or more for
    # matrix states (factors, per-row statistics; tape.state_widths)
    states = {k: [torch.zeros(e - s, width, dtype=dtype, device=dev) for width in state_widths(programs[k], layout)]
              for k, s, e in groups}
    steppers = {k: make_step(programs[k], layout) for k, _, _ in groups}
    group_alive = {k: True for k, _, _ in groups}  # python mirror of alive[s:e].any(), refreshed on kills
    noise_gen = {k: torch.Generator(dev).manual_seed(1000 + k + 7919 * rows[s].seed) for k, s, e in groups}
    prog_time = {k: 0.0 for k, _, _ in groups}   # own update time + a share of forward/backward

    zo = GradientSpec.parse(task.gradients) if task.gradients != "backprop" else None
    zo_gens = [seed_generator(task, s, "zeroth-order") for s in seeds]

    def zo_draw() -> torch.Tensor:
        """One RGE direction per row: each seed's own stream, so a run's directions never depend
        on the other runs trained beside it."""
        return torch.stack([torch.randn(flat.shape[1], generator=gen, dtype=dtype) for gen in zo_gens]
                           ).to(dev)[seed_idx]

    alive = torch.ones(P, dtype=torch.bool, device=dev)
    failure: list[str | None] = [None] * P
    curves: list[list[float]] = [[] for _ in range(P)]
    eval_at = sorted({max(1, round(steps * (i + 1) / n_evals)) for i in range(n_evals)})
    first_loss = torch.full((P,), float("nan"), device=dev)
    last_train = torch.full((P,), float("nan"), device=dev)
    steps_done = torch.zeros(P, dtype=torch.long, device=dev)

    def kill(mask: torch.Tensor, reason: str) -> None:
        nonlocal flat
        for i in torch.nonzero(mask & alive).flatten().tolist():
            failure[i] = reason
        alive.logical_and_(~mask)
        flat = torch.where(alive.unsqueeze(1), flat, init_flat)
        for k, s, e in groups:
            # not in place: a rule may return a state that is an expanded (broadcast) view
            states[k] = [torch.where(alive[s:e].unsqueeze(1), st, torch.zeros((), dtype=st.dtype))
                         for st in states[k]]
            group_alive[k] = bool(alive[s:e].any())

    for t in range(1, steps + 1):
        if not bool(alive.any()):
            break
        t0 = time.perf_counter()
        factor = schedule(t, steps)
        # one leaf per parameter tensor: a gradient through views of one flat leaf would
        # materialize a zero-filled (P, N) buffer per tensor in the backward pass
        batch = batches[:, t - 1][seed_idx]
        if zo is None:
            leaves = [v.detach().requires_grad_(True) for v in _unflatten(flat, layout)]
            losses = task.train_loss(leaves, batch)
        else:
            zo_g, losses = _zeroth_order(task, zo, flat, batch, layout, zo_draw, t)
        ld = losses.detach()
        if t == 1:
            first_loss = ld.clone()
        live_before = alive.clone()
        for mask, reason in diverged(ld, first_loss, t):
            if bool((mask & alive).any()):
                kill(mask, reason)
        if zo is None:
            total = torch.where(live_before, losses, torch.zeros_like(losses)).sum()
            grads = torch.autograd.grad(total, leaves, allow_unused=True)
            g = torch.cat([torch.zeros(P, n, dtype=dtype, device=dev) if gr is None else gr.reshape(P, n)
                           for gr, (_, n, _) in zip(grads, layout)], dim=1)
        else:
            g = zo_g
        if not bool(alive.all()):
            g = torch.where(alive.unsqueeze(1), g, torch.zeros((), dtype=dtype, device=dev))
        last_train = torch.where(alive, ld, last_train)
        steps_done += alive.long()
        shared = time.perf_counter() - t0
        n_live_groups = max(1, sum(group_alive.values()))

        flat_storage = flat.untyped_storage().data_ptr()
        step_t = torch.tensor(float(t), dtype=dtype, device=dev)

        # this step's values bound now: a closure over the loop's names would see later ones
        def update(k: int, s: int, e: int, *, factor: float = factor, g: torch.Tensor = g,
                   step_t: torch.Tensor = step_t, flat_storage: int = flat_storage) -> Exception | None:
            """Rows s:e of ``flat`` updated in place by program k; the rule's error if it failed."""
            lr_t = lrs[s:e] * factor
            try:
                with torch.no_grad():
                    u, new_states = steppers[k](flat[s:e], g[s:e], states[k], step=step_t, lr=lr_t,
                                                generator=noise_gen[k])
                    # a state that is w itself must not change with the in-place update below
                    new_states = [st.clone() if st.untyped_storage().data_ptr() == flat_storage else st
                                  for st in new_states]
                    flat[s:e].sub_(lr_t * u)
                states[k] = new_states
                return None
            except Exception as rule_error:  # a rule's own failure must never stop the others
                return rule_error

        for k, s, e in groups:
            if not group_alive[k]:
                continue
            t1 = time.perf_counter()
            err = update(k, s, e)
            prog_time[k] += time.perf_counter() - t1 + shared / n_live_groups
            if err is not None:
                alive[s:e] = False
                group_alive[k] = False
                for i in range(s, e):
                    failure[i] = failure[i] or f"rule error at step {t}: {_short(err)}"
                flat[s:e] = init_flat[s:e]
                states[k] = [torch.zeros_like(st) for st in states[k]]
            if time_limit is not None and prog_time[k] > time_limit and group_alive[k]:
                for i in range(s, e):
                    if alive[i]:
                        failure[i] = f"time limit of {time_limit:g}s exceeded at step {t}"
                alive[s:e] = False
                group_alive[k] = False
        nonfinite = _nonfinite_rows(flat) & alive
        if bool(nonfinite.any()):
            kill(nonfinite, f"non-finite parameters after step {t}")
        if t in eval_at:
            with torch.no_grad():
                vl = task.val_loss(_unflatten(flat, layout))
            vl_cpu, alive_cpu = vl.float().cpu().tolist(), alive.cpu().tolist()
            for i in range(P):
                curves[i].append(vl_cpu[i] if alive_cpu[i] else float("inf"))

    results: list[RunResult | None] = [None] * len(runs)
    for i, orig in enumerate(order):
        ok = bool(alive[i])
        loss = curves[i][-1] if ok and curves[i] else float("inf")
        reason = failure[i]
        if ok and not math.isfinite(loss):
            ok, reason = False, "non-finite validation loss"
        results[orig] = RunResult(loss=loss if ok else float("inf"), curve=curves[i],
                                  failure=None if ok else reason,
                                  params=flat[i].cpu().clone() if ok and keep_params else None,
                                  train_loss=float(last_train[i]), steps_done=int(steps_done[i]))
    return results  # type: ignore[return-value]


def _zeroth_order(task: Task, spec: GradientSpec, flat: torch.Tensor, batch: torch.Tensor, layout,
                  draw, t: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(gradient estimates (P, N), training losses (P,)) at ``flat`` from loss values only:
    RGE with :func:`optdisco.training.rge_rows`, or CGE over ``round(density * N)`` coordinates
    drawn for step ``t`` (the same for every run, so batching does not change them)."""
    def loss(x: torch.Tensor) -> torch.Tensor:
        return task.train_loss(_unflatten(x, layout), batch)

    if spec.method == "rge":
        est, base, _ = rge_rows(loss, flat, mu=spec.mu, queries=spec.queries, draw=draw)
        return est, base
    n = flat.shape[1]
    coords = None
    if spec.density < 1.0:
        gen = torch.Generator().manual_seed(zlib.crc32(f"{task.key}/cge/{t}".encode()))
        coords = torch.randperm(n, generator=gen)[:max(1, round(spec.density * n))].sort().values
    est, base, _ = cge_rows(loss, flat, mu=spec.mu, coords=coords)
    return est, base


def diverged(losses: torch.Tensor, first: torch.Tensor, t: int) -> list[tuple[torch.Tensor, str]]:
    """The divergence rule of batched training at step ``t``: (rows, reason) for the rows whose
    training loss is non-finite, and for those above ``EXPLODE * max(|first loss|, 1e-3)``."""
    exploded = torch.isfinite(losses) & (losses > EXPLODE * first.abs().clamp_min(1e-3))
    return [(~torch.isfinite(losses), f"non-finite training loss at step {t}"),
            (exploded, f"training loss exploded at step {t} (> {EXPLODE:g}x its initial value)")]


def _nonfinite_rows(flat: torch.Tensor) -> torch.Tensor:
    """Rows of ``flat`` holding a nan or inf, found from row sums (a nan or inf makes the sum
    non-finite); only rows whose sum is non-finite (which finite values that overflow can
    also cause) are checked element by element."""
    suspect = ~torch.isfinite(flat.sum(dim=1))
    if bool(suspect.any()):
        suspect[suspect.clone()] = ~torch.isfinite(flat[suspect]).all(dim=1)
    return suspect
