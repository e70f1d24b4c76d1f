"""Triton helpers the generated kernels call: IEEE-faithful versions of a few built-ins.

They use only core ``tl`` operations (no libdevice), so the same code runs compiled on a
GPU and under ``TRITON_INTERPRET=1`` on a CPU. Imported only by generated kernel files.
"""

import triton
import triton.language as tl

@triton.jit
def pow_(a, b):
    """torch.pow semantics: |a|^b = 2^(b log2|a|), signed for integer b, nan for a < 0 and
    non-integer b, 1 for b = 0 or a = 1."""
    r = tl.exp2(b * tl.log2(tl.abs(a)))
    is_int = tl.floor(b) == b
    half = b * 0.5
    odd = is_int & (tl.floor(half) != half)
    nan = tl.sqrt(r * 0.0 - 1.0)  # not a global: Triton compares globals by value, and nan != nan
    r = tl.where(a < 0.0, tl.where(is_int, tl.where(odd, -r, r), nan), r)
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


@triton.jit
def dequantize8(p_codes, p_absmax, offs, mask, codebook, QB: tl.constexpr):
    """8-bit state -> float32: code book[code] * absmax of the element's block."""
    codes = tl.load(p_codes + offs, mask=mask, other=0).to(tl.int32)
    return tl.load(codebook + codes) * tl.load(p_absmax + offs // QB, mask=mask, other=0.0)


@triton.jit
def store_quantized8(x, p_codes, p_absmax, start, offs, mask, n, codebook,
                     BLOCK: tl.constexpr, QB: tl.constexpr):
    """Store x in 8-bit blockwise format: the new absmax of each block, then per element the
    index of the nearest code-book entry to x / absmax (binary search, then nearer neighbour)."""
    x = tl.where(mask, x, 0.0).to(tl.float32)
    amax = tl.max(tl.reshape(tl.abs(x), [BLOCK // QB, QB]), axis=1)
    blk = start // QB + tl.arange(0, BLOCK // QB)
    tl.store(p_absmax + blk, amax, mask=blk * QB < n)
    scale = tl.reshape(tl.broadcast_to(amax[:, None], [BLOCK // QB, QB]), [BLOCK])
    v = tl.where(scale > 0.0, x / scale, 0.0)
    idx = (v * 0.0).to(tl.int32)
    for k in tl.static_range(8):
        cand = idx + (128 >> k)
        ok = (cand <= 255) & (tl.load(codebook + tl.minimum(cand, 255)) <= v)
        idx = tl.where(ok, cand, idx)
    hi = tl.minimum(idx + 1, 255)
    idx = tl.where(tl.load(codebook + hi) - v < v - tl.load(codebook + idx), hi, idx)
    tl.store(p_codes + offs, idx.to(tl.uint8), mask=mask)
