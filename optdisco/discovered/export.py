"""Exporters: a rule as a standalone PyTorch optimizer file, as an optax transformation, as LaTeX, as Markdown.

The torch exporter writes a file that imports only torch and math: the rule's statements
are printed as they are, with built-in calls routed to a small ``_Ops`` class whose methods
restate the interpreter's semantics for one parameter tensor.
"""

from __future__ import annotations

import keyword
import re

from ..dsl import BUILTINS, Program
from ..dsl import shapes
from ..dsl.builtins import EIGENBASIS_JITTER, NEWTON_SCHULZ_COEFFS, NEWTON_SCHULZ_EPS, NEWTON_SCHULZ_STEPS
from ..dsl.interpreter import group_calls
from ..dsl.ir import Call, Const, Expr, Name
from .codegen import OPERATORS, calls, ops_expr
from .export_optax import to_optax
from .optimizer import default_lr

FORMATS = ("torch", "optax", "latex", "markdown")

# One method per built-in, restating optdisco.dsl.interpreter.TORCH_IMPL for an unbatched
# tensor. Test: every catalog rule's exported file reproduces the interpreter's trajectory.
_OPS_METHODS = {
    "abs": "    def abs(self, x):\n        return torch.abs(x)\n",
    "sign": "    def sign(self, x):\n        return torch.sign(x)\n",
    "sqrt": "    def sqrt(self, x):\n        return torch.sqrt(x)\n",
    "rsqrt": "    def rsqrt(self, x):\n        return torch.rsqrt(x)\n",
    "exp": "    def exp(self, x):\n        return torch.exp(x)\n",
    "log": "    def log(self, x):\n        return torch.log(x)\n",
    "square": "    def square(self, x):\n        return x * x\n",
    "tanh": "    def tanh(self, x):\n        return torch.tanh(x)\n",
    "relu": "    def relu(self, x):\n        return torch.clamp_min(x, 0.0)\n",
    "clip": "    def clip(self, x, c):\n        \"\"\"x clamped to [-c, c].\"\"\"\n"
            "        return torch.minimum(torch.maximum(x, -c), c)\n",
    "maximum": "    def maximum(self, a, b):\n        return torch.maximum(a, b)\n",
    "minimum": "    def minimum(self, a, b):\n        return torch.minimum(a, b)\n",
    "interp": "    def interp(self, a, b, beta):\n        \"\"\"(1 - beta) * a + beta * b.\"\"\"\n"
              "        return (1.0 - beta) * a + beta * b\n",
    "gt": "    def gt(self, a, b):\n        \"\"\"1.0 where a > b, else 0.0.\"\"\"\n"
          "        return (a > b).to(self.dtype)\n",
    "where": "    def where(self, c, a, b):\n        \"\"\"a where c > 0, else b.\"\"\"\n"
             "        return torch.where(c > 0, a, b)\n",
    "floor": "    def floor(self, x):\n        return torch.floor(x)\n",
    "cosine": "    def cosine(self, x):\n        return torch.cos(x)\n",
    "norm": "    def norm(self, x):\n        x = self.full(x)\n"
            "        return torch.sqrt(torch.sum(x * x))\n",
    "rms": "    def rms(self, x):\n        x = self.full(x)\n"
           "        return torch.sqrt(torch.mean(x * x))\n",
    "mean": "    def mean(self, x):\n        return torch.mean(self.full(x))\n",
    "sum": "    def sum(self, x):\n        return torch.sum(self.full(x))\n",
    "numel": "    def numel(self, x):\n        return self.scalar(float(self.shape.numel()))\n",
    "orthogonalize": (
        "    def orthogonalize(self, x):\n"
        "        \"\"\"Muon's Newton-Schulz orthogonalization of the matrix view.\"\"\"\n"
        "        m = self.matrix(x)\n"
        f"        a, b, c = {NEWTON_SCHULZ_COEFFS!r}\n"
        "        rows, cols = m.shape\n"
        f"        X = m / (torch.linalg.matrix_norm(m) + {NEWTON_SCHULZ_EPS!r})\n"
        "        if rows > cols:\n            X = X.mT\n"
        f"        for _ in range({NEWTON_SCHULZ_STEPS}):\n"
        "            A = X @ X.mT\n            B = b * A + c * (A @ A)\n            X = a * X + B @ X\n"
        "        if rows > cols:\n            X = X.mT\n"
        "        return (X * math.sqrt(max(1.0, rows / cols))).reshape(self.shape)\n"),
    "row_mean": "    def row_mean(self, x):\n        m = self.matrix(x)\n"
                "        return m.mean(dim=-1, keepdim=True).expand(m.shape).reshape(self.shape)\n",
    "col_mean": "    def col_mean(self, x):\n        m = self.matrix(x)\n"
                "        return m.mean(dim=-2, keepdim=True).expand(m.shape).reshape(self.shape)\n",
    "randn": "    def randn(self):\n"
             "        return torch.randn(self.shape, generator=self.generator, dtype=self.dtype,"
             " device=self.device)\n",
}

