"""Generated per-tensor torch code for a rule: the body ``torch.compile`` fuses.

The generated function sees every tensor in the matrix view (rows x cols, as the
interpreter's matrix built-ins do) and mirrors the interpreter op for op, so inductor
fuses exactly the reference arithmetic. Scalar arithmetic on ``step`` and the
hyperparameters (``1 - beta ** step``, ...) is hoisted into ``rule_scalars``, computed for
all tensors at once before the per-tensor calls, and arrives packed in one tensor ``scal``
(``lr`` first), so changing a value never recompiles and inductor's element loop does no
per-element ``pow``. Noise arrives as pre-drawn tensors so a step draws the same numbers
as the interpreter. The function writes the new states and parameter in place.
"""

from __future__ import annotations

from .plan import Plan
from .scalar import SCALAR_EXPR

#: How each built-in is written; {0}, {1}, {2} are the argument expressions.
TORCH_EXPR = {
    "add": "({0} + {1})", "sub": "({0} - {1})", "mul": "({0} * {1})", "div": "({0} / {1})",
    "pow": "torch.pow({0}, {1})", "neg": "(-{0})",
    "abs": "torch.abs({0})", "sign": "torch.sign({0})", "sqrt": "torch.sqrt({0})",
    "rsqrt": "torch.rsqrt({0})", "exp": "torch.exp({0})", "log": "torch.log({0})",
    "square": "({0} * {0})", "tanh": "torch.tanh({0})", "relu": "torch.clamp_min({0}, 0.0)",
    "clip": "torch.minimum(torch.maximum({0}, -{1}), {1})",
    "maximum": "torch.maximum({0}, {1})", "minimum": "torch.minimum({0}, {1})",
    "interp": "((1.0 - {2}) * {0} + {2} * {1})",
    "gt": "({0} > {1}).to(dt)", "where": "torch.where({0} > 0, {1}, {2})",
    "floor": "torch.floor({0})", "cosine": "torch.cos({0})",
    "norm": "torch.sqrt(torch.sum(full({0}) ** 2))",
    "rms": "torch.sqrt(torch.mean(full({0}) ** 2))",
    "mean": "torch.mean(full({0}))", "sum": "torch.sum(full({0}))",
    "orthogonalize": "newton_schulz(full({0}))",
    "row_mean": "full({0}).mean(dim=-1, keepdim=True).expand(shape)",
    "col_mean": "full({0}).mean(dim=-2, keepdim=True).expand(shape)",
}



def hoisted(plan: Plan) -> tuple[set[int], list[int]]:
    """Scalar ops computable before the per-tensor call (no reduction inside), and those of
    them the per-tensor code reads (``lr`` first).

    Inductor would otherwise recompute them (``beta ** step``, ...) inside its element loop.
    """
    host = {op.id for op in plan.live_ops() if op.scalar and op.level == 0}
    lr = next((op.id for op in plan.ops if op.kind == "input" and op.fn == "lr"), None)
    needed: list[int] = [] if lr is None or lr not in host else [lr]
    roots = [plan.update, *plan.states]
    for op in plan.live_ops():
        uses = [] if op.id in host or op.fn == "numel" else list(op.args)
        for a in uses:
            if a in host and a not in needed:
                needed.append(a)
    for r in roots:
        if r in host and r not in needed:
            needed.append(r)
    return host, needed


def divisions_by_scalar(plan: Plan, host: set[int]) -> set[int]:
    """The per-tensor ``div`` ops whose divisor is a hoisted scalar: ``x / s`` is written
    ``x * (1 / s)``, with ``1 / s`` computed once per tensor in ``rule_scalars``.

    A vector division costs several multiplications on a CPU (AdamW's three made its
    compiled loop compute-bound, ~1.3x torch's fused AdamW at 10M parameters); the
    product differs from the quotient by at most one rounding of ``1 / s``."""
    return {op.id for op in plan.live_ops()
            if op.fn == "div" and op.id not in host and op.args[1] in host and op.args[0] not in host}


