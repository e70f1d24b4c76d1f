"""Static shapes of rule values: which values are shaped like w, like a factor, or smaller.

Every value of a rule has one of these shapes, fixed by the text (never by the data):

* ``scalar``: one value per parameter tensor (literals, hyperparameters, ``step``, ``lr``,
  reductions, ``per_tensor`` states);
* ``per_row`` / ``per_col``: constant along each row / column of w's matrix view
  (``row_mean``, ``col_mean``, states so declared);
* ``param``: shaped like w (``w``, ``g``, ``randn()``, undeclared states);
* ``left_factor`` / ``right_factor``: rows x rows / cols x cols of the matrix view.

The first four broadcast against each other (the join of ``per_row`` and ``per_col`` is
``param``); a factor combines elementwise only with scalars and its own shape. The parser
rejects any other mix with a :class:`ShapeError` that names the offending call.

A ``per_group`` state is a scalar too, and one value for the whole param group: it may be
assigned only a *group-uniform* value (:func:`optdisco.dsl.parser.group_uniform`: built from literals,
hyperparameters, ``lr``, ``per_group`` states and group built-ins; not ``step``, which
counts each parameter's own updates).

Storage: a state is kept at its own size (:func:`storage_shape`): a ``per_row`` state of a
``(d0, d1, d2)`` parameter is ``(d0, 1, 1)``, so that it broadcasts against w as it is.
"""

from __future__ import annotations

import math
from typing import Sequence

from .builtins import BUILTINS, STATE_SHAPES

SCALAR, PER_ROW, PER_COL, PARAM = "scalar", "per_row", "per_col", "param"
LEFT, RIGHT = "left_factor", "right_factor"
FACTORS = (LEFT, RIGHT)
#: Shapes that broadcast against w (everything but the factors).
PARAM_LIKE = (SCALAR, PER_ROW, PER_COL, PARAM)
#: The shape of a value that a declared state holds.
STATE_VALUE_SHAPE = {"param": PARAM, "left_factor": LEFT, "right_factor": RIGHT,
                     "per_row": PER_ROW, "per_col": PER_COL, "per_tensor": SCALAR,
                     "per_group": SCALAR}
assert set(STATE_VALUE_SHAPE) == set(STATE_SHAPES)
#: The value shapes a state of each declared shape may be assigned.
ACCEPTS = {PARAM: set(PARAM_LIKE), PER_ROW: {SCALAR, PER_ROW}, PER_COL: {SCALAR, PER_COL},
           SCALAR: {SCALAR}, LEFT: {SCALAR, LEFT}, RIGHT: {SCALAR, RIGHT}}

_DESCRIBE = {SCALAR: "a scalar", PER_ROW: "a per-row value", PER_COL: "a per-column value",
             PARAM: "a w-shaped tensor", LEFT: "a left factor (rows x rows)",
             RIGHT: "a right factor (cols x cols)"}


class ShapeError(Exception):
    """A shape mismatch; ``arg`` is the index of the offending argument, or None for the call."""

    def __init__(self, message: str, arg: int | None = None) -> None:
        super().__init__(message)
        self.arg = arg


def describe(shape: str) -> str:
    """Words for a value shape, for error messages."""
    return _DESCRIBE[shape]


def join(a: str, b: str) -> str | None:
    """The shape of an elementwise combination of shapes ``a`` and ``b`` (None if they do not mix)."""
    if a == b or b == SCALAR:
        return a
    if a == SCALAR:
        return b
    if a in FACTORS or b in FACTORS:
        return None
    return PARAM  # per_row with per_col, or either with param


def _need(shapes: Sequence[str], i: int, wanted: tuple[str, ...], fn: str, what: str) -> None:
    if shapes[i] not in wanted:
        raise ShapeError(f"argument {i + 1} of {fn}() must be {what}, not {describe(shapes[i])}", i)