# -- matrix states (issue 13): the factor built-ins for one tensor, restating the interpreter
_FACTOR_METHODS = {
    "lmul": "    def lmul(self, F, x):\n        return (self.left(F) @ self.matrix(x)).reshape(self.shape)\n",
    "rmul": "    def rmul(self, x, F):\n        return (self.matrix(x) @ self.right(F)).reshape(self.shape)\n",
    "gram_left": "    def gram_left(self, x):\n        m = self.matrix(x)\n        return m @ m.mT\n",
    "gram_right": "    def gram_right(self, x):\n        m = self.matrix(x)\n        return m.mT @ m\n",
    "inv_root": (
        "    def inv_root(self, F, p, eps):\n"
        "        \"\"\"(F + eps I)^(-1/p) from the float64 eigh of F (negative eigenvalues as 0).\"\"\"\n"
        "        F64 = F.to(torch.float64)\n"
        "        if not bool(torch.isfinite(F64).all()):\n"
        "            return torch.full_like(F, float('nan'))\n"
        "        lam, V = torch.linalg.eigh(F64)\n"
        "        d = torch.pow(lam.clamp_min(0.0) + eps.to(torch.float64), -1.0 / p.to(torch.float64))\n"
        "        return ((V * d.unsqueeze(-2)) @ V.mT).to(F.dtype)\n"),
    "eigenbasis": (
        "    def eigenbasis(self, F):\n"
        "        \"\"\"Eigenvectors of F (float64 eigh of F + 1e-30 I) by descending eigenvalue.\"\"\"\n"
        "        F64 = F.to(torch.float64)\n"
        "        if not bool(torch.isfinite(F64).all()):\n"
        "            return torch.full_like(F, float('nan'))\n"
        f"        _, V = torch.linalg.eigh(F64 + {EIGENBASIS_JITTER!r} * torch.eye(F.shape[-1], dtype=torch.float64))\n"
        "        return torch.flip(V, dims=[-1]).contiguous().to(F.dtype)\n"),
    "rotate": ("    def rotate(self, QL, x, QR):\n"
               "        return (self.left(QL).mT @ self.matrix(x) @ self.right(QR)).reshape(self.shape)\n"),
    "unrotate": ("    def unrotate(self, QL, x, QR):\n"
                 "        return (self.left(QL) @ self.matrix(x) @ self.right(QR).mT).reshape(self.shape)\n"),
    "every": ("    def due(self, step, k):\n"
              "        \"\"\"Whether every(k, x, prev) takes x: (step - 1) mod max(round(k), 1) == 0.\"\"\"\n"
              "        return bool(torch.remainder(step - 1.0, torch.clamp_min(torch.round(k), 1.0)) == 0)\n"),
}
_OPS_METHODS.update(_FACTOR_METHODS)

