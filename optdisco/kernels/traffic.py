"""Bytes a fused step moves, counted from the rule's reads and writes (for bandwidth numbers)."""

from __future__ import annotations

from .plan import Plan
from .triton_gen import needed_ops


def bytes_per_element(plan: Plan, param_bytes: int, grad_bytes: int, state_bytes: int) -> int:
    """Bytes read and written per parameter element by the fused kernels of ``plan``.

    Final pass: reads w, g (if used) and every state it uses, writes w and every state
    whose value changes. Each earlier pass reads the inputs it uses and writes the
    arguments of its matrix built-ins; the final pass reads their results back.
    """
    prog = plan.program
    size = {"w": param_bytes, "g": grad_bytes, **{s: state_bytes for s in prog.state_names}}

    def reads(ops) -> int:
        used = {op.fn for op in ops if op.kind == "input" and op.fn in size}
        return sum(size[n] for n in used)

    total = 0
    for level in range(1, plan.levels + 1):
        roots = [a for op in plan.barriers(level) for a in op.args]
        ops = needed_ops(plan, roots, level - 1)
        total += reads(ops)
        total += state_bytes * sum(op.kind == "matrix" for op in plan.barriers(level))
    final = needed_ops(plan, [plan.update, *plan.states], plan.levels)
    used = {op.fn for op in final if op.kind == "input" and op.fn in size} | {"w"}
    total += sum(size[n] for n in used)
    total += state_bytes * sum(op.kind == "matrix" for op in final)
    changed = [s for s, sid in zip(prog.state_names, plan.states)
               if not (plan.ops[sid].kind == "input" and plan.ops[sid].fn == s)]
    total += param_bytes + state_bytes * len(changed)
    return total
