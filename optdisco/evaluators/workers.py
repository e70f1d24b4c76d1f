"""Worker processes for :func:`optdisco.evaluators.train.train` on more than one core.

Python threads cannot run several rules' updates at once (each update is hundreds of
4–10 µs torch calls, and every hand-off of the GIL costs a thread wake-up: two threads
reach 1.2–1.4x), so ``train(threads=N)`` sends all but one group of programs to N - 1
worker processes and trains the last group itself. Workers are spawned, never forked (the
parent holds OpenMP threads, and inside Ray, Ray's), once per process and reused; each
runs torch on one thread, so its numbers are bit for bit those of training in-process.
A worker gets the task by name (several tasks hold lambdas and cannot be pickled), so
only registered tasks go to workers (:func:`task_ref` is None for the others).
"""

from __future__ import annotations

import dataclasses

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Sequence

import torch

_POOL: ProcessPoolExecutor | None = None
_POOL_SIZE = 0


def _start_worker() -> None:
    torch.set_num_threads(1)


def pool(size: int) -> ProcessPoolExecutor:
    """The shared pool of ``size`` spawned workers (started on first use, ~3 s)."""
    global _POOL, _POOL_SIZE
    if _POOL is None or _POOL_SIZE != size:
        reset()
        _POOL = ProcessPoolExecutor(size, mp_context=multiprocessing.get_context("spawn"),
                                    initializer=_start_worker)
        _POOL_SIZE = size
    return _POOL


def reset() -> None:
    """Forget a pool whose worker died (the next call starts a fresh one)."""
    global _POOL, _POOL_SIZE
    if _POOL is not None:
        _POOL.shutdown(wait=False, cancel_futures=True)
    _POOL, _POOL_SIZE = None, 0


def task_ref(task) -> tuple[str, str, str] | None:
    """(name, scale, device) that rebuild ``task`` in a worker, or None if none does."""
    from .tasks import get_task
    # the worker re-applies the gradients and the batch-size control
    key = dataclasses.replace(task, gradients="backprop", batch_schedule="fixed").key
    for scale in ("cpu", "gpu"):
        try:
            if get_task(task.name, scale, task.device).key == key:
                return task.name, scale, task.device
        except (KeyError, ValueError):
            return None
    return None


def submit(size: int, fn: Callable[..., Any], ref: tuple[str, str, str], programs: Sequence[Any],
           runs: Sequence[Any], kwargs: dict):
    """``fn(ref, programs, runs, kwargs)`` queued on the pool (restarted once if a worker had died).

    ``fn`` is :func:`optdisco.evaluators.train.train_in_worker`; the caller passes it so that
    this module does not import the trainer that imports it.
    """
    try:
        return pool(size).submit(fn, ref, programs, runs, kwargs)
    except BrokenProcessPool:
        reset()
        return pool(size).submit(fn, ref, programs, runs, kwargs)


__all__ = ["BrokenProcessPool", "pool", "reset", "submit", "task_ref"]
