"""The catalog: every known rule (``known/*.rule``) and every found one (``found/*.rule``).

A rule file holds one rule-language function ``def name(w, g, ...)`` in ``name.rule``.
Its docstring is a one-line summary, a blank line, then ``Key: value`` fields, each line at
most 100 columns; a value continues on lines indented 4 more spaces than its field::

    Paper: authors, "title", venue, arXiv id
    Year: 2023
    Formula: the update in the house notation, generated from the program
        (optdisco.discovered.formula; continuation lines indented by 4 more)
    Defaults: lr=1e-4, beta1=0.9, ...
    Origin: known
    Notes: which peer it matches, with which settings, and what differs (a few lines)

    References:
        the paper(s), the peer implementation it is checked against, the longer explanation

A found rule (in ``found/``) has ``Origin: found``; its docstring is a description like a
known rule's (Formula, Defaults, Origin, a short Notes), and its provenance (``Campaign``,
``Searched``, ``Fitness``, ``Date``, ``Stage*``, ``Recheck``, ``Validation*``, ...) lives in
the sidecar ``found/<name>.toml`` beside it, one string per key. :func:`rule_files_text`
writes both from a Program; :func:`rule_file_text` writes a single file with every fact in
its docstring (what campaigns write outside the catalog, and what :func:`load_text` reads).

:func:`get` returns the parsed :class:`~optdisco.dsl.Program` with these facts (the
docstring's and the sidecar's) in ``Program.metadata``, plus ``Summary`` and ``Source``, the
file it came from. Files are read from the installed package through
:mod:`importlib.resources`, parsed once, cached.
"""

from __future__ import annotations

import difflib
import inspect
import json
import re
import tomllib
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Mapping

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

#: The keys of a rule's description; every other key of a found rule is provenance and
#: lives in its sidecar ``found/<name>.toml``.
DESCRIPTION_KEYS = ("Paper", "Year", "Formula", "Defaults", "Origin", "Notes", "References")
#: Docstring lines are at most this many columns.
WIDTH = 100

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

    The summary may continue on indented lines. A line indented deeper than the field before
    it continues that field's value, as does an unindented line that does not start with
    ``Key:``; continuation lines are joined to the value with one space each. A blank line
    ends a field.
    """
    lines = inspect.cleandoc(doc or "").splitlines()
    if not lines or not lines[0].strip():
        return "", {}
    summary, facts = lines[0].strip(), {}
    key: str | None = None
    key_depth, in_summary = 0, True
    for raw in lines[1:]:
        line, depth = raw.strip(), len(raw) - len(raw.lstrip())
        if not line:
            key, in_summary = None, False
            continue
        if in_summary and depth > 0:
            summary = summary + " " + line
            continue
        in_summary = False
        match = None if (key is not None and depth > key_depth) else _KEY_LINE.match(line)
        if match:
            key, key_depth = match.group(1), depth
            facts[key] = match.group(2).strip()
        elif key is not None:
            facts[key] = (facts[key] + " " + line).strip()
        else:
            summary = summary + " " + line  # a summary wrapped over several lines
    return summary, facts


def parse_sidecar(text: str, source: str) -> dict[str, str]:
    """The provenance of a found rule from its sidecar TOML: ``{key: value}``, strings only.

    Raises :class:`CatalogError` for text that is not TOML, a value that is not a string,
    or a key that is not a capitalized word or names a description field."""
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CatalogError(f"{source}: not TOML ({e})") from None
    for key, value in table.items():
        if not isinstance(value, str):
            raise CatalogError(f"{source}: {key} must be a string, got {type(value).__name__}")
        if not _KEY_LINE.match(f"{key}: x") or key in DESCRIPTION_KEYS:
            raise CatalogError(f"{source}: {key!r} is not a provenance key",
                               hint=f"keys are capitalized words other than {', '.join(DESCRIPTION_KEYS)}")
    return dict(table)


def sidecar_text(provenance: Mapping[str, str]) -> str:
    """A found rule's provenance as sidecar TOML: one ``Key = "value"`` line per fact, in order."""
    # a JSON string with ensure_ascii is a valid TOML basic string (same escapes)
    return "".join(f"{key} = {json.dumps(' '.join(value.split()))}\n" for key, value in provenance.items())