# Rules with group built-ins are exported as one function over the group's lists (see
# _group_rule_lines); these methods give one parameter's part of a group value and place the
# group value back as that parameter's scalar.
_GROUP_METHODS = {
    "group_sum": ("    def group_sum(self, x, side=None):\n"
                  "        \"\"\"This parameter's part of group_sum(x): the sum of its entries.\"\"\"\n"
                  "        return torch.sum(self.group_entries(x, side))\n"),
    "group_max": ("    def group_max(self, x, side=None):\n"
                  "        \"\"\"This parameter's part of group_max(x): its largest entry.\"\"\"\n"
                  "        return torch.amax(self.group_entries(x, side))\n"),
}
_OPS_METHODS.update(_GROUP_METHODS)

_GROUP_PRELUDE = '''    def group_entries(self, x, side):
        """x's entries as one flat tensor: a factor's (side 'left' or 'right'), else w-shaped."""
        if side == "left":
            return self.left(x).reshape(-1)
        if side == "right":
            return self.right(x).reshape(-1)
        return self.full(x).reshape(-1)

    def group_value(self, v):
        """A group-wide value as this parameter's scalar."""
        return v.to(dtype=self.dtype, device=self.device)


def _group_combine(how, parts):
    """The group value from each parameter's part: their sum, in parameter order, or maximum."""
    total = parts[0]
    for part in parts[1:]:
        part = part.to(total.device)
        total = torch.maximum(total, part) if how == "group_max" else total + part
    return total

'''

# Present in every export of a rule with matrix states: factor and compact-state shapes.
_MATRIX_PRELUDE = '''    def dims(self):
        rows = self.shape[0] if len(self.shape) >= 2 else 1
        return rows, (self.shape.numel() // rows if rows else 0)

    def left(self, F):
        """F as the rows x rows factor it stands for."""
        rows = self.dims()[0]
        return torch.broadcast_to(F, (rows, rows))

    def right(self, F):
        cols = self.dims()[1]
        return torch.broadcast_to(F, (cols, cols))

    def factor_reduce(self, how, F):
        """A reduction of a factor over its own entries."""
        if how == "norm":
            return torch.sqrt(torch.sum(F * F))
        if how == "rms":
            return torch.sqrt(torch.mean(F * F))
        return torch.mean(F) if how == "mean" else torch.sum(F)

    def compact(self, x, declared):
        """A w-shaped broadcast value at the storage of a state declared per_row, per_col or per_tensor."""
        x, n = self.full(x), len(self.shape)
        first, every = slice(0, 1), slice(None)
        if declared in ("per_tensor", "per_group"):
            return x[(first,) * n]
        if declared == "per_row":
            return x[(every,) + (first,) * (n - 1) if n >= 2 else (first,) * n]
        return x[(first,) + (every,) * (n - 1) if n >= 2 else (every,) * n]


def _storage_shape(declared, shape):
    """The shape a state is stored at (like w unless declared otherwise)."""
    shape = tuple(shape)
    n = len(shape)
    rows = shape[0] if n >= 2 else 1
    cols = math.prod(shape) // rows if rows else 0
    return {"left_factor": (rows, rows), "right_factor": (cols, cols), "per_tensor": (1,) * n,
            "per_group": (1,) * n,
            "per_row": (shape[0],) + (1,) * (n - 1) if n >= 2 else (1,) * n,
            "per_col": (1,) + shape[1:] if n >= 2 else shape}.get(declared, shape)

'''

assert set(_OPS_METHODS) | OPERATORS == set(BUILTINS), "every built-in needs an exported method"

_OPS_PRELUDE = '''class _Ops:
    """The rule language's built-ins for one parameter tensor of shape ``shape``."""

    def __init__(self, w, generator=None):
        self.shape, self.dtype, self.device = w.shape, w.dtype, w.device
        self.generator = generator

    def scalar(self, v):
        return torch.as_tensor(v, dtype=self.dtype, device=self.device)

    def full(self, x):
        """x broadcast to the parameter's shape."""
        return torch.broadcast_to(x, torch.broadcast_shapes(x.shape, self.shape))

    def matrix(self, x):
        """The matrix view: rows = first dim, cols = the rest; a vector is one row."""
        x = self.full(x)
        rows = self.shape[0] if len(self.shape) >= 2 else 1
        return x.reshape(rows, -1) if x.numel() else x.reshape(rows, 0)

'''


