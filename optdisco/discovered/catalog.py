"""The catalog: every known rule (``known/*.rule``) and every found one (``found/*.rule``).

A rule file holds one rule-language function ``def name(w, g, ...)`` in ``name.rule``.
Its docstring is a one-line summary, a blank line, then ``Key: value`` lines (a value may
continue on indented lines)::

    Paper: authors, "title", venue, arXiv id
    Year: 2023
    Formula: the paper's update in plain math
    Defaults: lr=1e-4, beta1=0.9, ...
    Origin: known            (or found, with provenance keys)
    Notes: where the rule differs from the paper

:func:`get` returns the parsed :class:`~optdisco.dsl.Program` with these facts in
``Program.metadata`` (plus ``Summary`` and ``Source``, the file it came from). Files are
read from the installed package through :mod:`importlib.resources`, parsed once, cached.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from ..dsl import DSLError, Program, parse

#: Catalog folders inside the package, in lookup order.
FOLDERS = ("known", "found")
#: Docstring keys every rule file must have.
REQUIRED_KEYS = ("Paper", "Year", "Formula", "Defaults", "Origin", "Notes")
#: Extra docstring keys every found rule must have.
FOUND_KEYS = ("Campaign",)

_KEY_LINE = re.compile(r"^([A-Z][A-Za-z0-9_]*):\s?(.*)$")


class UnknownRule(KeyError):
    """A name that is not in the catalog; the message lists close matches."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = (f"did you mean {', '.join(repr(c) for c in self.close)}?" if self.close
                else "see optdisco.catalog.names()")
        self.message = f"no rule named {name!r} in the catalog ({hint})"
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError would print the repr of the message
        return self.message


class CatalogError(DSLError):
    """A rule file in the catalog that is malformed (wrong name, missing docstring keys)."""


@dataclass(frozen=True)
class Entry:
    """One catalog rule: its name, origin (known or found), summary, paper and state count."""

    name: str
    origin: str
    summary: str
    paper: str
    year: str
    states: tuple[str, ...]
    hyperparameters: tuple[tuple[str, float], ...]


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """Split a catalog docstring into its one-line summary and its ``Key: value`` facts.

    Continuation lines (indented or not starting with ``Key:``) are joined to the value
    before them with a space.
    """
    lines = [ln.strip() for ln in (doc or "").strip().splitlines()]
    if not lines or not lines[0]:
        return "", {}
    summary, facts, key = lines[0], {}, None
    for line in lines[1:]:
        if not line:
            key = None
            continue
        match = _KEY_LINE.match(line)
        if match:
            key = match.group(1)
            facts[key] = match.group(2).strip()
        elif key is not None:
            facts[key] = (facts[key] + " " + line).strip()
        else:
            summary = summary + " " + line  # a summary wrapped over several lines
    return summary, facts


def load_text(name: str, text: str, folder: str, source: str) -> Program:
    """Parse one rule file's text and attach its docstring facts as metadata.

    Raises :class:`CatalogError` when the function name is not ``name`` or a required
    docstring key is missing or empty.
    """
    program = parse(text)
    if program.name != name:
        raise CatalogError(f"{source}: the function is named {program.name!r}, the file {name!r}",
                           hint="name the file <function name>.rule")
    summary, facts = parse_docstring(program.docstring or "")
    if not summary:
        raise CatalogError(f"{source}: the docstring must start with a one-line summary")
    if facts.get("Origin", folder) != folder:
        raise CatalogError(f"{source}: Origin is {facts['Origin']!r} but the file is in {folder}/")
    wanted = REQUIRED_KEYS + (FOUND_KEYS if folder == "found" else ())
    missing = [k for k in wanted if not facts.get(k)]
    if missing:
        raise CatalogError(f"{source}: docstring lacks {', '.join(missing)}",
                           hint="add 'Key: value' lines after the summary")
    return program.with_metadata(Summary=summary, **facts, Source=source)


def _rule_files() -> dict[str, tuple[str, str, str]]:
    """``{name: (folder, text, source)}`` for every ``*.rule`` file shipped in the package."""
    root = resources.files("optdisco.discovered")
    found: dict[str, tuple[str, str, str]] = {}
    for folder in FOLDERS:
        directory = root / folder
        if not directory.is_dir():
            continue
        for item in sorted(directory.iterdir(), key=lambda t: t.name):
            if not item.name.endswith(".rule"):
                continue
            name = item.name[: -len(".rule")]
            source = f"{folder}/{item.name}"
            if name in found:
                raise CatalogError(f"{source}: the name {name!r} is also {found[name][2]}")
            found[name] = (folder, item.read_text(encoding="utf-8"), source)
    return found


@lru_cache(maxsize=1)
def _catalog() -> dict[str, Program]:
    return {name: load_text(name, text, folder, source)
            for name, (folder, text, source) in _rule_files().items()}


def names() -> list[str]:
    """Every rule in the catalog (known and found), sorted."""
    return sorted(_catalog())


def get(name: str) -> Program:
    """The catalog rule ``name`` as a Program with its metadata; :class:`UnknownRule` if absent."""
    catalog = _catalog()
    try:
        return catalog[name]
    except (KeyError, TypeError):
        raise UnknownRule(str(name), sorted(catalog)) from None


def entries() -> list[Entry]:
    """One :class:`Entry` per rule, sorted by name, for listings."""
    out = []
    for name in names():
        p = get(name)
        meta = p.meta
        out.append(Entry(name, meta["Origin"], meta["Summary"], meta["Paper"], meta["Year"],
                         p.state_names, p.hyperparameters))
    return out


def reload() -> None:
    """Forget the cache, so that rule files added or changed since are read again."""
    _catalog.cache_clear()
