"""``optdisco.catalog``: the known and found update rules, by name.

``names()`` lists them, ``get(name)`` returns a :class:`~optdisco.dsl.Program` with the
rule's paper, formula, defaults and provenance in ``Program.metadata``; see
:mod:`optdisco.discovered.catalog`.
"""

from .discovered.catalog import (CatalogError, Entry, UnknownRule, entries, get, names,
                                 parse_docstring, reload, rule_file_text)

__all__ = ["names", "get", "entries", "reload", "UnknownRule", "CatalogError", "Entry",
           "parse_docstring", "rule_file_text"]
