"""``backend="triton"``: the generated fused kernels (see :mod:`optdisco.kernels.triton_gen`),
launched once per pass over a whole group of parameters through a table of pointers.

Per step the host builds a small table of addresses and per-tensor scalars (step, numel)
and copies it to the device without waiting; the chunk table (which program handles which
slice of which tensor) is cached by the tensors' sizes. Hyperparameters, ``lr`` and
``step`` are data, not code, so changing them never recompiles. Reductions are finished
in torch from per-program partial sums (no atomics, no host synchronization); matrix
built-ins run in torch as batched matrix products between passes (bf16 on CUDA by default).

Triton is imported here and only here (and in the generated files).
"""

from __future__ import annotations

import math
import os

import torch

from ..dsl import Program
from ..dsl.interpreter import newton_schulz
from .codecache import load_source
from .errors import BackendUnavailable
from .plan import make_plan
from .precision import compute_dtype
from .quant8 import CODEBOOK, QBLOCK, QuantizedState
from .triton_gen import ROW_NUMEL, ROW_STEP, Layout, generate

_SUPPORTED = {torch.float32: "float32", torch.float64: "float64", torch.bfloat16: "bfloat16",
              torch.float16: "float16"}
SEED_RANGE = 2**31 - 2**20  # seeds + draw indices stay below 2**31


def interpret_mode() -> bool:
    """Whether Triton runs in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def check_available(device: torch.device | str) -> None:
    """Raise :class:`BackendUnavailable` (saying why and what to use) unless Triton can run here."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendUnavailable("backend 'triton' needs a CUDA device, and torch sees none; "
                                     "use backend='compile' or 'foreach' on CPU")
    elif device.type == "cpu":
        if not interpret_mode():
            raise BackendUnavailable(
                "backend 'triton' runs on CUDA devices; for CPU tensors set TRITON_INTERPRET=1 "
                "before importing triton (slow, for testing), or use backend='compile' or 'foreach'")
    else:
        raise BackendUnavailable(f"backend 'triton' does not support device type '{device.type}'; "
                                 "use backend='eager'")
    try:
        import triton  # noqa: F401
    except ImportError as e:
        raise BackendUnavailable(f"backend 'triton' needs the triton package ({e}); "
                                 "install triton or use backend='compile' or 'foreach'") from None