def reciprocals(plan: Plan, host: set[int]) -> list[int]:
    """The hoisted scalars that per-tensor code divides by (see :func:`divisions_by_scalar`), in order."""
    out: list[int] = []
    divisions = divisions_by_scalar(plan, host)
    for op in plan.live_ops():
        if op.id in divisions and op.args[1] not in out:
            out.append(op.args[1])
    return out


def generate(plan: Plan, fn_name: str = "rule_step") -> str:
    """Python source of ``rule_scalars(step, lr, numel, hyper)``, ``rule_scalars_float`` and
    ``fn_name(w, g, *states, scal, *noise)`` for ``plan`` (see module doc).

    ``rule_scalars`` takes one value per tensor (1-D tensors) and returns the [T, K] table
    whose row i is tensor i's ``scal``: lr, then every other step/hyperparameter expression
    the elementwise code reads, then the reciprocals of those it divides by.
    ``rule_scalars_float`` computes one such row from Python floats (in float64, with the
    interpreter's edge cases, :mod:`optdisco.kernels.scalar`): one call for a step of one tensor
    instead of a dozen torch calls on 1-element vectors.
    """
    prog = plan.program
    states = list(prog.state_names)
    noise = [f"noise{k}" for k in range(plan.n_draws)]
    sig = ", ".join(["w", "g"] + [f"s_{s}" for s in states] + ["scal"] + noise)
    sig_floats = ", ".join(["w", "g"] + [f"s_{s}" for s in states] + ["scal", "dt"] + noise)
    host, needed = hoisted(plan)
    lines = [
        f'"""Generated by optdisco.kernels.torchgen from rule {prog.name!r}; do not edit."""',
        "import math",
        "import torch",
        "from optdisco.dsl.interpreter import newton_schulz",
        "from optdisco.kernels import scalar as S",
        "",
        "",
    ]
    lr_col = "lr" if not needed or plan.ops[needed[0]].fn != "lr" else None
    inverted = reciprocals(plan, host)
    for floats in (False, True):
        lines += [
            f"def rule_scalars{'_float' if floats else ''}(step, lr, numel, hyper):",
            '    """One tensor\'s scalars as Python floats (float64): the row of ``scal``."""' if floats else
            '    """Per-tensor scalars, computed for all tensors at once: the rows of ``scal``."""',
        ]
        if not floats:
            lines.append("    dt = step.dtype")
        names: dict[int, str] = {}
        for op in plan.live_ops():
            if op.id not in host:
                continue
            if op.kind == "input":
                expr = {"step": "step", "lr": "lr"}.get(op.fn, f"hyper[{op.fn!r}]")
            elif op.kind == "const":
                expr = repr(float(op.value)) if floats else f"torch.full_like(step, {op.value!r})"
            elif op.fn == "numel":
                expr = "numel"
            else:
                expr = (SCALAR_EXPR if floats else TORCH_EXPR)[op.fn].format(*[names[a] for a in op.args])
            names[op.id] = f"v{op.id}"
            lines.append(f"    v{op.id} = {expr}  # {op.fn}")
        cols = ([lr_col] if lr_col else []) + [names[i] for i in needed] + [
            f"S.div(1.0, {names[i]})" if floats else f"(1.0 / {names[i]})" for i in inverted]
        lines.append(f"    return [{', '.join(cols)}]" if floats else
                     f"    return torch.stack([{', '.join(cols)}], dim=1)")
        lines += ["", ""]
    slot = {i: k + (1 if lr_col else 0) for k, i in enumerate(needed)}
    inverse_slot = {i: k + len(slot) + (1 if lr_col else 0) for k, i in enumerate(inverted)}
    by_reciprocal = divisions_by_scalar(plan, host)
    for floats in (False, True):
        # (the eager one-tensor code divides as the foreach code does, to the same bits:
        # division costs it nothing measurable, and an optimizer's result then does not
        # depend on whether its group ran flat)
        lines += _step_function(plan, f"{fn_name}_floats" if floats else fn_name, sig_floats if floats else sig,
                                host, slot, {} if floats else inverse_slot, set() if floats else by_reciprocal,
                                floats)
    return "\n".join(lines) + "\n"


