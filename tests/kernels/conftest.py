"""Kernel tests run Triton in its CPU interpreter unless a CUDA device is present.

TRITON_INTERPRET must be set before any kernel is defined, so it is set here, when pytest
collects this directory (before any test imports triton through optdisco.kernels).
"""

import os
import warnings

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def device() -> str:
    """Where the Triton tests run: the GPU when there is one, else CPU tensors (interpreted)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _quiet_masked_lanes():
    # Interpreted kernels compute masked-off lanes too (log(0), 1/0): numpy warns, harmlessly.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        yield
