"""Flat buffers: many tensors of one dtype and device viewed into one contiguous buffer.

An elementwise rule computes each element from the same element of its inputs and from
numbers shared by the whole tensor (``step``, ``lr``, hyperparameters), so applying it to
the concatenation of a list of tensors gives, element for element, what applying it to
each tensor gives. When the parameters and states of an optimizer are views of one buffer
each, a step is one backend call on one tensor (one fused loop) instead of one call per
tensor: on CPU each call of a compiled function costs ~0.1 ms of Python, which on a list
of 196 tensors was most of the step.
"""

from __future__ import annotations

import torch

from ..dsl import Program
from .plan import make_plan

#: Op kinds whose value at an element depends on nothing but that element (and on
#: per-tensor numbers, which a flat step shares): the rules made of them may run flat.
ELEMENTWISE_KINDS = ("input", "const", "operator", "elementwise")


def is_elementwise(program: Program) -> bool:
    """Whether every op the rule computes is elementwise: no reduction (``norm``, ``numel``, ...),
    no matrix built-in and no ``randn()`` (whose draws are made tensor by tensor)."""
    return all(op.kind in ELEMENTWISE_KINDS for op in make_plan(program).live_ops())


def owns_storage(t: torch.Tensor) -> bool:
    """Whether ``t`` is contiguous and spans its whole storage (so it aliases nothing else)."""
    return (t.is_contiguous() and t.numel() > 0 and t.storage_offset() == 0
            and t.untyped_storage().nbytes() == t.numel() * t.element_size())


class FlatBuffer:
    """One contiguous 1-D buffer and, in order, views of it shaped like ``like``.

    ``buffer[offset_i : offset_i + numel_i].view(like[i].shape)`` is ``views[i]``; the
    buffer starts as a copy of ``init`` (default ``like``) in ``dtype`` (default ``like``'s).
    """

    def __init__(self, like: list[torch.Tensor], dtype: torch.dtype | None = None,
                 init: list[torch.Tensor] | None = None) -> None:
        total = sum(t.numel() for t in like)
        self.buffer = torch.empty(total, dtype=dtype or like[0].dtype, device=like[0].device)
        self.views: list[torch.Tensor] = []
        offset = 0
        for t in like:
            n = t.numel()
            self.views.append(self.buffer[offset:offset + n].view(t.shape))
            offset += n
        self.gather(like if init is None else init)

    def gather(self, tensors: list[torch.Tensor]) -> None:
        """``views[i] <- tensors[i]`` for every i, in one call."""
        torch._foreach_copy_(self.views, tensors)


def adopt(params: list[torch.Tensor]) -> FlatBuffer:
    """Move ``params`` (same dtype and device, each owning its storage) into one flat buffer:
    afterwards each parameter is a view of it, with the same values, object and shape.

    ``p.data = view`` keeps the Parameter object, so modules, hooks and optimizers that hold
    it see the new storage; only code holding the old storage itself would not.
    """
    flat = FlatBuffer(params)
    for p, view in zip(params, flat.views):
        p.data = view
    return flat


__all__ = ["ELEMENTWISE_KINDS", "FlatBuffer", "adopt", "is_elementwise", "owns_storage"]