def split_facts(facts: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``(description, provenance)``: the facts a docstring keeps and those a sidecar holds."""
    description = {k: v for k, v in facts.items() if k in DESCRIPTION_KEYS}
    return description, {k: v for k, v in facts.items() if k not in DESCRIPTION_KEYS}


def load_text(name: str, text: str, folder: str, source: str,
              provenance: Mapping[str, str] | None = None) -> Program:
    """Parse one rule file's text and attach its docstring facts, then ``provenance`` (a
    found rule's sidecar, :func:`parse_sidecar`), as metadata.

    Raises :class:`CatalogError` when the function name is not ``name``, a required key is
    missing or empty, or a key is both in the docstring and in the sidecar.
    """
    program = parse(text)
    if program.name != name:
        raise CatalogError(f"{source}: the function is named {program.name!r}, the file {name!r}",
                           hint="name the file <function name>.rule")
    summary, facts = parse_docstring(program.docstring or "")
    twice = sorted(set(facts) & set(provenance or {}))
    if twice:
        raise CatalogError(f"{source}: {', '.join(twice)} both in the docstring and in the sidecar")
    facts.update(provenance or {})
    if not summary:
        raise CatalogError(f"{source}: the docstring must start with a one-line summary")
    if facts.get("Origin", folder) != folder:
        raise CatalogError(f"{source}: Origin is {facts['Origin']!r} but the file is in {folder}/")
    missing = [k for k in REQUIRED_KEYS[folder] if not facts.get(k)]
    if missing:
        raise CatalogError(f"{source}: docstring lacks {', '.join(missing)}",
                           hint="add 'Key: value' lines after the summary")
    return program.with_metadata(Summary=summary, **facts, Source=source)


def field_lines(key: str, value: str, indent: str = "    ", unit_separator: str | None = None,
                width: int = WIDTH) -> list[str]:
    """``Key: value`` as docstring lines of at most ``width`` columns (``indent`` included),
    continuation lines 4 spaces deeper than the field.

    With ``unit_separator`` (``"; "`` for a Formula) a line breaks after a separator where
    one fits, so that a unit (a statement) stays on one line unless it is longer than one.
    Words are never broken, so :func:`parse_docstring`'s join (one space) gives back
    ``value`` with its whitespace runs made single spaces."""
    import textwrap  # only writers need it

    def wrap(text: str, first: str) -> list[str]:
        return textwrap.wrap(text, width=width, initial_indent=first, subsequent_indent=indent + "    ",
                             break_long_words=False, break_on_hyphens=False)

    value = " ".join(value.split())
    if not unit_separator:
        return wrap(f"{key}: {value}", indent)
    glue = unit_separator.rstrip()
    parts = value.split(unit_separator)
    units = [u + glue for u in parts[:-1]] + parts[-1:]
    lines: list[str] = []
    line = f"{indent}{key}:"
    for unit in units:
        if len(f"{line} {unit}") <= width:
            line = f"{line} {unit}"
        elif len(f"{indent}    {unit}") <= width:
            lines.append(line)
            line = f"{indent}    {unit}"
        else:  # longer than a line: fill the current line (if its first word fits), then wrap
            if len(f"{line} {unit.split(' ', 1)[0]}") > width:
                lines.append(line)
                line = f"{indent}   "  # the wrap below adds the space before the unit
            wrapped = wrap(unit, line + " ")
            lines.extend(wrapped[:-1])
            line = wrapped[-1]
    return [*lines, line]


def _section_lines(value: str, width: int) -> list[str]:
    """A section's prose under its ``Key:`` line, wrapped at ``width``, indented 8."""
    import textwrap  # only writers need it

    return textwrap.wrap(" ".join(value.split()), width=width, initial_indent="        ",
                         subsequent_indent="        ", break_long_words=False, break_on_hyphens=False)


def docstring_lines(summary: str, facts: Mapping[str, str], width: int = WIDTH) -> list[str]:
    """A catalog docstring as the rule file's lines, from the opening quotes (``    \"\"\"``
    and the summary, wrapped) to the closing ones: a blank line, the fields in order (the
    Formula broken between statements), and ``References`` as a section of its own.

    Every line is at most ``width`` columns unless one word is longer."""
    import textwrap  # only writers need it

    if "\n" in summary or not summary.strip():
        raise ValueError("the summary must be one non-empty line")
    lines = textwrap.wrap(" ".join(summary.split()), width=width, initial_indent='    """',
                          subsequent_indent="        ", break_long_words=False, break_on_hyphens=False)
    lines.append("")
    for key, value in facts.items():
        if not _KEY_LINE.match(f"{key}: x") or "\n" in value:
            raise ValueError(f"bad fact {key!r}: keys are capitalized words, values one line")
        if key != "References":
            lines.extend(field_lines(key, value, unit_separator="; " if key == "Formula" else None,
                                     width=width))
    if facts.get("References"):
        lines.extend(["", "    References:", *_section_lines(facts["References"], width)])
    return [*lines, '    """']


def rule_file_text(program: Program, summary: str, facts: Mapping[str, str],
                   width: int | None = None) -> str:
    """The text of a rule file for ``program``: its docstring (:func:`docstring_lines`)
    rebuilt from ``facts``, wrapped at ``width`` columns, or one line per field when None
    (the files campaigns write outside the catalog, which tools grep line by line).

    ``summary`` is the one-line summary; ``facts`` the ``Key: value`` fields (for a found
    rule at least Formula, Defaults, Origin="found" and Campaign). The result parses back
    to ``program`` (docstring aside) and loads with :func:`load_text`.
    """
    lines = docstring_lines(summary, facts, width or 10**9)
    doc = "\n".join([lines[0][len('    """'):], *lines[1:-1]]) + "\n    "
    return replace(program, docstring=doc, metadata=()).source()


def rule_files_text(program: Program, summary: str, facts: Mapping[str, str]) -> tuple[str, str]:
    """``(rule file text, sidecar TOML text)`` of a found rule for the catalog's ``found/``:
    the docstring keeps the description (:data:`DESCRIPTION_KEYS`), the sidecar the rest."""
    description, provenance = split_facts(facts)
    return rule_file_text(program, summary, description, WIDTH), sidecar_text(provenance)


def sidecar_path(rule_path: str | Path) -> Path:
    """The sidecar of a found rule file: ``<name>.toml`` beside ``<name>.rule``."""
    return Path(rule_path).with_suffix(".toml")


def record_provenance(rule_path: str | Path, key: str, value: str) -> Path:
    """Set provenance ``key`` (``ValidationCpu``, say) of the found rule at ``rule_path`` in
    its sidecar, created if absent, other keys kept in order; returns the sidecar's path."""
    if not _KEY_LINE.match(f"{key}: x") or key in DESCRIPTION_KEYS:
        raise ValueError(f"{key!r} is not a provenance key")
    path = sidecar_path(rule_path)
    facts = parse_sidecar(path.read_text(encoding="utf-8"), str(path)) if path.is_file() else {}
    facts[key] = value
    path.write_text(sidecar_text(facts), encoding="utf-8")
    return path


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


def _sidecar(folder: str, name: str) -> dict[str, str] | None:
    """The provenance in ``<folder>/<name>.toml`` shipped in the package, else None."""
    item = resources.files("optdisco.discovered") / folder / f"{name}.toml"
    if not item.is_file():
        return None
    return parse_sidecar(item.read_text(encoding="utf-8"), f"{folder}/{name}.toml")


@lru_cache(maxsize=1)
def _catalog() -> dict[str, Program]:
    return {name: load_text(name, text, folder, source, _sidecar(folder, name))
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
