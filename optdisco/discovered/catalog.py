"""The catalog: every known rule (``known/*.rule``) and every found one (``found/*.rule``).

A rule file holds one rule-language function ``def name(w, g, ...)`` in ``name.rule``.
Its docstring is a one-line summary, a blank line, then ``Key: value`` lines (a value may
continue on indented lines)::

    Paper: authors, "title", venue, arXiv id
    Year: 2023
    Formula: the paper's update in plain math
    Defaults: lr=1e-4, beta1=0.9, ...
    Origin: known
    Notes: where the rule differs from the paper

A found rule (in ``found/``) has ``Origin: found`` and instead of Paper/Year/Notes at least
``Campaign:`` (the store and program id it came from) besides Formula and Defaults; any
further provenance keys (validation results, date) are kept as metadata too.
:func:`rule_file_text` writes such a file from a Program.

:func:`get` returns the parsed :class:`~optdisco.dsl.Program` with these facts in
``Program.metadata`` (plus ``Summary`` and ``Source``, the file it came from). Files are
read from the installed package through :mod:`importlib.resources`, parsed once, cached.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources

from ..dsl import DSLError, Program, parse
from ..errors import UserError

#: Catalog folders inside the package, in lookup order.
FOLDERS = ("known", "found")
#: Docstring keys each kind of rule file must have: a known rule cites its paper, a found
#: rule names the campaign (store and program id) it came from.
REQUIRED_KEYS = {
    "known": ("Paper", "Year", "Formula", "Defaults", "Origin", "Notes"),
    "found": ("Formula", "Defaults", "Origin", "Campaign"),
}

_KEY_LINE = re.compile(r"^([A-Z][A-Za-z0-9_]*):\s?(.*)$")


class UnknownRule(KeyError, UserError):
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
    missing = [k for k in REQUIRED_KEYS[folder] if not facts.get(k)]
    if missing:
        raise CatalogError(f"{source}: docstring lacks {', '.join(missing)}",
                           hint="add 'Key: value' lines after the summary")
    return program.with_metadata(Summary=summary, **facts, Source=source)


def rule_file_text(program: Program, summary: str, facts: dict[str, str]) -> str:
    """The text of a catalog rule file for ``program``: its docstring rebuilt from facts.

    ``summary`` is the one-line summary; ``facts`` the ``Key: value`` lines (for a found
    rule at least Formula, Defaults, Origin="found" and Campaign). The result parses back
    to ``program`` (docstring aside) and loads with :func:`load_text`.
    """
    if "\n" in summary or not summary.strip():
        raise ValueError("the summary must be one non-empty line")
    lines = [summary.strip(), ""]
    for key, value in facts.items():
        if not _KEY_LINE.match(f"{key}: x") or "\n" in value:
            raise ValueError(f"bad fact {key!r}: keys are capitalized words, values one line")
        lines.append(f"{key}: {value}")
    doc = "\n    ".join(lines) + "\n    "
    return replace(program, docstring=doc, metadata=()).source()


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
        out.append(Entry(name, meta["Origin"], meta["Summary"], meta.get("Paper", ""),
                         meta.get("Year", ""), p.state_names, p.hyperparameters))
    return out


def reload() -> None:
    """Forget the cache, so that rule files added or changed since are read again."""
    _catalog.cache_clear()