class TritonBackend:
    """Fused Triton kernels for one program (see the module docstring).

    ``block``: elements per program (default 4096 on CUDA, 64 in interpret mode; at least
    256 for groups with 8-bit states, see :mod:`optdisco.kernels.quant8`);
    ``stochastic_rounding``: round bf16 parameter writes stochastically instead of to
    nearest even; ``matrix_dtype``: dtype of the Newton-Schulz products (bf16 on CUDA).
    Set ``poison = True`` to fill every scratch buffer with nan before use (for tests).
    """

    name = "triton"

    def __init__(self, program: Program, device: torch.device | str = "cuda", *,
                 block: int | None = None, stochastic_rounding: bool = False,
                 matrix_dtype: torch.dtype | None = None, num_warps: int | None = None) -> None:
        self.program = program
        self.device = torch.device(device)
        self.plan = make_plan(program)
        self.layout = Layout(self.plan)
        on_gpu = self.device.type == "cuda"
        self.block = block or (4096 if on_gpu else 64)
        self.num_warps = num_warps or (8 if self.block >= 2048 else 4)
        self.stochastic_rounding = stochastic_rounding
        self.matrix_dtype = matrix_dtype or (torch.bfloat16 if on_gpu else None)
        self.poison = False
        self.last_seeds: list[int] = []
        self._modules: dict[tuple, object] = {}
        self._chunks: dict[tuple, tuple] = {}
        self._codebook: torch.Tensor | None = None
        self.alignment_hints = True

    # -- code -------------------------------------------------------------------
    def source(self, w_dtype=torch.float32, g_dtype=None, state_dtype=None,
               quantized: tuple[str, ...] = (), aligned: bool = False) -> str:
        """The generated kernel source for these dtypes and 8-bit states (written to the cache dir)."""
        g_dtype = g_dtype or w_dtype
        state_dtype = state_dtype or (torch.float32 if w_dtype in (torch.bfloat16, torch.float16) else w_dtype)
        return generate(self.plan, w_dtype=_SUPPORTED[w_dtype], g_dtype=_SUPPORTED[g_dtype],
                        compute_dtype=_SUPPORTED[state_dtype],
                        stochastic_rounding=self.stochastic_rounding and w_dtype == torch.bfloat16,
                        quantized=quantized, aligned=aligned)

    def _module(self, w_dtype, g_dtype, cdt, quantized, aligned):
        key = (w_dtype, g_dtype, cdt, quantized, aligned)
        if key not in self._modules:
            self._modules[key] = load_source("triton", self.source(w_dtype, g_dtype, cdt, quantized, aligned))
        return self._modules[key]

    # -- tables -----------------------------------------------------------------
    def _chunk_table(self, numels: tuple[int, ...], block: int):
        """(chunks [C, 4] int64, tensor index per chunk, bases, total, number of full chunks)
        for these sizes (cached)."""
        hit = self._chunks.get((numels, block))
        if hit is None:
            counts = torch.tensor([math.ceil(n / block) for n in numels], dtype=torch.int64)
            sizes = torch.tensor(numels, dtype=torch.int64)
            bases = torch.cumsum(sizes, 0) - sizes
            tensor = torch.repeat_interleave(torch.arange(len(numels)), counts)
            first = torch.cumsum(counts, 0) - counts
            start = (torch.arange(len(tensor)) - first[tensor]) * block
            # Full chunks first (launched without a mask), then each tensor's partial last chunk.
            order = torch.argsort((start + block > sizes[tensor]).to(torch.int8), stable=True)
            tensor, start = tensor[order], start[order]
            n_full = int((start + block <= sizes[tensor]).sum())
            chunks = torch.stack([tensor, start, sizes[tensor], bases[tensor]], 1).contiguous()
            hit = (chunks.to(self.device), tensor.to(self.device), bases.tolist(), int(sizes.sum()), n_full)
            self._chunks[(numels, block)] = hit
        return hit

    def _empty(self, n: int, dtype) -> torch.Tensor:
        if self.poison:
            return torch.full((max(n, 1),), float("nan"), dtype=dtype, device=self.device)
        return torch.empty(max(n, 1), dtype=dtype, device=self.device)

    # -- step -------------------------------------------------------------------
    def step(self, params, grads, states, *, steps, lr, hyperparameters, generator=None) -> None:
        """In place: every parameter and state of the group updated by the fused kernels."""
        hyper = self.program.hyperparameter_defaults
        hyper.update(hyperparameters)
        groups: dict[tuple, list[int]] = {}
        for i, (w, g) in enumerate(zip(params, grads)):
            if w.dtype not in _SUPPORTED or g.dtype not in _SUPPORTED:
                raise TypeError(f"backend 'triton' supports float32/64, bf16 and fp16 tensors, "
                                f"not {w.dtype}/{g.dtype}; use backend='eager'")
            if w.numel():
                quantized = tuple(n for n, x in zip(self.program.state_names, states[i])
                                  if isinstance(x, QuantizedState))
                groups.setdefault((w.dtype, g.dtype, compute_dtype(w), quantized), []).append(i)
        self.last_seeds = []
        for (wdt, gdt, cdt, quantized), idx in groups.items():
            seed = int(torch.randint(0, SEED_RANGE, (1,), generator=generator,
                                     device=generator.device if generator is not None else "cpu"))
            self.last_seeds.append(seed)
            self._run([params[i] for i in idx], [grads[i] for i in idx], [states[i] for i in idx],
                      [steps[i] for i in idx], lr, hyper, seed, wdt, gdt, cdt, quantized)

    def _run(self, params, grads, states, steps, lr, hyper, seed, wdt, gdt, cdt, quantized) -> None:
        lay, plan = Layout(self.plan, quantized), self.plan
        block = max(self.block, QBLOCK) if quantized else self.block
        for s in states:
            for x in s:
                if not isinstance(x, QuantizedState) and x.dtype != cdt:
                    raise TypeError(f"backend 'triton' needs {cdt} states for {wdt} parameters, got {x.dtype}")
        # Kernels address memory directly: work on contiguous tensors, copy back if needed.
        work_p = [w if w.is_contiguous() else w.contiguous() for w in params]
        work_s = [[x if isinstance(x, QuantizedState) or x.is_contiguous() else x.contiguous() for x in s]
                  for s in states]
        grads = [g.contiguous() for g in grads]
        numels = tuple(w.numel() for w in params)
        chunks, chunk_tensor, bases, total, n_full = self._chunk_table(numels, block)
        n_chunks = chunks.shape[0]
        ptr_rows = [[w.data_ptr(), g.data_ptr(),
                     *[x.codes.data_ptr() if isinstance(x, QuantizedState) else x.data_ptr() for x in s],
                     *[x.absmax.data_ptr() for x in s if isinstance(x, QuantizedState)]]
                    for w, g, s in zip(work_p, grads, work_s)]
        host = torch.tensor(ptr_rows, dtype=torch.int64)
        # Alignment hints only where they hold, and only if this triton accepts them.
        aligned = self.alignment_hints and bool(torch.all(host % 16 == 0)) and block % 16 == 0
        mod = self._module(wdt, gdt, cdt, quantized, aligned)
        n_hyper = len(lay.hyper_slots)
        rows = torch.full((len(params), lay.row_len), float("nan") if self.poison else 0.0, dtype=cdt)
        rows[:, ROW_STEP] = torch.tensor([float(t) for t in steps], dtype=cdt)
        rows[:, ROW_NUMEL] = torch.tensor(numels, dtype=cdt)
        scal_host = torch.cat([torch.tensor([float(lr)] + [float(hyper[n]) for n in lay.hyper_slots if n != "lr"],
                                            dtype=cdt), rows.reshape(-1)])
        on_gpu = self.device.type == "cuda"
        if on_gpu:
            host, scal_host = host.pin_memory(), scal_host.pin_memory()
        ptrs = host.to(self.device, non_blocking=True)
        scal = scal_host.to(self.device, non_blocking=True)
        table = scal[n_hyper:].view(len(params), lay.row_len)
        scratch = []
        for _ in lay.matrix_ops:
            scratch += [self._empty(total, cdt), self._empty(total, cdt)]
        if self._codebook is None:
            self._codebook = CODEBOOK.to(self.device)
        meta = dict(N_PTR=host.shape[1], N_HYPER=n_hyper, ROW=lay.row_len, BLOCK=block, QB=QBLOCK,
                    num_warps=self.num_warps)
        numel_col = table[:, ROW_NUMEL]
        for level in range(1, lay.levels + 1):
            barriers = plan.barriers(level)
            reds = [op for op in barriers if op.kind == "reduction"]
            partials = self._empty(n_chunks * max(len(reds), 1), cdt)
            mod = self._launch(mod, f"pass_{level}", n_chunks, (ptrs, chunks, scal, partials, *scratch,
                               self._codebook, seed), dict(N_PART=max(len(reds), 1), **meta),
                               (wdt, gdt, cdt, quantized), aligned, n_full)
            if reds:
                sums = torch.zeros(len(params), len(reds), dtype=cdt, device=self.device)
                sums.index_add_(0, chunk_tensor, partials.view(n_chunks, len(reds)))
                for k, op in enumerate(reds):
                    s = sums[:, k]
                    value = {"norm": lambda s: torch.sqrt(s), "rms": lambda s: torch.sqrt(s / numel_col),
                             "mean": lambda s: s / numel_col, "sum": lambda s: s}[op.fn](s)
                    table[:, lay.red_cols[op.id]] = value
            for op in barriers:
                if op.kind == "matrix":
                    j = lay.matrix_ops.index(op.id)
                    self._matrix(op.fn, scratch[2 * j], scratch[2 * j + 1], params, bases)
        self._launch(mod, "final", n_chunks, (ptrs, chunks, scal, self._empty(1, cdt), *scratch,
                     self._codebook, seed), dict(N_PART=1, **meta), (wdt, gdt, cdt, quantized), aligned,
                     n_full)
        for w, wp in zip(params, work_p):
            if wp is not w:
                w.copy_(wp)
        for s, sw in zip(states, work_s):
            for x, xw in zip(s, sw):
                if xw is not x and not isinstance(x, QuantizedState):
                    x.copy_(xw)

    def _launch(self, mod, kernel: str, n_chunks: int, args: tuple, meta: dict, key: tuple,
                aligned: bool, n_full: int):
        """Launch ``mod.kernel`` over the full chunks (no mask), then over the partial ones.

        If this triton rejects the alignment hints when compiling (before anything runs),
        turn them off for good and launch the plain kernels instead. Returns the module used.
        """
        try:
            self._launch_split(getattr(mod, kernel), n_chunks, args, meta, n_full)
            return mod
        except Exception as e:
            aligned = aligned and self.alignment_hints
            if not aligned or interpret_mode():
                raise
            import warnings
            warnings.warn(f"optdisco: Triton rejected alignment hints ({type(e).__name__}: "
                          f"{str(e)[:200]}); using kernels without them", stacklevel=2)
            self.alignment_hints = False
            plain = self._module(*key, False)
            self._launch_split(getattr(plain, kernel), n_chunks, args, meta, n_full)
            return plain

    @staticmethod
    def _launch_split(fn, n_chunks: int, args: tuple, meta: dict, n_full: int) -> None:
        ptrs, chunks, scal, partials, *rest = args
        if n_full:
            fn[(n_full,)](ptrs, chunks, scal, partials, *rest, MASKED=False, **meta)
        if n_chunks > n_full:  # program ids restart at 0: offset the chunk and partials tables
            fn[(n_chunks - n_full,)](ptrs, chunks[n_full:], scal, partials[n_full * meta["N_PART"]:]
                                     if partials.numel() >= n_chunks * meta["N_PART"] else partials, *rest, MASKED=True, **meta)

    def _matrix(self, fn: str, arg: torch.Tensor, res: torch.Tensor, params, bases) -> None:
        """res <- fn(arg) per tensor, on matrix views, batched over equal shapes."""
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i, w in enumerate(params):
            rows = w.shape[0] if w.dim() >= 2 else 1
            by_shape.setdefault((rows, w.numel() // rows), []).append(i)
        for (r, c), idx in by_shape.items():
            xs = torch.stack([arg[bases[i]:bases[i] + r * c].view(r, c) for i in idx])
            if fn == "orthogonalize":
                dt = self.matrix_dtype or xs.dtype
                out = newton_schulz(xs.to(dt)).to(xs.dtype)
            elif fn == "row_mean":
                out = xs.mean(dim=-1, keepdim=True).expand_as(xs)
            elif fn == "col_mean":
                out = xs.mean(dim=-2, keepdim=True).expand_as(xs)
            else:  # pragma: no cover - the builtins table has no other matrix kind
                raise NotImplementedError(fn)
            for b, i in enumerate(idx):
                res[bases[i]:bases[i] + r * c].view(r, c).copy_(out[b])

    # -- reproducing the noise ----------------------------------------------------
    def reference_noise(self, params: list[torch.Tensor], seed: int) -> list[list[torch.Tensor]]:
        """The ``randn()`` draws a step with ``seed`` used: ``[tensor][draw]``, float32, like w."""
        from .triton_lib import noise_kernel
        out, base = [], 0
        for w in params:
            draws = []
            for k in range(self.plan.n_draws):
                buf = torch.empty(max(w.numel(), 1), dtype=torch.float32, device=w.device)
                noise_kernel[(math.ceil(max(w.numel(), 1) / 256),)](buf, seed + k, base, w.numel(), BLOCK=256)
                draws.append(buf[:w.numel()].view(w.shape))
            out.append(draws)
            base += w.numel()
        return out
