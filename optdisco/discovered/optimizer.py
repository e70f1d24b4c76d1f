"""``optdisco.Optimizer``: any rule as a ``torch.optim.Optimizer``.

Each parameter ``w`` with gradient ``g`` is updated by the rule's program::

    (u, s_1', ..., s_k') = rule(w, g, s_1, ..., s_k; step, lr, hyperparameters)
    w <- w - lr * u

with the states ``s_i`` zero before the first step, each shaped as the rule declares it:
like ``w`` by default, or a factor or per-row/column statistic of w's matrix view
(:func:`optdisco.dsl.shapes.storage_shape`). bf16/fp16
parameters keep float32 states (also after ``load_state_dict``). The rule's source and a
format version travel inside ``state_dict()`` so that a checkpoint says which rule made it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import torch

from ..dsl import DSLError, Program, parse, run
from ..dsl.shapes import storage_shape
from ..kernels.flat import FlatBuffer, adopt, is_elementwise, owns_storage
from . import catalog, hooks
from .param_steps import DeviceLists, due_parameters

#: With ``state_bits=8``, tensors smaller than this keep float32 states: biases and norm
#: gains save little memory and are the most sensitive to quantization error.
MIN_8BIT_NUMEL = 4096
FORMAT_VERSION = 1
_LOW_PRECISION = (torch.float16, torch.bfloat16)
DEFAULT_LR = 1e-3


def state_dtype(param: torch.Tensor) -> torch.dtype:
    """The dtype of a parameter's rule states: float32 for 16-bit floats, else the parameter's."""
    return torch.float32 if param.dtype in _LOW_PRECISION else param.dtype


def resolve_rule(rule: "str | Program | os.PathLike") -> Program:
    """A Program from a Program, a catalog name, rule text, or the path of a rule file.

    ``DB:ID`` (a program in a campaign store) is read by the store reader that the search
    layer registers in :mod:`.hooks`.
    """
    if isinstance(rule, Program):
        return rule
    if isinstance(rule, os.PathLike):
        return parse(open(rule, encoding="utf-8").read())
    if not isinstance(rule, str):
        raise TypeError(f"rule must be a name, rule text, a path or a Program, not {type(rule).__name__}")
    if "def " in rule and "(" in rule:
        return parse(rule)
    if rule in catalog.names():
        return catalog.get(rule)
    if os.path.isfile(rule):
        return parse(open(rule, encoding="utf-8").read())
    if ":" in rule and not os.path.exists(rule):
        db, _, ident = rule.rpartition(":")
        if os.path.isfile(db):
            read = hooks.store_reader()
            if read is None:
                raise DSLError(f"cannot read '{rule}': campaign stores need optdisco.search")
            return read(db, ident)
        if db.endswith((".db", ".sqlite", ".sqlite3")):
            raise DSLError(f"cannot read '{rule}': no campaign store at '{db}'")
    return catalog.get(rule)  # raises the catalog's error, with a did-you-mean


def default_lr(program: Program) -> float:
    """The rule's suggested learning rate (``lr=`` in its catalog Defaults), else 1e-3."""
    defaults = program.meta.get("Defaults", "")
    for part in defaults.replace(";", ",").split(","):
        key, _, value = part.strip().partition("=")
        if key.strip() == "lr":
            try:
                return float(value.strip().split()[0])
            except (ValueError, IndexError):
                break
    return DEFAULT_LR


# -- the evaluation point of schedule-free rules ---------------------------------------------
#: Docstring keys of a rule whose weights are evaluated elsewhere than where it trains: each an
#: expression of w, the states and the hyperparameters, mapping the training point to the
#: evaluation point (Eval) and back (Train).
SWAP_KEYS = ("Eval", "Train")


