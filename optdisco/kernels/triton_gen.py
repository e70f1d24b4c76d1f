"""Rule -> Triton source: one fused kernel per pass, over a table of tensors.

A group of parameters is described by three tables (built in
:mod:`optdisco.kernels.triton_backend`):

* ``ptrs``  int64 [T, P]: the addresses of each tensor's w, g and states;
* ``chunks`` int64 [C, 4]: per program, (tensor index, first element, numel, base), where
  ``base`` is the tensor's offset in the group's flat index space (for scratch buffers and
  the counter of ``randn``);
* ``scal``  [H + T * S] in the compute dtype: lr and the hyperparameters, then per tensor
  step, numel and the reduction results.

Pass ``p < final`` computes the arguments of the level-``p`` reductions (per-program partial
sums into ``partials``) and matrix built-ins (into flat scratch buffers); torch finishes
them between launches. The final pass loads w, g and the states once, computes the update
and every new state in registers, and stores the changed ones in place.
"""

from __future__ import annotations

from .plan import Op, Plan

TL_DTYPE = {"float32": "tl.float32", "float64": "tl.float64", "bfloat16": "tl.bfloat16",
            "float16": "tl.float16"}

EXPR = {
    "add": "({0} + {1})", "sub": "({0} - {1})", "mul": "({0} * {1})", "div": "tl.div_rn({0}, {1})",
    "pow": "pow_({0}, {1})", "neg": "(-{0})",
    "abs": "tl.abs({0})", "sign": "sign_({0})", "sqrt": "tl.sqrt_rn({0})",
    "rsqrt": "tl.rsqrt({0})", "exp": "tl.exp({0})", "log": "tl.log({0})",
    "square": "({0} * {0})", "tanh": "tanh_({0})",
    "relu": "tl.maximum({0}, 0.0, propagate_nan=tl.PropagateNan.ALL)",
    "clip": "tl.minimum(tl.maximum({0}, -{1}, propagate_nan=tl.PropagateNan.ALL), {1}, "
            "propagate_nan=tl.PropagateNan.ALL)",
    "maximum": "tl.maximum({0}, {1}, propagate_nan=tl.PropagateNan.ALL)",
    "minimum": "tl.minimum({0}, {1}, propagate_nan=tl.PropagateNan.ALL)",
    "interp": "((1.0 - {2}) * {0} + {2} * {1})",
    "gt": "tl.where({0} > {1}, 1.0, 0.0)", "where": "tl.where({0} > 0.0, {1}, {2})",
    "floor": "tl.floor({0})", "cosine": "tl.cos({0})",
}

#: pow with these literal exponents is written exactly (as torch computes them).
POW_LITERAL = {1.0: "{0}", 2.0: "({0} * {0})", 3.0: "({0} * {0} * {0})", 0.5: "tl.sqrt_rn({0})",
               -1.0: "tl.div_rn(1.0, {0})"}

#: The seed changes every step: never specialize the kernel on its value.
JIT = '@triton.jit(do_not_specialize=["seed"])'

#: Columns of a tensor's row in ``scal`` before the reduction results.
ROW_STEP, ROW_NUMEL, ROW_FIXED = 0, 1, 2


class Layout:
    """Where each runtime value lives: pointer columns, scal slots, reduction columns, scratch."""

    def __init__(self, plan: Plan, quantized: tuple[str, ...] = ()) -> None:
        prog = plan.program
        self.ptr_cols = {n: i for i, n in enumerate(("w", "g") + prog.state_names)}
        self.quantized = tuple(s for s in prog.state_names if s in quantized)
        #: 8-bit states also have a column with the address of their block scales.
        self.absmax_cols = {s: len(self.ptr_cols) + k for k, s in enumerate(self.quantized)}
        self.hyper_slots = {n: i for i, n in enumerate(("lr",) + prog.hyperparameter_names)}
        reductions = [op for op in plan.live_ops() if op.kind == "reduction" and op.fn != "numel"]
        self.red_cols = {op.id: ROW_FIXED + j for j, op in enumerate(reductions)}
        self.row_len = ROW_FIXED + len(reductions)
        self.matrix_ops = [op.id for op in plan.live_ops() if op.kind == "matrix"]
        self.levels = plan.levels


def needed_ops(plan: Plan, roots: list[int], level: int) -> list[Op]:
    """Ops computed in a pass: ancestors of ``roots``, stopping at finished reductions/matrix ops."""
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        op = plan.ops[i]
        finished = op.kind in ("reduction", "matrix") and op.level <= level
        if not finished and op.fn != "numel":
            stack.extend(op.args)
    return [plan.ops[i] for i in sorted(seen)]


