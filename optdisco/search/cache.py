"""The functional hash that keys the evaluation cache.

Programs that compute the same updates share a key, so the campaign never trains an
equivalent program twice. The key is the language's own :meth:`Program.fingerprint`;
:func:`structural_key` is the fallback while that is unavailable.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from ..dsl.ir import Call, Const, Expr, Name, Program

_COMMUTATIVE = {"add", "mul", "maximum", "minimum"}


def structural_key(p: Program) -> str:
    """A hash of the resolved update and states with hyperparameters inlined, states numbered
    by position and commutative operands sorted (weaker than the functional fingerprint)."""
    update, states = p.outputs()
    rename = {s: f"s{i}" for i, s in enumerate(p.state_names)}
    hyper = p.hyperparameter_defaults
    memo: dict[int, str] = {}

    def key(e: Expr) -> str:
        hit = memo.get(id(e))
        if hit is not None:
            return hit
        if isinstance(e, Const):
            out = repr(e.value)
        elif isinstance(e, Name):
            out = repr(hyper[e.id]) if e.id in hyper else rename.get(e.id, e.id)
        else:
            assert isinstance(e, Call)
            args = [key(a) for a in e.args]
            if e.fn in _COMMUTATIVE:
                args.sort()
            out = f"{e.fn}({','.join(args)})"
        memo[id(e)] = out
        return out

    text = key(update) + "|" + "|".join(key(s) for s in states)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


_memo: dict[str, str] = {}


def fingerprint(p: Program) -> str:
    """The functional hash of ``p`` (:meth:`Program.fingerprint`, else :func:`structural_key`).

    Memoized by source text: evolution proposes the same text again and again, and a
    fingerprint runs the rule on a few problems (milliseconds, more for matrix built-ins).
    """
    key = p.source()
    hit = _memo.get(key)
    if hit is not None:
        return hit
    try:
        out = p.fingerprint()
    except ImportError:
        out = "structural:" + structural_key(p)
    if len(_memo) > 100_000:
        _memo.clear()
    _memo[key] = out
    return out


def settings_key(settings: Mapping[str, Any]) -> str:
    """A canonical text for evaluation settings (suite, tasks, seeds, budget): the other half of a cache key."""
    return json.dumps(dict(sorted(settings.items())), sort_keys=True)