def _class_name(name: str) -> str:
    parts = [p for p in re.split(r"_+", name) if p]
    cls = "".join(p[:1].upper() + p[1:] for p in parts) or "Rule"
    return cls if not keyword.iskeyword(cls) else cls + "_"


def _static_shape(e: Expr, env_shapes: dict[str, str]) -> str:
    if isinstance(e, Const):
        return shapes.SCALAR
    if isinstance(e, Name):
        return env_shapes[e.id]
    assert isinstance(e, Call)
    return shapes.result_shape(e.fn, [_static_shape(a, env_shapes) for a in e.args])


def _state_out(declared: str, st: str, ops: str) -> str:
    """The exported expression that returns state ``st`` at its storage shape."""
    if declared == "param":
        return f"{ops}.full({st})"
    if declared == "left_factor":
        return f"{ops}.left({st})"
    if declared == "right_factor":
        return f"{ops}.right({st})"
    return f"{ops}.compact({st}, {declared!r})"


def _group_rule_lines(program: Program, fn: str, ops: str, gen: str) -> list[str]:
    """The exported rule function of a rule with group built-ins: every name is a list with
    one entry per parameter of the group, and each statement runs for all of them after its
    group values (inner calls first) are combined from every parameter's part."""
    hyper = program.hyperparameters
    sig = ", ".join(["ws", "gs", "states"])
    kw = ", ".join(["steps", "lr", *[f"{n}={v!r}" for n, v in hyper]])
    lines = [f"def {fn}({sig}, *, {kw}, {gen}=None):",
             '    """One application of the rule to a param group, in lockstep: returns (us, new_states) with',
             '    one entry per parameter; the caller does w -= lr * u. A per_group state is read from the',
             '    first parameter."""',
             "    n = len(ws)",
             f"    {ops} = [_Ops(w, {gen}) for w in ws]",
             "    w = list(ws)",
             "    g = [gs[k].to(ws[k].dtype) for k in range(n)]",
             f"    step = [{ops}[k].scalar(steps[k]) for k in range(n)]"]
    for name in ("lr", *[h for h, _ in hyper]):
        lines.append(f"    {name} = [{ops}[k].scalar({name}) for k in range(n)]")
    for i, st in enumerate(program.state_names):
        if program.state_shape(st) == "per_group":  # the group's one value, as a 0-d tensor
            lines.append(f"    {st} = [states[0][{i}].reshape(()).to(ws[k].device, ws[k].dtype) for k in range(n)]")
        else:
            lines.append(f"    {st} = [states[k][{i}].to(ws[k].device, ws[k].dtype) for k in range(n)]")
    env_shapes = {n: shapes.SCALAR for n in program.input_names}
    env_shapes.update({"w": shapes.PARAM, "g": shapes.PARAM})
    env_shapes.update({n: shapes.STATE_VALUE_SHAPE[program.state_shape(n)] for n in program.state_names})
    counter = [0]

    def indexed(e: Expr, values: dict[Expr, str]) -> tuple[Expr, dict[str, str]]:
        """e with each name x as x[k] and each computed group call as its value, and the
        static shapes of those new names."""
        k_shapes: dict[str, str] = {}

        def walk(x: Expr) -> Expr:
            if x in values:
                name = f"{ops}[k].group_value({values[x]})"
                k_shapes[name] = shapes.SCALAR
                return Name(name)
            if isinstance(x, Name):
                k_shapes[f"{x.id}[k]"] = env_shapes[x.id]
                return Name(f"{x.id}[k]")
            if isinstance(x, Call):
                return Call(x.fn, tuple(walk(a) for a in x.args))
            return x

        return walk(e), k_shapes

    def statement(e: Expr) -> str:
        values: dict[Expr, str] = {}
        for call in group_calls(e):
            arg, k_shapes = indexed(call.args[0], values)
            side = {shapes.LEFT: "'left'", shapes.RIGHT: "'right'"}.get(_static_shape(call.args[0], env_shapes), "None")
            counter[0] += 1
            name = f"_group{counter[0]}"
            part = ops_expr(arg, f"{ops}[k]", k_shapes)
            lines.append(f"    {name} = _group_combine({call.fn!r}, "
                         f"[{ops}[k].{call.fn}({part}, {side}) for k in range(n)])")
            values[call] = name
        out, k_shapes = indexed(e, values)
        return ops_expr(out, f"{ops}[k]", k_shapes)

    for a in program.body:
        value = statement(a.expr)
        lines.append(f"    {a.target} = [{value} for k in range(n)]")
        env_shapes[a.target] = _static_shape(a.expr, env_shapes)
    update = statement(program.update)
    lines.append(f"    us = [{ops}[k].full({update}) for k in range(n)]")
    outs = "".join(f"{_state_out(program.state_shape(st), f'{st}[k]', f'{ops}[k]')}, " for st in program.state_names)
    lines.append(f"    return us, [({outs}) for k in range(n)]")
    return lines


