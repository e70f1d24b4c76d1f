"""The functional hash that keys the evaluation cache.

Programs that compute the same updates share a key, so the campaign never trains an
equivalent program twice. The key is the language's own :meth:`Program.fingerprint`.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from ..dsl.ir import Program

_memo: dict[str, str] = {}


def fingerprint(p: Program) -> str:
    """The functional hash of ``p`` (:meth:`Program.fingerprint`).

    Memoized by source text: evolution proposes the same text again and again, and a
    fingerprint runs the rule on a few problems (milliseconds, more for matrix built-ins).
    """
    key = p.source()
    hit = _memo.get(key)
    if hit is not None:
        return hit
    out = p.fingerprint()
    if len(_memo) > 100_000:
        _memo.clear()
    _memo[key] = out
    return out


def settings_key(settings: Mapping[str, Any]) -> str:
    """A canonical text for evaluation settings (suite, tasks, seeds, budget): the other half of a cache key."""
    return json.dumps(dict(sorted(settings.items())), sort_keys=True)
