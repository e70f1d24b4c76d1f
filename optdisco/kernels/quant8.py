"""8-bit blockwise-quantized optimizer states (dynamic quantization, as in 8-bit optimizers).

A state tensor of n float32 numbers becomes n uint8 codes plus one float32 scale per block
of :data:`QBLOCK` elements: about 1.02 bytes per element instead of 4 (3.9x less memory).
Each block is scaled by its largest magnitude (``absmax``); the scaled values in [-1, 1]
are stored as the index of the nearest entry of a 256-entry *dynamic* code book, whose
entries are spread over seven decades (1e-6 ... 1) with more resolution near each decade's
top (Dettmers et al., 2022), so small and large values in one block both keep ~2 digits.

The Triton backend reads and writes this format inside its fused kernel (dequantize on
load, re-quantize with the new block maximum on store); the eager backend through
:func:`dequantize` / :meth:`QuantizedState.assign`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..dsl import Program

QBLOCK = 256


def dynamic_codebook(max_exponent_bits: int = 7) -> torch.Tensor:
    """The 256 sorted values of the signed dynamic map (float32, from -1 to 1, with 0).

    For decade i (0 = smallest), 2**i values ``10**(i - 6) * m`` are used, where the m are the
    midpoints of ``linspace(0.1, 1, 2**i + 1)``; each with both signs; plus 0 and 1.
    """
    data: list[float] = []
    for i in range(max_exponent_bits):
        bounds = torch.linspace(0.1, 1.0, 2 ** i + 1, dtype=torch.float64)
        means = ((bounds[:-1] + bounds[1:]) / 2.0) * 10.0 ** (i - (max_exponent_bits - 1))
        data += means.tolist() + (-means).tolist()
    data += [0.0, 1.0]
    data += [0.0] * (256 - len(data))
    return torch.tensor(sorted(data), dtype=torch.float32)


CODEBOOK = dynamic_codebook()


@dataclass
class QuantizedState:
    """A state in 8-bit blockwise format: ``codes`` (uint8, shaped like the parameter) and
    ``absmax`` (float32, one per block of QBLOCK elements in flat order)."""

    codes: torch.Tensor
    absmax: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        return self.codes.shape

    @property
    def device(self) -> torch.device:
        return self.codes.device

    def numel(self) -> int:
        return self.codes.numel()

    def nbytes(self) -> int:
        """Memory held: one byte per element plus four per block."""
        return self.codes.numel() + 4 * self.absmax.numel()

    def dequantize(self) -> torch.Tensor:
        """The float32 values this state stands for."""
        return dequantize(self)

    def assign(self, x: torch.Tensor) -> None:
        """Store ``x`` (float, shaped like the state), quantized, in place."""
        q = quantize(x)
        self.codes.copy_(q.codes)
        self.absmax.copy_(q.absmax)


def zeros_like(param: torch.Tensor) -> QuantizedState:
    """An all-zero 8-bit state for ``param``."""
    n = param.numel()
    return QuantizedState(encode_zero(param),
                          torch.zeros(max(1, -(-n // QBLOCK)), dtype=torch.float32, device=param.device))


def encode_zero(param: torch.Tensor) -> torch.Tensor:
    """Codes of zero (the code book's index of 0.0) shaped like ``param``."""
    zero = int(torch.nonzero(CODEBOOK == 0.0)[0])
    return torch.full(param.shape, zero, dtype=torch.uint8, device=param.device)


def quantize(x: torch.Tensor) -> QuantizedState:
    """Blockwise absmax scaling, then the nearest code-book entry per element."""
    flat = x.detach().reshape(-1).float()
    n = flat.numel()
    nblocks = max(1, -(-n // QBLOCK))
    padded = torch.zeros(nblocks * QBLOCK, dtype=torch.float32, device=x.device)
    padded[:n] = flat
    blocks = padded.view(nblocks, QBLOCK)
    absmax = blocks.abs().amax(dim=1)
    scaled = torch.where(absmax[:, None] > 0, blocks / absmax[:, None], torch.zeros_like(blocks))
    book = CODEBOOK.to(x.device)
    idx = torch.searchsorted(book, scaled.reshape(-1).contiguous(), right=True) - 1
    idx = idx.clamp(0, 254)
    lo, hi = book[idx], book[idx + 1]
    v = scaled.reshape(-1)
    idx = torch.where((hi - v) < (v - lo), idx + 1, idx)
    return QuantizedState(idx[:n].to(torch.uint8).view(x.shape), absmax)


def dequantize(q: QuantizedState) -> torch.Tensor:
    """code book[codes] * absmax of each element's block, float32, shaped like the state."""
    flat = CODEBOOK.to(q.device)[q.codes.reshape(-1).long()]
    scale = q.absmax.repeat_interleave(QBLOCK)[:flat.numel()]
    return (flat * scale).view(q.shape)


def reject_quantized(states: list[list], backend: str) -> None:
    """Raise TypeError if any state is 8-bit: only the triton and eager backends read them."""
    if any(isinstance(x, QuantizedState) for s in states for x in s):
        raise TypeError(f"backend '{backend}' does not read 8-bit states; use backend='triton' "
                        "(GPU) or 'eager'")


def reject_matrix_states(program: Program) -> None:
    """Raise ValueError if ``program`` declares states not shaped like w: the 8-bit blockwise
    format quantizes w-shaped states only (a factor's eigenvectors and inverse roots would lose
    their orthogonality and symmetry to 8-bit codes)."""
    declared = [f"{n}: {shape}" for n, shape in program.state_shapes]
    if program.has_group_reductions and not declared:
        raise ValueError(f"state_bits=8 does not cover rules with group built-ins (group_sum, "
                         f"group_max); rule '{program.name}' calls one. Use state_bits=32 for this rule")
    if declared:
        raise ValueError(f"state_bits=8 does not cover matrix or group states; rule '{program.name}' declares "
                         f"{', '.join(declared)}. Use state_bits=32 for this rule")