def swap_programs(program: Program) -> dict[str, Program] | None:
    """The rule's ``Eval:`` and ``Train:`` expressions as programs, or None when it has neither.

    Each becomes ``def <key>(w, g, s..., *, hyper...): s = s ...; return <expr>, s...``,
    so the interpreter computes ``w_new = expr(w, states, hyperparameters)`` and leaves the
    states as they are. A rule with one of the two keys but not the other is a DSLError.
    """
    facts = program.meta or catalog.parse_docstring(program.docstring or "")[1]
    present = [k for k in SWAP_KEYS if facts.get(k)]
    if not present:
        return None
    if len(present) != len(SWAP_KEYS):
        raise DSLError(f"rule '{program.name}' has {present[0]}: but not "
                       f"{next(k for k in SWAP_KEYS if k not in present)}:",
                       hint="a rule evaluated at another point needs both Eval: and Train:")
    states = ", ".join(program.state_names)
    hyper = ", ".join(f"{n}={v!r}" for n, v in program.hyperparameter_defaults.items())
    signature = ", ".join(["w", "g", *program.state_names]) + (f", *, {hyper}" if hyper else "")
    out = {}
    for key in SWAP_KEYS:
        keep = "".join(f"    {n} = {n}\n" for n in program.state_names)  # states stay as they are
        text = f"def {key.lower()}({signature}):\n{keep}    return {facts[key]}" + (f", {states}" if states else "")
        try:
            out[key] = parse(text)
        except DSLError as err:
            raise DSLError(f"rule '{program.name}': its {key}: expression is not valid: {err}") from err
    return out


def same_rule(a: Program, b: Program) -> bool:
    """Whether two programs are the same rule up to name, docstring and default values."""
    return (a.state_names == b.state_names and a.state_shapes == b.state_shapes
            and a.hyperparameter_names == b.hyperparameter_names
            and a.body == b.body and a.update == b.update)


