"""8-bit blockwise states: the format, and the fused kernel against the eager path."""

import pytest
import torch

from optdisco import catalog
from optdisco.kernels import get_backend
from optdisco.kernels.quant8 import CODEBOOK, QBLOCK, dequantize, quantize, zeros_like


def test_codebook_is_sorted_signed_and_dynamic():
    assert CODEBOOK.numel() == 256 and torch.all(CODEBOOK[1:] > CODEBOOK[:-1])
    assert CODEBOOK.max() == 1.0 and (CODEBOOK == 0).sum() == 1
    assert CODEBOOK[CODEBOOK > 0].min() < 1e-6  # seven decades of range


def test_quantize_error_is_small_relative_to_block_max_and_memory_is_4x_less():
    torch.manual_seed(0)
    x = torch.randn(10 * QBLOCK + 17) * torch.logspace(-3, 0, 10 * QBLOCK + 17)
    q = quantize(x)
    err = (dequantize(q) - x).abs()
    block_max = x.abs().view(-1)[: 10 * QBLOCK].view(10, QBLOCK).amax(1).repeat_interleave(QBLOCK)
    assert torch.all(err[: 10 * QBLOCK] <= 0.01 * block_max + 1e-12)
    assert x.numel() * 4 / q.nbytes() > 3.9
    assert torch.equal(dequantize(zeros_like(x)), torch.zeros_like(x))


@pytest.mark.parametrize("rule", ["adamw", "lion", "lamb"])
def test_triton_8bit_states_match_eager_8bit(rule, device):
    from optdisco.kernels.triton_backend import TritonBackend
    p = catalog.get(rule)
    torch.manual_seed(1)
    shapes = [(300,), (7, 90), ()]
    w = [torch.randn(s) for s in shapes]
    g = [torch.randn(s) for s in shapes]
    init = [[torch.rand(s) * 0.1 for _ in p.state_names] for s in shapes]
    tw = [x.clone().to(device) for x in w]
    ts = [[quantize(x.to(device)) for x in s] for s in init]
    ew = [x.clone() for x in w]
    es = [[quantize(x) for x in s] for s in init]
    tb = TritonBackend(p, device)
    tb.poison = True
    for step in (1.0, 2.0):
        tb.step(tw, [x.to(device) for x in g], ts, steps=[step] * 3, lr=0.01, hyperparameters={})
        get_backend(p, "eager").step(ew, g, es, steps=[step] * 3, lr=0.01, hyperparameters={})
    for a, b in zip(tw, ew):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-5, atol=1e-6)
    for sa, sb in zip(ts, es):
        for qa, qb in zip(sa, sb):
            torch.testing.assert_close(qa.absmax.cpu(), qb.absmax, rtol=1e-5, atol=1e-7)
            # a value on the midpoint between two codes may round either way
            assert (qa.codes.cpu() != qb.codes).float().mean() < 0.01


def test_fast_paths_refuse_8bit_states():
    p = catalog.get("lion")
    w = torch.zeros(4)
    with pytest.raises(TypeError, match="8-bit"):
        get_backend(p, "foreach").step([w], [w], [[zeros_like(w)]], steps=[1.0], lr=0.1,
                                       hyperparameters={})
