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

Growing batches: a task whose ``batch_schedule`` is the norm test
(:class:`optdisco.training.BatchSizeSpec`) gives every run its own
:class:`optdisco.training.NormTestBatchSize`. A run takes its next ``b`` examples from its
seed's stream (the fixed run's minibatches, end to end), the test sees the batch's
per-example gradients at the parameters before the step, and the run stops when it has
seen the fixed run's ``steps * batch_size`` examples. The schedule and the validation
points follow examples seen: ``lr_t = lr * s(n_t / batch_size)`` with ``n_t`` the examples
seen after step t and ``s`` the warmup-then-cosine multiplier above, so a batch that never
grows trains exactly as the fixed batch does.

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
from ..training import BatchSizeSpec, GradientSpec, NormTestBatchSize, cge_rows, rge_rows
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
    batch_sizes: list[int] | None = None  # each step's batch, under the norm-test controller


def schedule(t: float, steps: int, warmup: float = WARMUP) -> float:
    """Warmup-then-cosine multiplier at step t (1-based; fractional under growing batches) of
    ``steps``; reaches 0 after the last step."""
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
    batch_schedule = kwargs.pop("batch_schedule", "fixed")
    if gradients != "backprop" or batch_schedule != "fixed":
        task = dataclasses.replace(task, gradients=gradients, batch_schedule=batch_schedule)
    with cpu_threads(1):
        return _train(task, programs, runs, **kwargs)


def _train_in_processes(task: Task, ref: tuple[str, str, str], programs: Sequence[Program], runs: Sequence[Run],
                        parts: list[list[int]], kwargs: dict) -> list[list[RunResult]]:
    """All groups but the first in worker processes (:mod:`.workers`; ``ref`` rebuilds the
    task there), the first here."""
    # the worker rebuilds the task by name
    remote = {**kwargs, "gradients": task.gradients, "batch_schedule": task.batch_schedule}
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
    sizing = BatchSizeSpec.parse(task.batch_schedule)
    growing = _GrowingBatches(task, sizing, batches, [seed_row[r.seed] for r in rows], steps) \
        if sizing.method != "fixed" else None
    if growing is not None and zo is not None:
        raise ValueError("the norm test needs per-example gradients: it cannot run on zeroth-order estimates")
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

    for t in range(1, (steps if growing is None else growing.max_steps) + 1):
        if not bool(alive.any()):
            break
        t0 = time.perf_counter()
        factor: float | torch.Tensor = schedule(t, steps)
        # one leaf per parameter tensor: a gradient through views of one flat leaf would
        # materialize a zero-filled (P, N) buffer per tensor in the backward pass
        if growing is not None:
            grown_g, losses = growing.losses_and_gradients(flat, layout, alive, dtype)
            factor = growing.factors(alive, dtype)
        elif zo is None:
            leaves = [v.detach().requires_grad_(True) for v in _unflatten(flat, layout)]
            losses = task.train_loss(leaves, batches[:, t - 1][seed_idx])
        else:
            zo_g, losses = _zeroth_order(task, zo, flat, batches[:, t - 1][seed_idx], layout, zo_draw, t)
        ld = losses.detach()
        if t == 1:
            first_loss = ld.clone()
        live_before = alive.clone()
        for mask, reason in diverged(ld, first_loss, t):
            if bool((mask & alive).any()):
                kill(mask, reason)
        if growing is not None:
            g = grown_g
            growing.test(flat, layout, alive)
        elif zo is None:
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
        lr_rows = lrs * factor

        # this step's values bound now: a closure over the loop's names would see later ones
        def update(k: int, s: int, e: int, *, lr_rows: torch.Tensor = lr_rows, g: torch.Tensor = g,
                   step_t: torch.Tensor = step_t, flat_storage: int = flat_storage) -> Exception | None:
            """Rows s:e of ``flat`` updated in place by program k; the rule's error if it failed."""
            lr_t = lr_rows[s:e]
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
        if growing is not None:
            growing.advance(alive)
            crossed = growing.crossed(alive, eval_at)
            if any(crossed):
                with torch.no_grad():
                    vl_cpu = task.val_loss(_unflatten(flat, layout)).float().cpu().tolist()
                for i, n in enumerate(crossed):
                    curves[i].extend([vl_cpu[i]] * n)
            finished = growing.finish(flat, alive)
            if bool(finished.any()):
                alive.logical_and_(~finished)
                for k, s, e in groups:
                    group_alive[k] = bool(alive[s:e].any())
        elif t in eval_at:
            with torch.no_grad():
                vl = task.val_loss(_unflatten(flat, layout))
            vl_cpu, alive_cpu = vl.float().cpu().tolist(), alive.cpu().tolist()
            for i in range(P):
                curves[i].append(vl_cpu[i] if alive_cpu[i] else float("inf"))

    results: list[RunResult | None] = [None] * len(runs)
    for i, orig in enumerate(order):
        ok = bool(alive[i]) if growing is None else i in growing.final
        final = flat[i] if growing is None else growing.final.get(i)
        if growing is not None and not ok:
            curves[i] += [float("inf")] * (len(eval_at) - len(curves[i]))
        loss = curves[i][-1] if ok and curves[i] else float("inf")
        reason = failure[i]
        if ok and not math.isfinite(loss):
            ok, reason = False, "non-finite validation loss"
        results[orig] = RunResult(loss=loss if ok else float("inf"), curve=curves[i],
                                  failure=None if ok else reason,
                                  params=final.cpu().clone() if ok and keep_params and final is not None else None,
                                  train_loss=float(last_train[i]), steps_done=int(steps_done[i]),
                                  batch_sizes=None if growing is None else growing.used[i])
    return results  # type: ignore[return-value]