_PARAM_STEP = '''        for group in self.param_groups:
            hyper = {{k: group[k] for k in ({hyper_names})}}
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self._state_of(p)
                dtype = self._state_dtype(p)
                w = p.to(dtype)
                u, new = {fn}(w, p.grad.to(dtype), *[state[n] for n in self.STATE_NAMES],
                              step=float(state["step"]), lr=float(group["lr"]),
                              {gen}=self.generator, **hyper)
                for name, value in zip(self.STATE_NAMES, new):
                    state[name].copy_(value)
                p.copy_(w - float(group["lr"]) * u)
        return loss
'''


_GROUP_STEP = '''        for group in self.param_groups:
            hyper = {{k: group[k] for k in ({hyper_names})}}
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            current = next((self.state[p] for p in group["params"] if self.state.get(p)), None)
            for p in params:
                self._state_of(p, current)
            dtype = self._state_dtype(params[0])
            ws = [p.to(dtype) for p in params]
            us, news = {fn}(ws, [p.grad.to(dtype) for p in params],
                            [[self.state[p][n] for n in self.STATE_NAMES] for p in params],
                            steps=[float(self.state[p]["step"]) for p in params], lr=float(group["lr"]),
                            {gen}=self.generator, **hyper)
            for p, w, u, new in zip(params, ws, us, news):
                for name, value in zip(self.STATE_NAMES, new):
                    self.state[p][name].copy_(value)
                p.copy_(w - float(group["lr"]) * u)
        return loss
'''


# The generated class's state initialisation, shared by both step loops: a new parameter's
# per_group states start from the group's current value (``current``), so that a parameter
# joining late sees the group-wide statistic rather than zero.
_STATE_OF = '''    def _state_of(self, p, current=None):
        if p.grad.is_sparse:
            raise RuntimeError("{cls} does not support sparse gradients")
        state = self.state[p]
        if not state:
            state["step"] = torch.tensor(0.0)
            for name in self.STATE_NAMES:
                state[name] = {zero_state}
                if current is not None and self.STATE_SHAPES.get(name) == "per_group":
                    state[name].copy_(current[name].reshape(state[name].shape))
        state["step"] += 1
        return state
'''