#: Forms of built-ins for the eager ``_floats`` function when an argument is a Python float
#: (torch.maximum and friends take tensors only); keyed by (name, which args are floats).
FLOAT_ARG_EXPR = {
    ("maximum", (False, True)): "torch.clamp_min({0}, {1})",
    ("maximum", (True, False)): "torch.clamp_min({1}, {0})",
    ("minimum", (False, True)): "torch.clamp_max({0}, {1})",
    ("minimum", (True, False)): "torch.clamp_max({1}, {0})",
    ("clip", (False, True)): "torch.clamp_max(torch.clamp_min({0}, -{1}), {1})",
    ("clip", (True, False)): "torch.minimum(torch.clamp_min(-{1}, {0}), {1})",
    ("interp", (False, False, True)): "torch.lerp({0}, {1}, {2})",
    # (a new tensor, never an input itself: the caller writes w in place before the states)
    ("where", (True, False, False)): "torch.where(torch.tensor({0} > 0), {1}, {2})",
    ("where", (True, True, False)): "torch.where(torch.tensor({0} > 0), {1}, {2})",
    ("where", (True, False, True)): "torch.where(torch.tensor({0} > 0), {1}, {2})",
    ("where", (False, True, True)): "torch.where({0} > 0, torch.tensor({1}, dtype=dt), torch.tensor({2}, dtype=dt))",
}


#: out= forms of elementwise built-ins ({n} is the output, n = the number of arguments),
#: for writing a state's new value straight into the state.
OUT_EXPR = {
    "add": "torch.add({0}, {1}, out={2})", "sub": "torch.sub({0}, {1}, out={2})",
    "mul": "torch.mul({0}, {1}, out={2})", "div": "torch.div({0}, {1}, out={2})",
    "interp": "torch.lerp({0}, {1}, {2}, out={3})", "sqrt": "torch.sqrt({0}, out={1})",
    "abs": "torch.abs({0}, out={1})", "sign": "torch.sign({0}, out={1})",
    "exp": "torch.exp({0}, out={1})", "log": "torch.log({0}, out={1})",
    "tanh": "torch.tanh({0}, out={1})", "rsqrt": "torch.rsqrt({0}, out={1})",
    "neg": "torch.neg({0}, out={1})", "square": "torch.mul({0}, {0}, out={1})",
}


def _written_into_states(plan: Plan, host: set[int], by_reciprocal: set[int]) -> dict[int, str]:
    """Ops of the eager one-tensor step that may write their value straight into a state:
    op id -> state name. An op qualifies when it is the state's new value, has an out= form
    whose tensor arguments come first (``interp`` only with a float weight), is full-shaped,
    and no later op (nor the update or another new state) reads the state's old value."""
    last_read: dict[int, int] = {}
    for op in plan.live_ops():
        if op.id in host:
            continue
        for a in op.args:
            last_read[a] = max(last_read.get(a, -1), op.id)
    for out in (plan.update, *plan.states):
        last_read[out] = len(plan.ops)  # read at the end (the update, or copied)
    inputs = {op.fn: op.id for op in plan.live_ops() if op.kind == "input"}
    into: dict[int, str] = {}
    for name, sid in zip(plan.program.state_names, plan.states):
        op = plan.ops[sid]
        if sid in host or op.scalar or op.kind not in ("operator", "elementwise") or sid in into \
                or sid == plan.update or list(plan.states).count(sid) > 1:
            continue
        floats = [a in host for a in op.args]
        fn = "mul" if sid in by_reciprocal else op.fn
        if fn not in OUT_EXPR or floats[0] or (fn == "interp" and floats != [False, False, True]):
            continue
        old = inputs.get(name)
        if old is not None and last_read.get(old, -1) > sid:
            continue
        into[sid] = name
    return into