def _with_alignment_hints(lines: list[str]) -> list[str]:
    """Tell the compiler that tensor addresses are 16-byte aligned and each chunk is BLOCK
    contiguous elements from a multiple of BLOCK, so loads and stores vectorize. Addresses
    read from a table are otherwise of unknown alignment (one element per access)."""
    out = []
    for line in lines:
        if line.startswith("    offs = start + tl.arange(0, BLOCK)"):
            line = "    offs = tl.max_contiguous(tl.multiple_of(start + tl.arange(0, BLOCK), BLOCK), BLOCK)"
        out.append(line)
        head = line.strip().split(" = ")[0]
        if head.startswith(("p_", "a_")) and "tl.pointer_type" in line:
            out.append(f"    {head} = tl.multiple_of({head}, 16)")
    return out


def generate(plan: Plan, *, w_dtype: str, g_dtype: str, compute_dtype: str,
             stochastic_rounding: bool = False, quantized: tuple[str, ...] = (),
             aligned: bool = False) -> str:
    """Python source defining ``pass_1 ... pass_L`` and ``final`` Triton kernels for ``plan``.

    States named in ``quantized`` are read and written in the 8-bit blockwise format of
    :mod:`optdisco.kernels.quant8` (BLOCK must then be a multiple of its block size).
    ``aligned``: every address is 16-byte aligned (the caller checks), so the kernels may
    say so to the compiler and use vector loads.
    """
    prog = plan.program
    lay = Layout(plan, quantized)
    cdt = TL_DTYPE[compute_dtype]
    out = [
        f'"""Fused Triton kernels for rule {prog.name!r}; generated by optdisco.kernels.triton_gen.',
        "",
        f"w: {w_dtype}, g: {g_dtype}, states and arithmetic: {compute_dtype}"
        + (", stochastic rounding of w" if stochastic_rounding else "")
        + (f", 8-bit states: {', '.join(lay.quantized)}" if lay.quantized else "")
        + (", 16-byte aligned addresses" if aligned else "") + ".",
        '"""',
        *["# " + line if line else "#" for line in prog.source().rstrip().splitlines()],
        "import triton",
        "import triton.language as tl",
        "",
        "from optdisco.kernels.triton_lib import (_div64, dequantize8, pow_, sign_, store_quantized8, tanh_,",
        "                                        to_bf16_rne, to_bf16_stochastic)",
        "",
    ]
    dtypes = {"w": w_dtype, "g": g_dtype, **{s: compute_dtype for s in prog.state_names}}
    scratch_args = [f"marg{j}, mres{j}" for j in range(len(lay.matrix_ops))]
    sig = ", ".join(["ptrs", "chunks", "scal", "partials", *scratch_args, "codebook", "seed",
                     "N_PTR: tl.constexpr", "N_HYPER: tl.constexpr", "ROW: tl.constexpr",
                     "N_PART: tl.constexpr", "BLOCK: tl.constexpr", "QB: tl.constexpr",
                     "MASKED: tl.constexpr"])

    def body(level: int, final: bool) -> list[str]:
        if final:
            roots = [plan.update, *plan.states]
        else:
            roots = [a for op in plan.barriers(level) for a in op.args]
        ops = needed_ops(plan, roots, level - 1 if not final else lay.levels)
        lines = [
            "    c = tl.program_id(0)",
            "    t = tl.load(chunks + c * 4)",
            "    start = tl.load(chunks + c * 4 + 1)",
            "    n = tl.load(chunks + c * 4 + 2)",
            "    offs = start + tl.arange(0, BLOCK)",
            "    if MASKED:  # a tensor's last chunk",
            "        mask = offs < n",
            "    else:  # a full chunk: a constant mask lets loads and stores vectorize",
            "        mask = tl.full([BLOCK], 1, tl.int1)",
            "    flat = tl.load(chunks + c * 4 + 3) + offs  # index in the group's flat space",
            f"    zero = tl.zeros([BLOCK], dtype={cdt})",
            "    row = scal + N_HYPER + t * ROW",
        ]
        names: dict[int, str] = {}
        loaded = {op.fn for op in ops if op.kind == "input" and op.fn in lay.ptr_cols}
        for op in ops:
            v = f"v{op.id}"
            names[op.id] = v
            if op.kind == "input":
                if op.fn in lay.quantized:
                    lines.append(f"    p_{op.fn} = tl.load(ptrs + t * N_PTR + {lay.ptr_cols[op.fn]})"
                                 ".to(tl.pointer_type(tl.uint8))")
                    lines.append(f"    a_{op.fn} = tl.load(ptrs + t * N_PTR + {lay.absmax_cols[op.fn]})"
                                 ".to(tl.pointer_type(tl.float32))")
                    expr = f"dequantize8(p_{op.fn}, a_{op.fn}, offs, mask, codebook, QB).to({cdt})"
                elif op.fn in lay.ptr_cols:
                    col = lay.ptr_cols[op.fn]
                    lines.append(f"    p_{op.fn} = tl.load(ptrs + t * N_PTR + {col}).to("
                                 f"tl.pointer_type({TL_DTYPE[dtypes[op.fn]]}))")
                    expr = f"tl.load(p_{op.fn} + offs, mask=mask, other=0.0).to({cdt})"
                elif op.fn == "step":
                    expr = f"tl.load(row + {ROW_STEP})"
                else:
                    expr = f"tl.load(scal + {lay.hyper_slots[op.fn]})"
            elif op.kind == "const":
                expr = f"tl.full([], {op.value!r}, {cdt})"
            elif op.fn == "numel":
                expr = f"tl.load(row + {ROW_NUMEL})"
            elif op.fn == "randn":
                expr = f"tl.randn(seed + {op.draw}, flat.to(tl.int32)).to({cdt})"
            elif op.kind == "reduction":
                expr = f"tl.load(row + {lay.red_cols[op.id]})"
            elif op.kind == "matrix":
                j = lay.matrix_ops.index(op.id)
                expr = f"tl.load(mres{j} + flat, mask=mask, other=0.0)"
            elif op.fn == "pow" and plan.ops[op.args[1]].kind == "const" \
                    and plan.ops[op.args[1]].value in POW_LITERAL:
                expr = POW_LITERAL[plan.ops[op.args[1]].value].format(names[op.args[0]])
            else:
                expr = EXPR[op.fn].format(*[names[a] for a in op.args])
            if compute_dtype == "float64":  # the _rn forms are float32-only; fp64 is IEEE anyway
                expr = expr.replace("tl.sqrt_rn(", "tl.sqrt(").replace("tl.div_rn(", "_div64(")
            lines.append(f"    {v} = {expr}  # {op.fn}")
        if final:
            lines.append("")
            w_val = names.get(next((o.id for o in ops if o.kind == 'input' and o.fn == 'w'), -1))
            if w_val is None:
                lines.append("    p_w = tl.load(ptrs + t * N_PTR + 0).to("
                             f"tl.pointer_type({TL_DTYPE[w_dtype]}))")
                lines.append(f"    w_old = tl.load(p_w + offs, mask=mask, other=0.0).to({cdt})")
                w_val = "w_old"
            lines.append(f"    w_new = {w_val} - tl.load(scal + 0) * {names[plan.update]}")
            for s, sid in zip(prog.state_names, plan.states):
                op = plan.ops[sid]
                if op.kind == "input" and op.fn == s:
                    continue  # unchanged: no store
                if s in lay.quantized:
                    if s not in loaded:
                        lines.append(f"    p_{s} = tl.load(ptrs + t * N_PTR + {lay.ptr_cols[s]})"
                                     ".to(tl.pointer_type(tl.uint8))")
                        lines.append(f"    a_{s} = tl.load(ptrs + t * N_PTR + {lay.absmax_cols[s]})"
                                     ".to(tl.pointer_type(tl.float32))")
                    lines.append(f"    store_quantized8({names[sid]} + zero, p_{s}, a_{s}, start, offs, mask, n, "
                                 "codebook, BLOCK, QB)")
                    continue
                if s not in loaded:
                    lines.append(f"    p_{s} = tl.load(ptrs + t * N_PTR + {lay.ptr_cols[s]}).to("
                                 f"tl.pointer_type({cdt}))")
                lines.append(f"    tl.store(p_{s} + offs, ({names[sid]} + zero).to({cdt}), mask=mask)")
            if w_dtype == "bfloat16":
                rnd = (f"to_bf16_stochastic(w_new, seed + {plan.n_draws}, flat.to(tl.int32))"
                       if stochastic_rounding else "to_bf16_rne(w_new)")
            elif w_dtype == "float16":
                rnd = 'w_new.to(tl.float16, fp_downcast_rounding="rtne")'
            else:
                rnd = f"w_new.to({TL_DTYPE[w_dtype]})"
            lines.append(f"    tl.store(p_w + offs, {rnd}, mask=mask)")
        else:
            red = [op for op in plan.barriers(level) if op.kind == "reduction"]
            for k, op in enumerate(red):
                x = f"({names[op.args[0]]} + zero)"
                term = f"{x} * {x}" if op.fn in ("norm", "rms") else x
                lines.append(f"    tl.store(partials + c * N_PART + {k}, "
                             f"tl.sum(tl.where(mask, {term}, 0.0), axis=0))  # {op.fn}")
            for op in plan.barriers(level):
                if op.kind == "matrix":
                    j = lay.matrix_ops.index(op.id)
                    lines.append(f"    tl.store(marg{j} + flat, {names[op.args[0]]} + zero, mask=mask)"
                                 f"  # argument of {op.fn}")
        return lines

    for level in range(1, lay.levels + 1):
        out += ["", JIT, f"def pass_{level}({sig}):",
                f'    """Pass {level}: arguments of the level-{level} reductions and matrix built-ins."""']
        out += _with_alignment_hints(body(level, final=False)) if aligned else body(level, final=False)
        out.append("")
    out += ["", JIT, f"def final({sig}):",
            '    """The fused update: load once, compute u and every state, store in place."""']
    final_lines = body(lay.levels + 1, final=True)
    out += _with_alignment_hints(final_lines) if aligned else final_lines
    return "\n".join(out) + "\n"