def to_torch(program: Program, class_name: str | None = None) -> str:
    """A standalone Python file defining the rule as a ``torch.optim.Optimizer`` subclass.

    The file imports only ``math`` and ``torch``; its optimizer has the rule's
    hyperparameters as keyword arguments, float32 states for 16-bit parameters, and
    reproduces :class:`optdisco.Optimizer`'s trajectory.
    """
    cls = class_name or _class_name(program.name)
    used = calls(program)
    hyper = program.hyperparameters
    clash = {"params", "seed", "self"} & set(program.hyperparameter_names)
    if clash:
        raise ValueError(f"cannot export rule '{program.name}': hyperparameter name(s) {sorted(clash)} "
                         "clash with the optimizer's own arguments; rename them")
    taken = set(program.input_names) | {a.target for a in program.body} | {"_Ops", "torch", "math"}

    def fresh(base: str) -> str:
        name = base
        while name in taken:
            name += "_"
        taken.add(name)
        return name

    ops, gen, upd = fresh("_ops"), fresh("generator"), fresh("u")
    fn = f"{program.name}_rule"
    sig = ", ".join(["w", "g", *program.state_names])
    kw = ", ".join(["step", "lr", *[f"{n}={v!r}" for n, v in hyper]])
    body = [f"def {fn}({sig}, *, {kw}, {gen}=None):",
            '    """One application of the rule: returns (u, new_states); the caller does w -= lr * u."""',
            f"    {ops} = _Ops(w, {gen})",
            "    g = g.to(w.dtype)"]
    for n in ("step", "lr", *[n for n, _ in hyper]):
        body.append(f"    {n} = {ops}.scalar({n})")
    for st in program.state_names:
        body.append(f"    {st} = {st}.to(w.dtype)")
    matrix = program.has_matrix_states
    env_shapes: dict[str, str] | None = None
    if matrix:
        env_shapes = {n: shapes.SCALAR for n in program.input_names}
        env_shapes.update({"w": shapes.PARAM, "g": shapes.PARAM})
        env_shapes.update({n: shapes.STATE_VALUE_SHAPE[program.state_shape(n)] for n in program.state_names})
    for a in program.body:
        body.append(f"    {a.target} = {ops_expr(a.expr, ops, env_shapes)}")
        if env_shapes is not None:
            env_shapes[a.target] = _static_shape(a.expr, env_shapes)
    body.append(f"    {upd} = {ops}.full({ops_expr(program.update, ops, env_shapes)})")
    states_tuple = "".join(f"{_state_out(program.state_shape(st), st, ops)}, " for st in program.state_names)
    body.append(f"    return {upd}, ({states_tuple})")
    if program.has_group_reductions:
        body = _group_rule_lines(program, fn, ops, gen)
    methods = "\n".join(_OPS_METHODS[name] for name in sorted(used) if name in _OPS_METHODS)
    if program.has_group_reductions:
        methods = _GROUP_PRELUDE.split("\n\ndef _group_combine")[0] + "\n\n" + methods
    if matrix:
        methods = _MATRIX_PRELUDE.split("\n\ndef _storage_shape")[0] + "\n\n" + methods
        state_shapes_map = "{" + ", ".join(f"{n!r}: {d!r}" for n, d in program.state_shapes) + "}"
        zero_state = ("torch.zeros(_storage_shape(self.STATE_SHAPES.get(name), p.shape), "
                      "dtype=self._state_dtype(p), device=p.device)")
        storage_fn = "\ndef _storage_shape" + _MATRIX_PRELUDE.split("\n\ndef _storage_shape")[1]
        if program.has_group_reductions:
            storage_fn += "\ndef _group_combine" + _GROUP_PRELUDE.split("\n\ndef _group_combine")[1]
    else:
        state_shapes_map = "{}"
        zero_state = "torch.zeros_like(p, dtype=self._state_dtype(p), memory_format=torch.preserve_format)"
        storage_fn = ""
    doc_lines = (program.docstring or program.name).strip().splitlines()
    summary = doc_lines[0] if doc_lines else program.name
    rule_comment = "\n".join("#   " + line for line in program.source().rstrip().splitlines())
    hyper_args = "".join(f", {n}={v!r}" for n, v in hyper)
    group_hyper = ", ".join(f"{n}={n}" for n, _ in hyper)
    states = ", ".join(repr(s) for s in program.state_names)
    summary = summary.replace('"', "'").replace(chr(92), "/")
    hyper_names = ", ".join(repr(n) for n, _ in hyper) + ("," if len(hyper) == 1 else "")
    loop = _GROUP_STEP if program.has_group_reductions else _PARAM_STEP
    step_loop = loop.format(hyper_names=hyper_names, fn=fn, gen=gen)
    state_of = _STATE_OF.format(cls=cls, zero_state=zero_state)
    return f'''"""{cls}: {summary}

A standalone PyTorch optimizer generated by optdisco (w <- w - lr * u); it needs only torch.
"""

# The rule it implements:
{rule_comment}

import math

import torch


{_OPS_PRELUDE}{methods}

{chr(10).join(body)}

{storage_fn}
class {cls}(torch.optim.Optimizer):
    """The rule {program.name!r} as a torch optimizer; 16-bit parameters keep float32 states."""

    STATE_NAMES = ({states}{"," if len(program.state_names) == 1 else ""})
    STATE_SHAPES = {state_shapes_map}

    def __init__(self, params, lr={default_lr(program)!r}{", *" if hyper else ""}{hyper_args}, seed=None):
        if not lr >= 0.0:
            raise ValueError(f"invalid learning rate: {{lr}}")
        super().__init__(params, dict(lr=lr{", " if hyper else ""}{group_hyper}))
        self.generator = torch.Generator()
        self.generator.manual_seed(seed if seed is not None else torch.initial_seed() % (2**63))

    @staticmethod
    def _state_dtype(p):
        return torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype

{state_of}
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
{step_loop}
    def state_dict(self):
        sd = super().state_dict()
        sd["generator_state"] = self.generator.get_state()
        return sd

    def load_state_dict(self, state_dict):
        state_dict = dict(state_dict)
        generator_state = state_dict.pop("generator_state", None)
        super().load_state_dict(state_dict)
        self._restore_state_precision(state_dict)
        if generator_state is not None:
            self.generator.set_state(generator_state)

    def _restore_state_precision(self, state_dict):
        # torch's load casts floating state to the parameter's dtype; keep float32 states
        # for 16-bit parameters by reloading them from the checkpoint's own tensors.
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for pid, p in zip(saved_ids, params):
            saved = state_dict["state"].get(pid)
            if saved is None or self._state_dtype(p) == p.dtype:
                continue
            for name in self.STATE_NAMES:
                if isinstance(saved.get(name), torch.Tensor):
                    self.state[p][name] = saved[name].to(dtype=self._state_dtype(p), device=p.device,
                                                         copy=True)
'''


