"""Triton helpers the generated kernels call: IEEE-faithful versions of a few built-ins.

They use only core ``tl`` operations (no libdevice), so the same code runs compiled on a
GPU and under ``TRITON_INTERPRET=1`` on a CPU. Imported only by generated kernel files.
"""

import triton
import triton.language as tl

NAN = tl.constexpr(float("nan"))


@triton.jit
def pow_(a, b):
    """torch.pow semantics: |a|^b = 2^(b log2|a|), signed for integer b, nan for a < 0 and
    non-integer b, 1 for b = 0 or a = 1."""
    r = tl.exp2(b * tl.log2(tl.abs(a)))
    is_int = tl.floor(b) == b
    half = b * 0.5
    odd = is_int & (tl.floor(half) != half)
    r = tl.where(a < 0.0, tl.where(is_int, tl.where(odd, -r, r), NAN), r)
    r = tl.where(b == 0.0, 1.0, r)
    r = tl.where(a == 1.0, 1.0, r)
    return r


@triton.jit
def _div64(a, b):
    """a / b (float64 division is IEEE-rounded already)."""
    return a / b


@triton.jit
def sign_(x):
    """-1, 0 or 1 by the sign of x; nan stays nan."""
    return tl.where(x > 0.0, 1.0, tl.where(x < 0.0, -1.0, x * 0.0))


@triton.jit
def tanh_(x):
    """tanh(x): (1 - e^(-2|x|)) / (1 + e^(-2|x|)) with the sign of x; a Taylor series below
    |x| = 0.1, where the difference would cancel."""
    ax = tl.abs(x)
    t = tl.exp(-2.0 * ax)
    r = (1.0 - t) / (1.0 + t)
    r = tl.where(x < 0.0, -r, r)
    x2 = x * x
    series = x * (1.0 - x2 * (1.0 / 3.0 - x2 * (2.0 / 15.0 - x2 * (17.0 / 315.0 - x2 * (62.0 / 2835.0)))))
    return tl.where(ax < 0.1, series, r)


@triton.jit
def to_bf16_rne(x):
    """float32 -> bfloat16, rounded to nearest even explicitly (the interpreter truncates)."""
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    r = bits.to(tl.float32, bitcast=True)
    return tl.where(x != x, x, r).to(tl.bfloat16)


@triton.jit
def to_bf16_stochastic(x, seed, offsets):
    """float32 -> bfloat16 rounded up with probability equal to the dropped fraction."""
    bits = x.to(tl.uint32, bitcast=True)
    noise = tl.randint(seed, offsets).to(tl.uint32) & 0xFFFF
    r = ((bits + noise) & 0xFFFF0000).to(tl.float32, bitcast=True)
    return tl.where(x != x, x, r).to(tl.bfloat16)


@triton.jit
def noise_kernel(out, seed, base, n, BLOCK: tl.constexpr):
    """The standard normals a generated kernel draws for ``randn()`` with this seed and base."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(out + offs, tl.randn(seed, (base + offs).to(tl.int32)), mask=offs < n)
