"""A known rule plus one designer move: every one-move edit of a rule, by the search's macros.

The classifier (:mod:`optdisco.search.classify`) calls a found rule "variant of X (+ move)"
when one macro mutation of catalog rule X reaches the found rule's updates. This module lists
those edits: for a rule X, every program that one macro of :data:`DESIGNER_MOVES` makes
from X, each choice of the macro enumerated instead of drawn:

- ``ema``, ``rms_normalize``, ``orthogonalize``, ``interp_gradient``: at every value site
  (:func:`optdisco.search.macro.value_sites`);
- ``squash``: sign, tanh and clip at every value site;
- ``bias_correct``: each moving-average state alone, and all of them together;
- ``nesterov``: each moving-average state;
- ``decoupled_weight_decay``, ``trust_ratio``, ``cautious``: the one way each applies.

The new hyperparameters take the macros' defaults (beta 0.9 or 0.999, eps 1e-8, wd 0.01,
clip at 1); the classifier fits them. The matrix preconditioners of :mod:`.macro`
(``shampoo_precondition``, ``eigenbasis``) are left out: they are off in the default search
space, the catalog holds Shampoo and SOAP themselves, and their probe runs cost ten times
a plain rule's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from ..dsl.errors import DSLError
from ..dsl.fingerprint import eliminate_dead_code
from ..dsl.ir import Program
from ..dsl.printer import expr_source
from .macro import (MACROS, SQUASHES, Site, _node_at, bias_correct, cautious, decoupled_weight_decay, ema,
                    interp_gradient, nesterov, orthogonalize, rms_normalize, squash, trust_ratio, value_sites)
from .mutate import Redraw, Space, checked

#: The designer moves (macro names of :data:`optdisco.search.macro.MACROS`) a composition may use:
#: those of the default search space (``[space] macro_weights`` in defaults.toml).
DESIGNER_MOVES = ("ema", "rms_normalize", "bias_correct", "nesterov", "decoupled_weight_decay", "squash",
                  "trust_ratio", "cautious", "orthogonalize", "interp_gradient")
#: Room for any catalog rule plus one move (the search's own size limits do not apply here).
_ROOM = Space(max_statements=64, max_states=16)
#: Longest subexpression text kept in a move's description.
_TEXT = 32


@dataclass(frozen=True)
class Edit:
    """One move applied to a rule: the macro's name, the move in words, and the edited rule."""

    macro: str
    move: str
    program: Program


def _text(p: Program, site: Site) -> str:
    if site == (-1, ()):
        return "the update"
    s = expr_source(_node_at(p, site))
    return s if len(s) <= _TEXT else s[:_TEXT - 3] + "..."


def _moving_average_states(p: Program) -> list[str]:
    """The states a Nesterov look-ahead applies to (one moving average read after its update)."""
    out = []
    for s in p.state_names:
        try:
            nesterov(p, np.random.default_rng(0), _ROOM, state=s)
        except (Redraw, KeyError):  # not a moving average read after its update
            continue
        out.append(s)
    return out


def _squash_at(x: Program, rng: np.random.Generator, fn: str, site: Site) -> Program:
    return squash(x, rng, _ROOM, site=site, fn=fn)


def one_move_edits(x: Program) -> list[Edit]:
    """Every valid program one designer move makes from ``x`` (dead code removed first), once
    each by source, in the order of :data:`DESIGNER_MOVES` (see the module doc). Each edit
    is re-parsed (``checked``) and differs from ``x``."""
    x = eliminate_dead_code(replace(x, docstring=None))
    rng = np.random.default_rng(0)  # every choice is passed explicitly; a macro's signature wants one
    sites = value_sites(x)
    averages = _moving_average_states(x)
    tries: list[tuple[str, str, Callable[[], Program]]] = []

    def at_sites(macro: str, what: str, make: Callable[[Site], Program]) -> None:
        for site in sites:
            tries.append((macro, what.format(_text(x, site)), partial(make, site)))

    for macro in DESIGNER_MOVES:
        if macro == "ema":
            at_sites(macro, "EMA of {}", lambda s: ema(x, rng, _ROOM, site=s))
        elif macro == "rms_normalize":
            at_sites(macro, "RMS normalization of {}", lambda s: rms_normalize(x, rng, _ROOM, site=s))
        elif macro == "bias_correct":
            for s in averages:
                tries.append((macro, f"bias correction of {s}", partial(bias_correct, x, rng, _ROOM, states=(s,))))
            if len(averages) > 1:
                tries.append((macro, f"bias correction of {', '.join(averages)}",
                              partial(bias_correct, x, rng, _ROOM, states=tuple(averages))))
        elif macro == "nesterov":
            for s in averages:
                tries.append((macro, f"Nesterov look-ahead of {s}", partial(nesterov, x, rng, _ROOM, state=s)))
        elif macro == "decoupled_weight_decay":
            tries.append((macro, "decoupled weight decay", lambda: decoupled_weight_decay(x, rng, _ROOM)))
        elif macro == "squash":
            for fn in SQUASHES:
                at_sites(macro, fn + " of {}", partial(_squash_at, x, rng, fn))
        elif macro == "trust_ratio":
            tries.append((macro, "trust ratio", lambda: trust_ratio(x, rng, _ROOM)))
        elif macro == "cautious":
            tries.append((macro, "cautious mask", lambda: cautious(x, rng, _ROOM)))
        elif macro == "orthogonalize":
            at_sites(macro, "orthogonalized {}", lambda s: orthogonalize(x, rng, _ROOM, site=s))
        elif macro == "interp_gradient":
            at_sites(macro, "{} interpolated with g", lambda s: interp_gradient(x, rng, _ROOM, site=s))
        else:  # a name added to DESIGNER_MOVES without its enumeration here
            raise KeyError(f"no enumeration for macro {macro!r} (known: {sorted(MACROS)})")
    seen = {x.source()}
    out = []
    for macro, move, make in tries:
        try:
            q = checked(make(), _ROOM)
        except (Redraw, DSLError):  # the move does not apply at this choice
            continue
        if q.source() not in seen:
            seen.add(q.source())
            out.append(Edit(macro, move, q))
    return out