def result_shape(fn: str, shapes: Sequence[str]) -> str:
    """The shape of ``fn`` applied to arguments of ``shapes``; raises :class:`ShapeError`."""
    kind = BUILTINS[fn].kind
    if kind in ("operator", "elementwise"):
        out = shapes[0] if shapes else SCALAR
        for i, s in enumerate(shapes[1:], 1):
            joined = join(out, s)
            if joined is None:
                raise ShapeError(f"{fn}() cannot combine {describe(out)} with {describe(s)}", i)
            out = joined
        return out
    if kind in ("reduction", "group"):
        return SCALAR
    if kind == "noise":
        return PARAM
    if kind == "matrix":
        _need(shapes, 0, PARAM_LIKE, fn, "shaped like w")
        return {"row_mean": PER_ROW, "col_mean": PER_COL}.get(fn, PARAM)
    factor = "a left or right factor"
    if fn == "lmul":
        _need(shapes, 0, (LEFT,), fn, describe(LEFT))
        _need(shapes, 1, PARAM_LIKE, fn, "shaped like w")
        return PARAM
    if fn == "rmul":
        _need(shapes, 0, PARAM_LIKE, fn, "shaped like w")
        _need(shapes, 1, (RIGHT,), fn, describe(RIGHT))
        return PARAM
    if fn in ("gram_left", "gram_right"):
        _need(shapes, 0, PARAM_LIKE, fn, "shaped like w")
        return LEFT if fn == "gram_left" else RIGHT
    if fn == "inv_root":
        _need(shapes, 0, FACTORS, fn, factor)
        _need(shapes, 1, (SCALAR,), fn, "a scalar")
        _need(shapes, 2, (SCALAR,), fn, "a scalar")
        return shapes[0]
    if fn == "eigenbasis":
        _need(shapes, 0, FACTORS, fn, factor)
        return shapes[0]
    if fn in ("rotate", "unrotate"):
        _need(shapes, 0, (LEFT,), fn, describe(LEFT))
        _need(shapes, 1, PARAM_LIKE, fn, "shaped like w")
        _need(shapes, 2, (RIGHT,), fn, describe(RIGHT))
        return PARAM
    if fn == "every":
        _need(shapes, 0, (SCALAR,), fn, "a scalar (the period)")
        joined = join(shapes[1], shapes[2])
        if joined is None:
            raise ShapeError(f"every() needs one shape for its value and its previous value, got "
                             f"{describe(shapes[1])} and {describe(shapes[2])}", 2)
        return joined
    raise AssertionError(f"no shape rule for built-in '{fn}'")  # pragma: no cover


def matrix_dims(param_shape: Sequence[int]) -> tuple[int, int]:
    """(rows, cols) of the matrix view of a parameter of ``param_shape`` (no batch dims)."""
    rows = param_shape[0] if len(param_shape) >= 2 else 1
    cols = math.prod(param_shape) // rows if rows else 0
    return rows, cols


def storage_shape(declared: str, param_shape: Sequence[int]) -> tuple[int, ...]:
    """The shape a state declared ``declared`` is stored at, for a parameter of ``param_shape``."""
    shape = tuple(param_shape)
    n = len(shape)
    rows, cols = matrix_dims(shape)
    if declared == "param":
        return shape
    if declared == "left_factor":
        return (rows, rows)
    if declared == "right_factor":
        return (cols, cols)
    if declared in ("per_tensor", "per_group"):
        return (1,) * n
    if declared == "per_row":
        return (shape[0],) + (1,) * (n - 1) if n >= 2 else (1,) * n
    if declared == "per_col":
        return (1,) + shape[1:] if n >= 2 else shape
    raise ValueError(f"unknown state shape {declared!r}")


def compact_index(declared: str, ndim: int) -> tuple[slice, ...]:
    """The index that takes a w-shaped broadcast value down to the storage of a state declared
    ``declared`` (``per_row``: the first column; ``per_col``: the first row; ``per_tensor``:
    the first element), over the trailing ``ndim`` parameter dimensions."""
    first, every_ = slice(0, 1), slice(None)
    if declared in ("per_tensor", "per_group"):
        return (first,) * ndim
    if declared == "per_row":
        return (every_,) + (first,) * (ndim - 1) if ndim >= 2 else (first,) * ndim
    if declared == "per_col":
        return (first,) + (every_,) * (ndim - 1) if ndim >= 2 else (every_,) * ndim
    return ()


#: The parameter shape memory figures of rules with matrix states are quoted for.
MEMORY_REFERENCE_SHAPE = (1024, 4096)


def state_elements(declared: Sequence[str], param_shape: Sequence[int]) -> int:
    """State entries kept for one parameter of ``param_shape`` by states declared ``declared``
    (e.g. ``[program.state_shape(n) for n in program.state_names]``)."""
    return sum(math.prod(storage_shape(d, param_shape)) for d in declared)