class Optimizer(torch.optim.Optimizer):
    """Runs an update rule: a catalog name, rule text, a rule file path or a Program.

    ``Optimizer(params, "lion", lr=1e-4, beta2=0.98)`` builds a torch optimizer whose
    param groups carry ``lr`` and every hyperparameter of the rule (per-group values
    allowed). ``backend`` picks the execution path ("auto", "eager", "foreach",
    "compile", "triton"; see :mod:`optdisco.kernels`). ``seed`` seeds ``randn()``.
    ``state_bits=8`` keeps the states of tensors with at least :data:`MIN_8BIT_NUMEL`
    elements in the 8-bit blockwise format of :mod:`optdisco.kernels.quant8` (about 3.9x
    less state memory; read by the "triton" and "eager" backends, and by "auto", which
    takes the interpreter for them on CPU).
    ``Optimizer(params, learned=PATH, lr=...)`` builds ``optdisco.LearnedOptimizer(params,
    learned=PATH, lr=...)`` instead (through its ``__new__``, which may return another
    optimizer for other kinds of weights, e.g. ``learned="default"``); the class comes
    from :mod:`.hooks`, registered by the layer above.
    """

    #: False after eval() (the parameters hold the rule's evaluation point) until train().
    train_mode: bool = True
    # (class defaults too, for subclasses that skip this __init__: LearnedOptimizer)
    _swaps: "dict[str, Program] | None" = None

    def __new__(cls, *args: Any, learned: "str | os.PathLike | None" = None, **kwargs: Any):
        if learned is not None and cls is Optimizer:
            learned_cls = hooks.learned_optimizer()
            if learned_cls is None:
                raise TypeError("learned=PATH needs optdisco.search.learned (optdisco.LearnedOptimizer)")
            return learned_cls.__new__(learned_cls, *args, learned=learned, **kwargs)
        return super().__new__(cls)

    def __init__(self, params: Iterable, rule: "str | Program | None" = None, lr: float | None = None, *,
                 backend: str = "auto", seed: int | None = None, state_bits: int = 32,
                 **hyperparameters: float) -> None:
        if state_bits not in (32, 8):
            raise ValueError(f"state_bits must be 32 (float32 states) or 8 (8-bit blockwise), not {state_bits!r}")
        if rule is None:
            raise TypeError("Optimizer needs a rule (a name, rule text, a path or a Program) "
                            "or learned=PATH (weights of a learned optimizer)")
        program = resolve_rule(rule)
        if state_bits == 8:
            from ..kernels.quant8 import reject_matrix_states  # kernels is imported lazily here
            reject_matrix_states(program)
        unknown = set(hyperparameters) - set(program.hyperparameter_names)
        if unknown:
            raise TypeError(
                f"unexpected hyperparameter(s) {sorted(unknown)} for rule '{program.name}'; "
                f"it takes lr{''.join(', ' + n for n in program.hyperparameter_names)}")
        if lr is None:
            lr = default_lr(program)
        if not isinstance(lr, torch.Tensor) and not lr >= 0.0:
            raise ValueError(f"invalid learning rate: {lr}")
        defaults: dict[str, Any] = {"lr": lr, **program.hyperparameter_defaults}
        defaults.update({k: float(v) for k, v in hyperparameters.items()})
        self.program = program
        self.backend_name = backend
        self.state_bits = state_bits
        self._backends: dict[str, Any] = {}
        self._by_device: dict[torch.device, Any] = {}
        self._swaps = swap_programs(program)
        self.train_mode = True
        # Groups of an elementwise rule run as one call on flat buffers (see _flat_step).
        self._flat_groups: dict[int, _FlatGroup | None] = {}
        self._runs_flat = (backend in ("auto", "foreach", "compile") and state_bits == 32
                           and is_elementwise(program)
                           and all(program.state_shape(n) == "param" for n in program.state_names))
        self._generator = torch.Generator()
        self._generator.manual_seed(seed if seed is not None else torch.initial_seed() % (2**63))
        super().__init__(params, defaults)
        # Fail early on an unknown or unavailable backend, not at the first step.
        for group in self.param_groups:
            for p in group["params"]:
                self._backend_for(p.device)

    def _backend_for(self, device: torch.device):
        hit = self._by_device.get(device)  # (str(device) costs a small model's step a few %)
        if hit is not None:
            return hit
        key = str(device)
        if key not in self._backends:
            from ..kernels import get_backend
            self._backends[key] = get_backend(self.program, self.backend_name, device)
        self._by_device[device] = self._backends[key]
        return self._backends[key]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None):
        """One update of every parameter that has a gradient; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if not self.train_mode:
            raise RuntimeError(f"rule '{self.program.name}' is in eval mode: its parameters hold the "
                               "evaluation point; call optimizer.train() before step()")
        names = self.program.state_names
        for index, group in enumerate(self.param_groups):
            hyper = {n: float(group[n]) for n in self.program.hyperparameter_names}
            if self._runs_flat and self._flat_step(index, group, hyper):
                continue
            if self.program.has_group_reductions:
                self._group_step(group, hyper)
                continue
            lists = DeviceLists()
            for p, state, t in due_parameters(group["params"], self.state,
                                              f"optdisco.Optimizer (rule '{self.program.name}')",
                                              lambda p: {n: self._zero_state(p, self.program.state_shape(n)) for n in names}):
                lists.add(p, [state[n] for n in names], t)
            for params, grads, states, steps in lists.groups():
                self._backend_for(params[0].device).step(
                    params, grads, states, steps=steps, lr=float(group["lr"]),
                    hyperparameters=hyper, generator=self._generator)
        return loss

    def _group_step(self, group: dict[str, Any], hyper: dict[str, float]) -> None:
        """The step of a rule with group built-ins: every parameter of the group that has a
        gradient, in one lockstep call (its group-wide sums see them all, on any device).

        ``per_group`` states are kept in every parameter's state (one entry each) and hold one
        value: a parameter's first step starts from the group's current value, not zero."""
        names = self.program.state_names
        shared = [n for n in names if self.program.state_shape(n) == "per_group"]
        current = next((self.state[p] for p in group["params"] if self.state.get(p)), None)

        def init(p: torch.Tensor) -> dict[str, torch.Tensor]:
            out = {n: self._zero_state(p, self.program.state_shape(n)) for n in names}
            if current is not None:
                for n in shared:
                    out[n].copy_(current[n].reshape(out[n].shape))
            return out

        params, states, steps = [], [], []
        for p, state, t in due_parameters(group["params"], self.state,
                                          f"optdisco.Optimizer (rule '{self.program.name}')", init):
            params.append(p)
            states.append([state[n] for n in names])
            steps.append(float(t))
        if params:
            self._backend_for(params[0].device).step(
                params, [p.grad for p in params], states, steps=steps, lr=float(group["lr"]),
                hyperparameters=hyper, generator=self._generator)

    # -- training and evaluation points ------------------------------------------
    @torch.no_grad()
    def eval(self) -> None:
        """Move each parameter to the rule's evaluation point: ``w <- Eval(w, states)``.

        For schedule-free rules (``Eval:`` and ``Train:`` in the docstring) this is the
        averaged iterate x, computed from the training point y and the states; for every
        other rule it only records the mode. Call before evaluating or saving the model,
        as with pytorch_optimizer's ScheduleFree optimizers; :meth:`train` undoes it.
        """
        if self.train_mode:
            self._swap("Eval")
        self.train_mode = False

    @torch.no_grad()
    def train(self) -> None:
        """Move each parameter back to the training point: ``w <- Train(w, states)``."""
        if not self.train_mode:
            self._swap("Train")
        self.train_mode = True

    def _swap(self, key: str) -> None:
        if self._swaps is None:
            return
        program = self._swaps[key]
        for group in self.param_groups:
            hyper = {n: float(group[n]) for n in self.program.hyperparameter_names}
            for p in group["params"]:
                state = self.state.get(p)
                if not state:  # never stepped: both points are the initial parameter
                    continue
                states = [_dense(state[n], p) for n in self.program.state_names]
                w = p.detach().to(states[0].dtype if states else p.dtype)
                new_w, _ = run(program, w, torch.zeros_like(w), states, step=float(state["step"]),
                               lr=float(group["lr"]), hyperparameters=hyper)
                p.copy_(new_w.to(p.dtype))

    def _flat_step(self, index: int, group: dict[str, Any], hyper: dict[str, float]) -> bool:
        """The group's step as one backend call on flat buffers of its parameters, gradients
        and states (an elementwise rule gives the same numbers on them as tensor by tensor);
        False, with nothing done, when the group cannot run so.

        The first such step moves the parameters and states into the buffers (:func:`adopt`);
        each step copies the gradients into one buffer in one call and checks that every
        parameter still views its place (a ``p.data = ...`` or a loaded state rebuilds)."""
        params = group["params"]
        flat = self._flat_groups.get(index)
        if flat is None or not flat.holds(params, self.state):
            flat = self._make_flat(params, flat)
            self._flat_groups[index] = flat
            if flat is None:
                return False
        flat.grad.gather([p.grad for p in params])
        flat.steps.buffer.add_(1.0)
        flat.step += 1.0
        self._backend_for(flat.param.buffer.device).step(
            [flat.param.buffer], [flat.grad.buffer], [[s.buffer for s in flat.states]],
            steps=[flat.step], lr=float(group["lr"]), hyperparameters=hyper, generator=self._generator)
        return True

    def _make_flat(self, params: list[torch.Tensor], old: "_FlatGroup | None") -> "_FlatGroup | None":
        """Flat buffers for a group whose parameters all have dense gradients, one CPU device and
        dtype, storage of their own (or their places in ``old``'s buffer) and one step count;
        None for any other group."""
        if len(params) < 2 or any(p.grad is None or p.grad.is_sparse for p in params):
            return None
        first = params[0]
        if first.device.type != "cpu" or first.is_complex() or any(
                p.dtype != first.dtype or p.device != first.device for p in params):
            return None
        # A parameter still at its place in the old buffer may move to a new one, like one
        # that owns its storage: neither aliases another parameter.
        placed = [old is not None and i < len(old.params) and old.params[i] is p and p.data_ptr() == old.ptrs[i]
                  for i, p in enumerate(params)]
        reuse = old is not None and len(old.params) == len(params) and all(placed)
        if not all(at or owns_storage(p) for at, p in zip(placed, params)):
            return None
        names = self.program.state_names
        for p in params:
            state = self.state[p]
            if not state:
                state["step"] = torch.tensor(0.0)
                for n in names:
                    state[n] = self._zero_state(p)
        steps = [self.state[p]["step"] for p in params]
        if any(not isinstance(t, torch.Tensor) or t.dim() != 0 for t in steps) or len({float(t) for t in steps}) != 1:
            return None
        current = [[self.state[p][n] for p in params] for n in names]
        for tensors in current:
            if any(not isinstance(t, torch.Tensor) or t.shape != p.shape or t.dtype != tensors[0].dtype
                   or t.device != p.device for t, p in zip(tensors, params)):
                return None
        param = old.param if reuse and old is not None else adopt(params)
        flats = []
        for n, tensors in zip(["step", *names], [steps, *current]):
            buffer = FlatBuffer(tensors)
            for p, view in zip(params, buffer.views):
                self.state[p][n] = view
            flats.append(buffer)
        return _FlatGroup(list(params), [p.data_ptr() for p in params], param,
                          FlatBuffer(params, init=[p.grad for p in params if p.grad is not None]), flats[1:], flats[0],
                          float(steps[0]), self.state)

    def _quantized(self, p: torch.Tensor) -> bool:
        return self.state_bits == 8 and p.numel() >= MIN_8BIT_NUMEL

    def _zero_state(self, p: torch.Tensor, declared: str = "param"):
        if declared != "param":
            return torch.zeros(storage_shape(declared, p.shape), dtype=state_dtype(p), device=p.device)
        if self._quantized(p):
            from ..kernels import quant8
            return quant8.zeros_like(p)
        return torch.zeros_like(p, dtype=state_dtype(p), memory_format=torch.preserve_format)

    # -- checkpoints -------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """torch's state dict plus ``optdisco``: format version, rule source and noise state.

        8-bit states are saved as ``{"codes": uint8, "absmax": float32}`` dicts of tensors, so a
        checkpoint holds only tensors and loads with ``torch.load(weights_only=True)``."""
        sd = super().state_dict()
        sd["state"] = {pid: {k: _saved_state(v) for k, v in st.items()} for pid, st in sd["state"].items()}
        sd["optdisco"] = {
            "format_version": FORMAT_VERSION,
            "rule_name": self.program.name,
            "rule_source": self.program.source(),
            "generator_state": self._generator.get_state(),
            "state_bits": self.state_bits,
            "train_mode": self.train_mode,
        }
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a checkpoint made by the same rule; states stay float32 for 16-bit parameters."""
        meta = state_dict.get("optdisco")
        if meta is None:
            raise ValueError(
                "this checkpoint was not made by optdisco.Optimizer (no 'optdisco' entry); "
                f"it cannot be loaded into rule '{self.program.name}'")
        version = meta.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"checkpoint format version {version} is not supported "
                             f"(this optdisco reads version {FORMAT_VERSION})")
        saved = parse(meta["rule_source"])
        if not same_rule(saved, self.program):
            raise ValueError(
                f"checkpoint was made by rule '{saved.name}', but this optimizer runs rule "
                f"'{self.program.name}'; build Optimizer(params, <that rule>) to load it.\n"
                f"checkpoint rule:\n{saved.source()}")
        plain = {k: v for k, v in state_dict.items() if k != "optdisco"}
        super().load_state_dict(plain)
        self._restore_state_precision(plain)
        self.train_mode = bool(meta.get("train_mode", True))
        if meta.get("generator_state") is not None:
            self._generator.set_state(meta["generator_state"])

    def _restore_state_precision(self, state_dict: dict[str, Any]) -> None:
        # torch's load casts floating state to the parameter's dtype (bf16 for a bf16
        # parameter); rule states must stay float32 or a resumed run drifts from an
        # uninterrupted one. Reload them from the checkpoint's own tensors, in this
        # optimizer's state format (8-bit states are re-quantized or expanded as needed).
        from ..kernels import quant8
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for pid, p in zip(saved_ids, params):
            saved = state_dict["state"].get(pid)
            if saved is None:
                continue
            for name in self.program.state_names:
                value = saved.get(name)
                if isinstance(value, dict) and set(value) == {"codes", "absmax"}:
                    q = quant8.QuantizedState(value["codes"].to(p.device, copy=True),
                                              value["absmax"].to(device=p.device, dtype=torch.float32, copy=True))
                    self.state[p][name] = q if self._quantized(p) else \
                        q.dequantize().to(state_dtype(p)).view_as(p)
                elif isinstance(value, torch.Tensor) and (self._quantized(p) or state_dtype(p) != p.dtype):
                    # (otherwise torch's own load already holds the right float32 tensor)
                    full = value.to(dtype=state_dtype(p), device=p.device, copy=True)
                    self.state[p][name] = quant8.quantize(full) if self._quantized(p) else full

    def state_nbytes(self) -> int:
        """Bytes held by the rule's per-parameter states (:func:`state_nbytes`)."""
        return state_nbytes(self)

    def __repr__(self) -> str:
        bits = "" if self.state_bits == 32 else f", state_bits={self.state_bits}"
        return f"optdisco.Optimizer(rule='{self.program.name}', backend='{self.backend_name}'{bits}, " \
               f"groups={len(self.param_groups)})"


