"""Where batches of candidates are evaluated: in this process (tests) or on Ray workers.

Both executors have the same small interface: ``submit(key, sources, settings)`` queues a
batch of rule texts, ``wait(timeout)`` returns the batches that finished as
``(key, results)`` pairs, where ``results`` is a list of result dicts or a
:class:`BatchFailure` (the worker died, the batch hung past its time limit, or Ray
failed), and ``workers`` says how many batches run at once.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .fitness import FitnessFn, evaluate_batch


@dataclass(frozen=True)
class BatchFailure:
    """A batch that produced no results, and why."""

    reason: str


Completion = tuple[int, "list[dict[str, Any]] | BatchFailure"]


class InProcessExecutor:
    """Runs each batch in this process when waited for, oldest first: deterministic, no Ray."""

    workers = 1

    def __init__(self, fitness: str | FitnessFn = "proxy") -> None:
        self.fitness = fitness
        self.queue: collections.deque = collections.deque()

    def submit(self, key: int, sources: Sequence[str], settings: Mapping[str, Any],
               time_limit: float | None = None) -> None:
        self.queue.append((key, list(sources), dict(settings)))

    def in_flight(self) -> int:
        return len(self.queue)

    def wait(self, timeout: float) -> list[Completion]:
        if not self.queue:
            return []
        key, sources, settings = self.queue.popleft()
        try:
            return [(key, evaluate_batch(sources, settings, self.fitness))]
        except Exception as e:  # noqa: BLE001 - a broken batch is that batch's failure
            return [(key, BatchFailure(f"{type(e).__name__}: {e}"))]

    def shutdown(self) -> None:
        self.queue.clear()


def init_ray(address: str = "", workers: int = 0) -> int:
    """Connect to Ray (join ``address``, or start locally with ``workers`` CPUs, 0 = all); returns CPUs.

    An already initialized Ray (a test session's shared instance) is used as it is.
    """
    import os

    # optional (the search extra); only Ray runs need it
    import ray
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=workers or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


class RayExecutor:
    """Asynchronous batches on Ray workers, one CPU each, with per-batch time limits.

    At most ``workers`` batches are handed to Ray at a time (the rest wait here, in
    order), so ``workers`` means what it says on a bigger cluster, one worker replays
    exactly, and a batch's clock starts when it can start running. Settings travel once
    through the object store (``ray.put``) and are shared by every batch that uses them.
    Ray's own retries are off (``max_retries=0``) so that the campaign decides, and
    records, what happens to a batch whose worker died.
    """

    def __init__(self, fitness: str | FitnessFn = "proxy", *, workers: int | None = None,
                 time_limit: float = 0.0) -> None:
        # optional (the search extra); only Ray runs need it
        import ray
        self.ray = ray
        self.fitness = fitness
        self.workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.time_limit = time_limit
        self._remote = ray.remote(num_cpus=1, max_retries=0)(evaluate_batch)
        self._fitness_ref = ray.put(fitness) if callable(fitness) else fitness
        self._settings: dict[str, Any] = {}
        self._waiting: collections.deque = collections.deque()  # (key, sources, settings ref)
        self._refs: dict[Any, tuple[int, float, float]] = {}  # ref -> (key, handed to Ray at, limit)
        self._order: list[Any] = []

    def submit(self, key: int, sources: Sequence[str], settings: Mapping[str, Any],
               time_limit: float | None = None) -> None:
        """Queue a batch; ``time_limit`` (seconds, 0 = none) overrides the executor's for it."""
        import json
        skey = json.dumps(dict(settings), sort_keys=True)
        if skey not in self._settings:
            self._settings[skey] = self.ray.put(dict(settings))
        limit = self.time_limit if time_limit is None else time_limit
        self._waiting.append((key, list(sources), self._settings[skey], limit))
        self._pump()

    def _pump(self) -> None:
        while self._waiting and len(self._refs) < self.workers:
            key, sources, settings_ref, limit = self._waiting.popleft()
            ref = self._remote.remote(sources, settings_ref, self._fitness_ref)
            self._refs[ref] = (key, time.monotonic(), limit)
            self._order.append(ref)

    def in_flight(self) -> int:
        return len(self._refs) + len(self._waiting)

    def wait(self, timeout: float) -> list[Completion]:
        self._pump()
        if not self._refs:
            return []
        # return as soon as one batch is done (then take any others that are done too),
        # so a finished worker gets its next batch at once
        ready, _ = self.ray.wait(self._order, num_returns=1, timeout=timeout)
        if ready:
            ready, _ = self.ray.wait(self._order, num_returns=len(self._order), timeout=0)
        ready_set = set(ready)
        out: list[Completion] = []
        for ref in [r for r in self._order if r in ready_set]:  # in submission order
            key, _, _ = self._refs.pop(ref)
            self._order.remove(ref)
            try:
                out.append((key, self.ray.get(ref)))
            except Exception as e:  # noqa: BLE001 - worker death, cancellation, task error
                out.append((key, BatchFailure(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")))
        now = time.monotonic()
        for ref in list(self._order):
            key, started, limit = self._refs[ref]
            if limit and now - started > limit:
                self.ray.cancel(ref, force=True)
                self._refs.pop(ref)
                self._order.remove(ref)
                out.append((key, BatchFailure(f"timed out after {limit:.0f} s")))
        self._pump()
        return out

    def shutdown(self) -> None:
        self._waiting.clear()
        for ref in list(self._order):
            self.ray.cancel(ref, force=True)
        self._refs.clear()
        self._order.clear()