def _step_function(plan: Plan, name: str, sig: str, host: set[int], slot: dict[int, int],
                   inverse_slot: dict[int, int], by_reciprocal: set[int], floats: bool) -> list[str]:
    """The lines of the per-tensor step ``name``: for inductor (``scal`` a tensor, the code
    mirrors the interpreter op for op), or with ``floats`` for eager calls on one tensor
    whose parameter, gradient and states are all in the compute dtype ``dt`` (``scal`` a list
    of Python floats; ``interp`` as one ``lerp``; new states written straight into the states
    where :func:`_written_into_states` allows, the new parameter in place)."""
    prog = plan.program
    states = list(prog.state_names)
    lines = [
        f"def {name}({sig}):",
        f'    """One in-place step of {prog.name!r} on matrix views (rows x cols) of one tensor'
        + (' (eager, float scalars)."""' if floats else '."""'),
        *([] if floats else ["    dt = scal.dtype"]),
        "    shape = w.shape",
        "",
        "    def full(x):",
        ("        return torch.full(shape, x, dtype=dt) if isinstance(x, float) else "
         "x.expand(shape) if x.dim() == 0 else x") if floats else
        "        return x.expand(shape) if x.dim() == 0 else x",
        "",
    ]
    names: dict[int, str] = {}
    into = _written_into_states(plan, host, by_reciprocal) if floats else {}
    for i, k in inverse_slot.items():
        lines.append(f"    r{i} = scal[{k}]  # 1 / {plan.ops[i].fn}")
    for op in plan.live_ops():
        v = f"v{op.id}"
        if op.id in host:
            if op.id in slot:
                names[op.id] = v
                lines.append(f"    {v} = scal[{slot[op.id]}]  # {op.fn}")
            continue
        if op.kind == "input" and floats:  # (every tensor is in the compute dtype already)
            expr = op.fn if op.fn in ("w", "g") else f"s_{op.fn}"
        elif op.kind == "input":
            expr = f"{op.fn}.to(dt)" if op.fn in ("w", "g") else f"s_{op.fn}.to(dt)"
        elif op.fn == "randn":
            expr = f"noise{op.draw}.to(dt)"
        elif op.id in into:
            if op.id in by_reciprocal:
                args, fn = [names[op.args[0]], f"r{op.args[1]}"], "mul"
            else:
                args, fn = [names[a] for a in op.args], op.fn
            expr = OUT_EXPR[fn].format(*args, f"s_{into[op.id]}")
        elif op.id in by_reciprocal:
            expr = f"({names[op.args[0]]} * r{op.args[1]})"
        else:
            form = FLOAT_ARG_EXPR.get((op.fn, tuple(a in host for a in op.args))) if floats else None
            expr = (form or TORCH_EXPR[op.fn]).format(*[names[a] for a in op.args])
        names[op.id] = v
        lines.append(f"    {v} = {expr}  # {op.fn}" + ("  (into the state)" if op.id in into else ""))
    lines.append("")
    u = names[plan.update]
    if not floats:
        lines.append(f"    w_new = w.to(dt) - scal[0] * {u}")
    # A state that takes another input's old value is copied first: the writes below
    # would otherwise change it before it is read.
    pending = []
    for s, sid in zip(states, plan.states):
        op = plan.ops[sid]
        if op.kind == "input" and op.fn == s or into.get(sid) == s:
            continue  # unchanged, or already written
        src = f"full({names[sid]})"
        if op.kind == "input":
            lines.append(f"    new_{s} = {src}.clone()")
            src = f"new_{s}"
        pending.append(f"    s_{s}.copy_({src})")
    if floats:
        # in place, before the states change: u may be a state's old value
        lines.append(f"    w.add_({u}, alpha=-scal[0])")
        lines.extend(pending)
    else:
        lines.extend(pending)
        lines.append("    w.copy_(w_new)")
    return lines + ["", ""]