def to_latex(program: Program) -> str:
    """A LaTeX fragment for a document body: the rule's name, summary and its update equations
    as one displayed ``aligned`` block (needs ``\\usepackage{amsmath}``)."""
    doc = (program.docstring or "").strip().splitlines()
    summary = doc[0] if doc else ""
    esc = summary.replace("\\", r"\textbackslash{}").replace("&", r"\&").replace("%", r"\%") \
        .replace("_", r"\_").replace("#", r"\#")
    name = program.name.replace("_", r"\_")
    return (f"% {program.name}: generated by optdisco; needs \\usepackage{{amsmath}}\n"
            f"\\paragraph{{{name}}} {esc}\n\\[\n{program.latex()}\n\\]\n")


def to_markdown(program: Program) -> str:
    """A Markdown page: summary, metadata, the rule text, and its equations."""
    doc = (program.docstring or "").strip().splitlines()
    lines = [f"# {program.name}", ""]
    if doc:
        lines += [doc[0], ""]
    for key, value in program.metadata:
        lines.append(f"- **{key}**: {value}")
    if program.metadata:
        lines.append("")
    states = ", ".join(program.state_names) or "none"
    lines += [f"State tensors per parameter: {len(program.state_names)} ({states})", "",
              "```python", program.source().rstrip(), "```", "",
              "$$", program.latex(), "$$", ""]
    return "\n".join(lines)


def export(program: Program, fmt: str) -> str:
    """The program in format ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "torch":
        return to_torch(program)
    if fmt == "optax":
        return to_optax(program)
    if fmt == "latex":
        return to_latex(program)
    if fmt == "markdown":
        return to_markdown(program)
    raise ValueError(f"unknown export format '{fmt}'; choose one of {', '.join(FORMATS)}")
