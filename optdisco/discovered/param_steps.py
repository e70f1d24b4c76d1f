"""The per-parameter bookkeeping every optdisco optimizer's ``step`` shares.

:func:`due_parameters` walks a param group: it skips parameters without a gradient, refuses
sparse gradients and complex parameters with one message, creates a parameter's state on
first use (``state["step"] = 0`` plus the optimizer's own tensors), advances ``state["step"]``
by one, and yields ``(parameter, state, step)``. :class:`DeviceLists` gathers what a kernel
backend's ``step(params, grads, states, steps=...)`` takes, one list set per device.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

import torch


def due_parameters(params: Iterable[torch.Tensor], state: Any, who: str,
                   init: Callable[[torch.Tensor], dict[str, torch.Tensor]]
                   ) -> Iterator[tuple[torch.Tensor, dict, int]]:
    """``(p, state[p], t)`` for each ``p`` with a gradient, t its step count after this step
    (1 on the first); ``init(p)`` gives a new state's tensors. ``who`` names the optimizer in
    the errors for sparse gradients and complex parameters."""
    for p in params:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise RuntimeError(f"{who} does not support sparse gradients; use a dense embedding or "
                               "torch.optim.SparseAdam for it")
        if p.is_complex():
            raise RuntimeError(f"{who} does not support complex parameters; optimize torch.view_as_real(p) instead")
        st = state[p]
        if not st:
            st["step"] = torch.tensor(0.0)
            st.update(init(p))
        st["step"] += 1
        yield p, st, int(st["step"])


class DeviceLists:
    """Parameters, gradients, state lists and step counts grouped by device, in the order added."""

    def __init__(self) -> None:
        self.by_device: dict[str, tuple[list, list, list, list]] = {}

    def add(self, p: torch.Tensor, states: list[torch.Tensor], step: int) -> None:
        """Queue ``p`` (with ``p.grad``) and its state tensors for the backend step."""
        lists = self.by_device.setdefault(str(p.device), ([], [], [], []))
        lists[0].append(p)
        lists[1].append(p.grad)
        lists[2].append(states)
        lists[3].append(float(step))

    def groups(self) -> Iterator[tuple[list, list, list, list]]:
        """``(params, grads, states, steps)`` per device."""
        yield from self.by_device.values()