@dataclass
class _FlatGroup:
    """A param group's parameters, gradients and states as flat buffers (one each)."""

    params: list[torch.Tensor]
    ptrs: list[int]              # each parameter's data pointer: its place in ``param``
    param: FlatBuffer
    grad: FlatBuffer
    states: list[FlatBuffer]     # in the rule's state order
    steps: FlatBuffer            # the parameters' ``state["step"]`` (0-d views)
    step: float
    state_ref: Any               # the optimizer's ``state`` the views were put in

    def holds(self, params: list[torch.Tensor], state: Any) -> bool:
        """Whether ``params`` (with gradients) are still the views this layout was made for."""
        return (state is self.state_ref and len(params) == len(self.params)
                and all(p is q and p.grad is not None and not p.grad.is_sparse and p.data_ptr() == ptr
                        for p, q, ptr in zip(params, self.params, self.ptrs)))


def state_nbytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of any torch optimizer's per-parameter state (step counters excluded): tensors
    at numel x element size, 8-bit blockwise states at their own ``nbytes()``."""
    total = 0
    for st in opt.state.values():
        for k, v in st.items():
            if k == "step":
                continue
            if isinstance(v, torch.Tensor):
                total += v.numel() * v.element_size()
            elif callable(getattr(v, "nbytes", None)):
                total += v.nbytes()
    return total


def _dense(value: Any, p: torch.Tensor) -> torch.Tensor:
    """A state as a float tensor shaped like ``p`` (8-bit states dequantized)."""
    from ..kernels.quant8 import QuantizedState
    if isinstance(value, QuantizedState):
        return value.dequantize().to(state_dtype(p)).view_as(p)
    return value


def _saved_state(value: Any) -> Any:
    """A state value as a checkpoint holds it: tensors as they are, 8-bit states as tensor dicts."""
    from ..kernels.quant8 import QuantizedState
    if isinstance(value, QuantizedState):
        return {"codes": value.codes, "absmax": value.absmax}
    return value