#: Scalars per chunk of per-example gradients (rows x examples x parameters) for the norm test.
PER_EXAMPLE_CHUNK = 1 << 23


class _GrowingBatches:
    """The batch sizes of every row of :func:`_train` under the norm test (module doc): each
    row's controller, the examples it has seen, its batch this step and the sizes it used.

    A row's examples are its seed's fixed minibatches laid end to end (``stream``), so the
    first ``steps * batch_size`` examples of every seed are the same whatever the sizes."""

    def __init__(self, task: Task, spec: BatchSizeSpec, batches: torch.Tensor, row_seed: list[int],
                 steps: int) -> None:
        if not task.example_batches:
            raise ValueError(f"task {task.name} has no minibatches of examples, so the norm test "
                             "cannot grow its batch")
        self.task, self.steps, self.row_seed = task, steps, row_seed
        self.stream = batches.reshape(batches.shape[0], -1)   # (seeds, steps * batch_size)
        self.budget = self.stream.shape[1]
        self.controllers: list[NormTestBatchSize] = [spec.controller(task.batch_size) for _ in row_seed]
        self.max_steps = math.ceil(self.budget / self.controllers[0].batch_size)
        self.seen = [0] * len(row_seed)
        self.sizes = [0] * len(row_seed)      # this step's batch per row (0: not training)
        self.used: list[list[int]] = [[] for _ in row_seed]
        self.final: dict[int, torch.Tensor] = {}

    def _indices(self, i: int) -> torch.Tensor:
        return self.stream[self.row_seed[i], self.seen[i]:self.seen[i] + self.sizes[i]]

    def losses_and_gradients(self, flat: torch.Tensor, layout, alive: torch.Tensor,
                             dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(gradients (P, N), training losses (P,)) of each live row on its next ``b`` examples,
        ``b = min(controller's batch, examples left)``; rows of one size train as one batch."""
        P, N = flat.shape
        by_size: dict[int, list[int]] = {}
        for i, live in enumerate(alive.tolist()):
            self.sizes[i] = min(self.controllers[i].batch_size, self.budget - self.seen[i]) if live else 0
            if live:
                by_size.setdefault(self.sizes[i], []).append(i)
        g = torch.zeros(P, N, dtype=dtype, device=flat.device)
        losses = torch.zeros(P, dtype=dtype, device=flat.device)
        for rows in by_size.values():
            idx = torch.tensor(rows, device=flat.device)
            leaves = [v.detach().requires_grad_(True) for v in _unflatten(flat[idx], layout)]
            part = self.task.train_loss(leaves, torch.stack([self._indices(i) for i in rows]))
            grads = torch.autograd.grad(part.sum(), leaves, allow_unused=True)
            g[idx] = torch.cat([torch.zeros(len(rows), n, dtype=dtype, device=flat.device) if gr is None
                                else gr.reshape(len(rows), n) for gr, (_, n, _) in zip(grads, layout)], dim=1)
            losses[idx] = part.detach()
        return g, losses

    def factors(self, alive: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """Each row's schedule multiplier ``s(n_t / batch_size)`` for this step, ``(P, 1)``."""
        B = self.task.batch_size
        return torch.tensor([schedule((self.seen[i] + b) / B, self.steps) if b else 0.0
                             for i, b in enumerate(self.sizes)], dtype=dtype, device=alive.device).unsqueeze(1)

    def test(self, flat: torch.Tensor, layout, alive: torch.Tensor) -> None:
        """Feed every live row that trains on after this step its controller: the per-example
        gradients of this step's batch at the parameters before the step, when it tests."""
        going_on = [i for i, live in enumerate(alive.tolist())
                    if live and self.seen[i] + self.sizes[i] < self.budget]
        testing = [i for i in going_on if self.controllers[i].tests_next]
        grads = _per_example_gradients(self.task, flat, layout, [(i, self._indices(i)) for i in testing])
        for i in going_on:
            self.controllers[i].update([grads[i]] if i in grads else None)

    def advance(self, alive: torch.Tensor) -> None:
        """Count this step's examples as seen by the rows that trained on them."""
        for i, live in enumerate(alive.tolist()):
            if live and self.sizes[i]:
                self.used[i].append(self.sizes[i])
                self.seen[i] += self.sizes[i]

    def crossed(self, alive: torch.Tensor, eval_at: list[int]) -> list[int]:
        """Per row, how many validation points (the fixed run's, at ``t * batch_size`` examples
        for each ``t`` of ``eval_at``) this step passed: the row's curve gets its validation
        loss once for each."""
        marks = [t * self.task.batch_size for t in eval_at]
        out = []
        for i, live in enumerate(alive.tolist()):
            before = self.seen[i] - self.sizes[i]
            out.append(sum(before < m <= self.seen[i] for m in marks) if live and self.sizes[i] else 0)
        return out

    def finish(self, flat: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
        """Rows that have seen the whole budget: their parameters are kept and they stop."""
        done = torch.zeros_like(alive)
        for i, live in enumerate(alive.tolist()):
            if live and self.seen[i] >= self.budget:
                self.final[i] = flat[i].clone()
                done[i] = True
        return done


def _per_example_gradients(task: Task, flat: torch.Tensor, layout,
                           items: list[tuple[int, torch.Tensor]]) -> dict[int, torch.Tensor]:
    """Per row ``r`` of ``items`` (row, example indices ``(b,)``): the gradients ``(b, N)`` of
    each single example's loss at ``flat[r]``, ``G_j = d loss(flat[r]; x_j) / d theta``. Each
    (row, example) pair is its own problem of the batched task (the row's parameters repeated
    ``b`` times, a batch of one example each), in chunks of at most PER_EXAMPLE_CHUNK scalars."""
    out: dict[int, torch.Tensor] = {}
    n = flat.shape[1]
    start = 0
    while start < len(items):
        end, total = start, 0
        while end < len(items) and (end == start or total + items[end][1].numel() * n <= PER_EXAMPLE_CHUNK):
            total += items[end][1].numel() * n
            end += 1
        part = items[start:end]
        sizes = [idx.numel() for _, idx in part]
        rows = torch.tensor([r for r, _ in part], device=flat.device)
        expanded = flat[rows].repeat_interleave(torch.tensor(sizes, device=flat.device), dim=0)
        leaves = [v.detach().requires_grad_(True) for v in _unflatten(expanded, layout)]
        losses = task.train_loss(leaves, torch.cat([idx for _, idx in part]).unsqueeze(1))
        grads = torch.autograd.grad(losses.sum(), leaves, allow_unused=True)
        G = torch.cat([torch.zeros(len(expanded), m, dtype=flat.dtype, device=flat.device) if gr is None
                       else gr.reshape(len(expanded), m) for gr, (_, m, _) in zip(grads, layout)], dim=1)
        for (r, _), piece in zip(part, G.split(sizes)):
            out[r] = piece
        start = end
    return out


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
