"""Dtype policy shared by the backends: 16-bit parameters are computed in float32."""

from __future__ import annotations

import torch

LOW_PRECISION = (torch.float16, torch.bfloat16)


def compute_dtype(param: torch.Tensor) -> torch.dtype:
    """The dtype a rule is computed in for ``param``: float32 for 16-bit floats, else its own."""
    return torch.float32 if param.dtype in LOW_PRECISION else param.dtype
