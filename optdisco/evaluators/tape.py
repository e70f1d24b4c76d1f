"""A rule compiled once into Python code that updates rows of the trainer's flat buffer.

Batched training keeps every run's parameters as one row of a flat ``(rows, N)`` buffer
(the task's tensors side by side, see :func:`optdisco.evaluators.train.train`). The
reference interpreter walks the expression trees on every call, converts every literal
and hyperparameter to a tensor each time, and must be called tensor by tensor for rules
with reductions or matrix built-ins. Over thousands of steps x dozens of rules that
overhead dominates training. A :class:`FlatTape` instead:

* resolves the program into its expression DAG (:meth:`Program.outputs`) and writes one
  line of straight-line torch code per distinct node (exactly the interpreter's
  expressions, :data:`optdisco.dsl.interpreter.TORCH_IMPL`: on the catalog's rules the
  results agree bit for bit, in general to the last bits, since torch's vectorized and
  scalar kernels, taken for contiguous and strided operands, may round ``pow`` or ``exp``
  differently);
* folds the step-independent scalar nodes (``1 - beta1``) once per dtype and device;
* runs elementwise nodes once over the whole flat row, and per-tensor built-ins on the
  layout's segments: a reduction gives a ``(rows, T)`` tensor (one value per run and
  tensor), which is widened to ``(rows, N)`` (``index_select``) only where it meets a
  full-width value; a matrix built-in runs per tensor on its shaped view.

Each node has a static kind (0-d scalar, per-run ``(rows, 1)``, per-tensor ``(rows, T)``
or full ``(rows, N)``), so the widening is decided when the code is written, not per call.
Rules that call ``randn()`` are not taped (merging equal subexpressions would merge
distinct draws): :func:`make_step` gives them :class:`ReferenceStep`, the interpreter
applied tensor by tensor.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from ..dsl import Program, run as reference_run
from ..dsl.builtins import BUILTINS, kind_of
from ..dsl.interpreter import TORCH_IMPL, _Context, run_group
from ..dsl.ir import Call, Const, Expr, Name
from ..dsl.shapes import storage_shape
from ..kernels.torchgen import TORCH_EXPR  # elementwise built-ins written as the interpreter computes them

#: (offset, size, shape) of each tensor in a flat row.
Layout = Sequence[tuple[int, int, tuple[int, ...]]]

SCALAR, ROW, SEGMENT, FULL = range(4)  # node kinds, ordered by how far they broadcast

#: Reductions over each tensor's segment of a full-width value: (squared first?, torch reduction).
REDUCTION = {"norm": (True, "sum"), "rms": (True, "mean"), "mean": (False, "mean"), "sum": (False, "sum")}


def needs_per_tensor(program: Program) -> bool:
    """Whether the rule reads whole-tensor structure (reductions, matrix built-ins)."""
    exprs = [a.expr for a in program.body] + [program.update]
    return any(isinstance(n, Call) and n.fn in BUILTINS and kind_of(n.fn) in ("reduction", "matrix")
               for e in exprs for n in e.walk())


class Segments:
    """Per-tensor operations on ``(rows, N)`` values laid out as ``layout`` says."""

    def __init__(self, layout: Layout) -> None:
        self.layout = [(o, n, tuple(shape)) for o, n, shape in layout]
        self.width = sum(n for _, n, _ in self.layout)
        self._index: dict[torch.device, torch.Tensor] = {}  # column -> its tensor
        self._numel: dict[tuple, torch.Tensor] = {}

    def widen(self, x: torch.Tensor) -> torch.Tensor:
        """``(rows, T)`` per-tensor values repeated over each tensor's columns: ``(rows, N)``."""
        index = self._index.get(x.device)
        if index is None:
            counts = torch.tensor([n for _, n, _ in self.layout], device=x.device)
            index = self._index[x.device] = torch.repeat_interleave(
                torch.arange(len(self.layout), device=x.device), counts)
        return torch.index_select(x, 1, index)

    def reduce(self, how: str, x: torch.Tensor) -> torch.Tensor:
        """``torch.sum`` or ``torch.mean`` of each tensor's columns: ``(rows, T)``.

        Each reduction runs on a contiguous copy of the tensor's shaped view, over its
        dimensions, as the interpreter calls it on a tensor of its own: torch's summation
        order depends on the shape and strides it is given (and, for a strided slice, on the
        number of rows)."""
        fn, rows = getattr(torch, how), x.shape[0]
        return torch.stack([fn(x[:, o:o + n].reshape(rows, *shape).contiguous(), dim=tuple(range(1, 1 + len(shape))))
                            if shape else x[:, o] for o, n, shape in self.layout], dim=1)

    def numel(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Each tensor's element count, ``(1, T)``."""
        key = (dtype, device)
        if key not in self._numel:
            self._numel[key] = torch.tensor([[float(n) for _, n, _ in self.layout]], dtype=dtype, device=device)
        return self._numel[key]

    def matrix(self, fn: str, x: torch.Tensor) -> torch.Tensor:
        """The interpreter's matrix built-in ``fn`` applied to each tensor's shaped view."""
        rows = x.shape[0]
        parts = []
        for o, n, shape in self.layout:
            view = x[:, o:o + n].reshape(rows, *shape)
            ctx = _Context(view.shape, 1, x.dtype, x.device, None, None)
            parts.append(TORCH_IMPL[fn](ctx, view).reshape(rows, n))
        return torch.cat(parts, dim=1)


class FlatTape:
    """``program`` as generated code over flat rows: ``(u, new_states) = tape(w, g, states, step=, lr=)``.

    ``w``, ``g`` and the states are ``(rows, N)`` in one dtype, ``lr`` is ``(rows, 1)``;
    the results are ``(rows, N)`` (possibly broadcast views) and equal, tensor by tensor,
    what :func:`optdisco.dsl.run` computes with ``batch_dims=1`` on each tensor's view.
    """

    def __init__(self, program: Program, layout: Layout) -> None:
        if program.uses("randn"):
            raise ValueError(f"rule '{program.name}' draws noise; use ReferenceStep")
        self.program = program
        self.segments = Segments(layout)
        update, states = program.outputs()
        hyper = program.hyperparameter_defaults
        names: dict[Expr, str] = {}         # node -> the variable holding it in the generated code
        kinds: dict[str, int] = {"w": FULL, "g": FULL, "step": SCALAR, "lr": ROW}
        timed: set[str] = {"step"}          # variables whose value changes with the step
        self.constants: list[float] = []    # values of k0, k1, ...: hyperparameters, then literals
        fold: list[str] = []                # lines computing step-independent scalar nodes f0, f1, ...
        body: list[str] = []
        for n in ("w", "g", "step", "lr"):
            names[Name(n)] = n
        for i, s in enumerate(program.state_names):
            names[Name(s)] = f"s{i}"
            kinds[f"s{i}"] = FULL

        def constant(value: float) -> str:
            name = f"k{len(self.constants)}"
            self.constants.append(float(value))
            kinds[name] = SCALAR
            return name

        for n in program.hyperparameter_names:
            names[Name(n)] = constant(hyper[n])

        def full(name: str) -> str:
            return f"S.widen({name})" if kinds[name] == SEGMENT else name

        def full_shape(name: str) -> str:  # a reduction's or matrix built-in's argument, as the interpreter's ctx.full
            return full(name) if kinds[name] >= SEGMENT else f"torch.broadcast_to({name}, w.shape)"

        def remember(e: Expr, name: str) -> str:
            names[e] = name
            return name

        def elementwise(template: str, args: list[str]) -> str:
            """A line computing ``template`` of ``args``: folded if it is a constant scalar."""
            out_kind = max((kinds[a] for a in args), default=SCALAR)
            if out_kind == FULL:
                args = [full(a) for a in args]
            if out_kind == SCALAR and not any(a in timed for a in args):
                out = f"f{len(fold)}"
                fold.append(f"    {out} = {template.format(*args)}")
            else:
                out = f"v{len(body)}"
                body.append(f"    {out} = {template.format(*args)}")
                timed.add(out)
            kinds[out] = out_kind
            return out

        def visit(e: Expr) -> str:
            if e in names:
                return names[e]
            if isinstance(e, Name):
                raise KeyError(f"name '{e.id}' is not defined in rule '{program.name}'")
            if isinstance(e, Const):
                names[e] = constant(e.value)
                return names[e]
            assert isinstance(e, Call)
            args = [visit(a) for a in e.args]
            kind = kind_of(e.fn)
            if e.fn == "interp":  # (1 - beta) on its own line, so a constant beta folds it
                a, b, beta = args
                return remember(e, elementwise("{0} * {1} + {2} * {3}",
                                               [elementwise("1.0 - {0}", [beta]), a, beta, b]))
            if kind in ("operator", "elementwise"):
                return remember(e, elementwise(TORCH_EXPR[e.fn], args))
            if e.fn == "numel":
                out, out_kind = f"v{len(body)}", SEGMENT
                body.append(f"    {out} = S.numel(dt, w.device)")
            elif e.fn in REDUCTION:
                squared, how = REDUCTION[e.fn]
                x = full_shape(args[0])
                if squared:
                    body.append(f"    v{len(body)} = {x} * {x}")
                    x = f"v{len(body) - 1}"
                out, out_kind = f"v{len(body)}", SEGMENT
                reduced = f"S.reduce('{how}', {x})"
                body.append(f"    {out} = {'torch.sqrt(' + reduced + ')' if squared else reduced}")
            elif kind == "matrix":
                x = full_shape(args[0])
                out, out_kind = f"v{len(body)}", FULL
                body.append(f"    {out} = S.matrix('{e.fn}', {x})")
            else:
                raise ValueError(f"built-in '{e.fn}' cannot be taped")
            kinds[out] = out_kind
            timed.add(out)
            return remember(e, out)

        update_name = visit(update)
        state_names = [visit(s) for s in states]
        k_names = [f"k{i}" for i in range(len(self.constants))]
        f_names = [f"f{i}" for i in range(len(fold))]
        unpack = lambda names, source: [f"    {', '.join(names)}, = {source}"] if names else []  # noqa: E731
        out = lambda n: f"torch.broadcast_to({full(n)}, w.shape)" if kinds[n] < FULL else n  # noqa: E731
        self.source = "\n".join(
            ["def fold(K, dt):"] + unpack(k_names, "K") + fold + [f"    return [{', '.join(f_names)}]", "",
             "def step(w, g, states, step, lr, K, F, S, dt):"]
            + unpack([f"s{i}" for i in range(len(program.state_names))], "states")
            + unpack(k_names, "K") + unpack(f_names, "F") + body
            + [f"    return {out(update_name)}, [{', '.join(out(n) for n in state_names)}]", ""])
        scope: dict = {"torch": torch}
        exec(compile(self.source, f"<tape {program.name}>", "exec"), scope)
        self._fold, self._step = scope["fold"], scope["step"]
        self._ready: dict[tuple, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}

    def __call__(self, w: torch.Tensor, g: torch.Tensor, states: Sequence[torch.Tensor], *,
                 step: float | torch.Tensor, lr: torch.Tensor, generator: torch.Generator | None = None,
                 ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The update and new states for the rows ``w`` (see the class docstring); ``step`` may
        be a 0-d tensor of ``w``'s dtype, made once per step for all programs."""
        dtype, device = w.dtype, w.device
        ready = self._ready.get((dtype, device))
        if ready is None:
            K = [torch.as_tensor(v, dtype=dtype, device=device) for v in self.constants]
            ready = self._ready[(dtype, device)] = (K, self._fold(K, dtype))
        K, F = ready
        if not torch.is_tensor(step):
            step = torch.as_tensor(float(step), dtype=dtype, device=device)
        return self._step(w, g, states, step, lr, K, F, self.segments, dtype)


def state_layouts(program: Program, layout: Layout) -> list[list[tuple[int, int, tuple[int, ...]]]]:
    """For each state, (offset, size, storage shape) of each tensor's part of its flat row: a
    w-shaped state has ``layout`` itself; a factor of a rows x cols tensor takes rows^2
    (left) or cols^2 (right) entries, a per-row state rows entries (see
    :func:`optdisco.dsl.shapes.storage_shape`)."""
    out = []
    for name in program.state_names:
        declared = program.state_shape(name)
        if declared == "param":
            out.append(list(layout))
        else:
            out.append(flat_layout([storage_shape(declared, shape) for _, _, shape in layout]))
    return out


def state_widths(program: Program, layout: Layout) -> list[int]:
    """The flat row width of each state of ``program`` (the parameter count for w-shaped ones)."""
    return [sum(size for _, size, _ in parts) for parts in state_layouts(program, layout)]


class ReferenceStep:
    """The reference interpreter with :class:`FlatTape`'s contract: applied once to the flat
    rows, or tensor by tensor (on shaped views) when the rule reads whole-tensor structure.
    Rules with matrix states always run tensor by tensor, their states laid out by
    :func:`state_layouts`."""

    def __init__(self, program: Program, layout: Layout) -> None:
        self.program = program
        self.layout = list(layout)
        self.per_tensor = needs_per_tensor(program) or program.has_matrix_states
        self.state_layouts = state_layouts(program, layout)

    def __call__(self, w: torch.Tensor, g: torch.Tensor, states: Sequence[torch.Tensor], *,
                 step: float | torch.Tensor, lr: torch.Tensor, generator: torch.Generator | None = None,
                 ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The update and new states for the rows ``w``, by :func:`optdisco.dsl.run`."""
        if not self.per_tensor:
            return reference_run(self.program, w, g, states, step=step, lr=lr, batch_dims=1,
                                 generator=generator)
        rows = w.shape[0]
        if self.program.has_group_reductions:
            return self._group_call(w, g, states, step=step, lr=lr, generator=generator)
        us, new = [], [[] for _ in states]
        for i, (o, size, shape) in enumerate(self.layout):
            view = lambda x, o=o, size=size, shape=shape: x[:, o:o + size].reshape(rows, *shape)  # noqa: E731
            state_views = [s[:, so:so + ssize].reshape(rows, *sshape)
                           for s, (so, ssize, sshape) in zip(states, (sl[i] for sl in self.state_layouts))]
            u, ns = reference_run(self.program, view(w), view(g), state_views,
                                  step=step, lr=lr.view(rows, *([1] * len(shape))),
                                  batch_dims=1, generator=generator)
            us.append(u.reshape(rows, size))
            for j, s in enumerate(ns):
                new[j].append(s.reshape(rows, -1))
        return torch.cat(us, dim=1), [torch.cat(parts, dim=1) for parts in new]


    def _group_call(self, w: torch.Tensor, g: torch.Tensor, states: Sequence[torch.Tensor], *,
                    step: float | torch.Tensor, lr: torch.Tensor, generator: torch.Generator | None,
                    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """A rule with group built-ins: the task's tensors are one param group, run in lockstep
        by :func:`optdisco.dsl.interpreter.run_group` (each row its own problem)."""
        rows = w.shape[0]
        ws, gs, ss = [], [], []
        for i, (o, size, shape) in enumerate(self.layout):
            ws.append(w[:, o:o + size].reshape(rows, *shape))
            gs.append(g[:, o:o + size].reshape(rows, *shape))
            ss.append([s[:, so:so + ssize].reshape(rows, *sshape)
                       for s, (so, ssize, sshape) in zip(states, (sl[i] for sl in self.state_layouts))])
        lrs = [lr.view(rows, *([1] * len(shape))) for _, _, shape in self.layout]
        us, news = run_group(self.program, ws, gs, ss, step=step, lr=lrs, batch_dims=1,
                             generator=generator)
        new = [torch.cat([n[j].reshape(rows, -1) for n in news], dim=1) for j in range(len(states))]
        return torch.cat([u.reshape(rows, -1) for u in us], dim=1), new


def flat_layout(shapes: Sequence[tuple[int, ...]]) -> list[tuple[int, int, tuple[int, ...]]]:
    """(offset, size, shape) of tensors of these shapes placed side by side in a flat row."""
    out, offset = [], 0
    for shape in shapes:
        n = math.prod(shape)
        out.append((offset, n, tuple(shape)))
        offset += n
    return out


def make_step(program: Program, layout: Layout) -> Callable:
    """A :class:`FlatTape` for ``program``, or a :class:`ReferenceStep` for rules that draw
    noise or cannot be taped (their error then surfaces when the step runs)."""
    if program.uses("randn") or program.has_matrix_states:
        return ReferenceStep(program, layout)
    try:
        return FlatTape(program, layout)
    except Exception:
        return ReferenceStep(program, layout)
