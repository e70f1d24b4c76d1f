"""Differential tests: every backend against the interpreter, on fresh inputs each step.

The fast paths run in float64 (tight tolerance: same arithmetic, different order); the
Triton kernels run the catalog in float32 (and bf16 parameters) and the random programs in
float64. Scratch buffers are poisoned with nan before every Triton run.
"""

import random

import pytest
import torch

import optdisco
from optdisco import catalog
from optdisco.dsl.generate import random_program
from optdisco.kernels.compiled import CompiledBackend
from optdisco.kernels.foreach import ForeachBackend

from .helpers import check_backend, queue
from .rules import RULES

# rules with matrix states run on the eager backend only (tests/discovered/test_reference_matrix.py)
PROGRAMS = {**{n: catalog.get(n) for n in catalog.names() if not catalog.get(n).has_matrix_states},
            **{f"test:{n}": optdisco.parse(t) for n, t in RULES.items()}}
RANDOM_FAST = [random_program(random.Random(s), allow_noise=True, name=f"random{s}")
               for s in range(300)]
RANDOM_TRITON = RANDOM_FAST[:40]


def make(kind: str, program, device="cpu"):
    if kind == "foreach":
        return ForeachBackend(program)
    if kind == "torchgen":  # the code torch.compile fuses, run eagerly (compiling is slow)
        return CompiledBackend(program, compile=False)
    from optdisco.kernels.triton_backend import TritonBackend
    b = TritonBackend(program, device)
    b.poison = True
    return b


def triton_noise(backend):
    def noise_for(k, params):
        draws = backend.reference_noise(params, backend.last_seeds[0])
        return lambda i: queue(draws[i])
    return noise_for


@pytest.mark.parametrize("kind", ["foreach", "torchgen"])
@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_fast_paths_match_interpreter_on_rules(kind, name):
    p = PROGRAMS[name]
    b = make(kind, p)
    check_backend(b, p, n_steps=2)
    check_backend(b, p, n_steps=1, dtype=torch.float32, rtol=1e-5, atol=1e-6, seed=7)


@pytest.mark.parametrize("kind", ["foreach", "torchgen"])
def test_fast_paths_match_interpreter_on_random_programs(kind):
    for p in RANDOM_FAST:
        check_backend(make(kind, p), p, n_steps=2, rtol=1e-7, atol=1e-9,
                      shapes=[(4, 3), (5,), ()])


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_foreach_with_one_step_for_all_tensors_matches_interpreter(name):
    """Tensors of one step take the form with the per-tensor numbers as Python floats."""
    p = PROGRAMS[name]
    b = make("foreach", p)
    assert (b.uniform_fn is not None) == (not any(op.kind == "reduction" for op in b.plan.live_ops()))
    check_backend(b, p, n_steps=2, same_step=True)
    check_backend(b, p, n_steps=1, dtype=torch.float32, rtol=1e-5, atol=1e-6, seed=7, same_step=True)


def test_foreach_with_one_step_matches_interpreter_on_random_programs():
    for p in RANDOM_FAST[::2]:
        check_backend(make("foreach", p), p, n_steps=2, rtol=1e-7, atol=1e-9,
                      shapes=[(4, 3), (5,), ()], same_step=True)


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_triton_matches_interpreter_on_rules(name, device):
    p = PROGRAMS[name]
    b = make("triton", p, device)
    if device == "cuda":
        b.matrix_dtype = torch.float32
    # On a GPU exp, log and rsqrt are a few ulp off torch's: a looser tolerance there.
    tol = 2e-5 if device == "cpu" else 1e-4
    check_backend(b, p, n_steps=2, dtype=torch.float32, rtol=tol, atol=tol / 10,
                  noise_for=triton_noise(b), device=device)


@pytest.mark.parametrize("name", ["adamw", "lion", "test:lamb", "test:muon"])
def test_triton_bf16_params_float32_states(name, device):
    p = PROGRAMS[name]
    b = make("triton", p, device)
    if device == "cuda":
        b.matrix_dtype = torch.float32
    # Rounding w to bf16 (nearest even) may differ by one bf16 ulp where the float32 value
    # sits on a rounding boundary; states stay float32.
    check_backend(b, p, n_steps=2, dtype=torch.bfloat16, state_dtype=torch.float32,
                  rtol=8e-3, atol=1e-5, noise_for=triton_noise(b), device=device)


def test_triton_matches_interpreter_on_random_programs(device):
    for p in RANDOM_TRITON:
        b = make("triton", p, device)
        if device == "cuda":
            b.matrix_dtype = torch.float64
        check_backend(b, p, n_steps=2, rtol=1e-7, atol=1e-9, shapes=[(4, 3), (5,), ()],
                      noise_for=triton_noise(b), device=device)


def _counted(backend, attr):
    """Count the calls of ``backend.<attr>`` (which still runs): proof that a path was taken."""
    calls = []
    fn = getattr(backend, attr)

    def counted(*args, **kwargs):
        calls.append(1)
        return fn(*args, **kwargs)
    setattr(backend, attr, counted)
    return calls


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_foreach_on_one_tensor_matches_interpreter(name):
    """A list of one tensor (an optimizer's flat buffer) runs the eager per-tensor code on
    float scalars, new states written into the states where they may be."""
    p = PROGRAMS[name]
    b = make("foreach", p)
    calls = _counted(b, "single_fn")
    for shape in [(7, 5), (13,)]:
        check_backend(b, p, n_steps=2, same_step=True, shapes=[shape])
        # float32: where 1 - prod cancels (nadam), the float32 interpreter itself is ~1e-5 off
        # float64, and so is every float32 path, each in its own way
        check_backend(b, p, n_steps=1, dtype=torch.float32, rtol=1e-4, atol=1e-5, seed=7, same_step=True,
                      shapes=[shape])
    assert len(calls) == (6 if b.uniform_fn is not None else 0)


def test_foreach_on_one_tensor_matches_interpreter_on_random_programs():
    for p in RANDOM_FAST[1::3]:
        check_backend(make("foreach", p), p, n_steps=2, rtol=1e-7, atol=1e-9, shapes=[(4, 3)], same_step=True)


@pytest.mark.parametrize("name", ["adamw", "lion", "adan", "test:exotic", "test:edge", "test:swap"])
def test_compiled_code_on_one_tensor_matches_interpreter(name):
    """After its first call, a one-tensor step computes its scalars as floats (one tensor call)."""
    p = PROGRAMS[name]
    b = make("torchgen", p)
    calls = _counted(b, "scalars_float_fn")
    check_backend(b, p, n_steps=3, same_step=True, shapes=[(7, 5)])
    assert len(calls) == 2
