"""Hooks that higher layers fill, so that this layer never imports them.

- the store reader: ``read(db_path, ident) -> Program`` for ``DB:ID`` rule names (the
  search layer's campaign store);
- the learned optimizer: a zero-argument callable returning the class that
  ``Optimizer(params, learned=PATH)`` builds.

``optdisco/__init__.py`` registers both (lazily: nothing above this layer is imported
until a ``DB:ID`` name or ``learned=`` is used).
"""

from __future__ import annotations

from typing import Any, Callable

_store_reader: Callable[[str, str], Any] | None = None
_learned_class: Callable[[], type] | None = None


def set_store_reader(read: Callable[[str, str], Any]) -> None:
    """Register the function that reads program ``ident`` from the campaign store at a path."""
    global _store_reader
    _store_reader = read


def store_reader() -> Callable[[str, str], Any] | None:
    """The registered store reader, or None when no layer above registered one."""
    return _store_reader


def set_learned_optimizer(get_class: Callable[[], type]) -> None:
    """Register the callable that returns the learned optimizer class."""
    global _learned_class
    _learned_class = get_class


def learned_optimizer() -> type | None:
    """The learned optimizer class, or None when no layer above registered one."""
    return _learned_class() if _learned_class is not None else None
