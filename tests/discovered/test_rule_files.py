"""The rule files' format: docstrings wrapped at 100 columns, References sections, and found
rules' provenance in a sidecar ``found/<name>.toml``."""

from __future__ import annotations

import json
import tomllib
from importlib import resources

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import optdisco.catalog as catalog  # noqa: E402  (a submodule import, not the lazy attribute)
from optdisco.discovered.catalog import (DESCRIPTION_KEYS, WIDTH, CatalogError, docstring_lines,
                                         field_lines, load_text, parse_docstring, parse_sidecar,
                                         record_provenance, rule_file_text, rule_files_text,
                                         sidecar_text)

ROOT = resources.files("optdisco.discovered")
RULE_FILES = sorted([*(ROOT / "known").iterdir(), *(ROOT / "found").iterdir()], key=lambda f: f.name)
RULE_FILES = [f for f in RULE_FILES if f.name.endswith(".rule")]
FOUND = [f for f in RULE_FILES if f.parent.name == "found"]
#: Notes longer than this belong in the References section.
SHORT_NOTES = 400


def docstring_region(text: str) -> list[str]:
    start = text.index('"""')
    end = text.index('"""', start + 3) + 3
    first = text.rfind("\n", 0, start) + 1
    return text[first:end].split("\n")


@pytest.mark.parametrize("path", RULE_FILES, ids=[f.name for f in RULE_FILES])
def test_every_docstring_line_is_at_most_100_columns(path):
    lines = docstring_region(path.read_text(encoding="utf-8"))
    assert len(lines) > 3
    too_long = [(i, len(ln)) for i, ln in enumerate(lines) if len(ln) > WIDTH]
    assert not too_long, f"{path.name}: docstring lines (index, columns) over {WIDTH}: {too_long}"
    assert all(ln == ln.rstrip() for ln in lines), f"{path.name}: trailing whitespace"


@pytest.mark.parametrize("path", RULE_FILES, ids=[f.name for f in RULE_FILES])
def test_continuation_lines_are_4_deeper_and_notes_are_short(path):
    lines = docstring_region(path.read_text(encoding="utf-8"))[1:-1]
    depth = None
    for ln in lines:
        if not ln.strip():
            depth = None
            continue
        indent = len(ln) - len(ln.lstrip())
        if ln.strip().split(":")[0].isidentifier() and ln.strip()[0].isupper() and indent == 4:
            depth = 4
        elif depth is not None:
            assert indent == depth + 4, f"{path.name}: {ln!r}"
    meta = catalog.get(path.name[: -len(".rule")]).meta
    assert len(meta.get("Notes", "")) <= SHORT_NOTES, f"{path.name}: move the long explanation to References"


def test_parser_joins_continuation_lines_even_when_one_looks_like_a_field():
    doc = ("Summary that is long\n        and continues.\n\n"
           "    Notes: The first line of the notes,\n"
           "        Peer: pytorch_optimizer.X(a=1), still the notes\n"
           "    Year: 2020\n\n"
           "    References:\n"
           "        arXiv:1234.5678; the\n"
           "        longer explanation.\n    ")
    summary, facts = parse_docstring(doc)
    assert summary == "Summary that is long and continues."
    assert facts == {"Notes": "The first line of the notes, Peer: pytorch_optimizer.X(a=1), still the notes",
                     "Year": "2020", "References": "arXiv:1234.5678; the longer explanation."}


WORDS = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters='"\\'),
                min_size=1, max_size=30)
VALUES = st.lists(WORDS, min_size=1, max_size=60).map(" ".join)


@settings(max_examples=30, deadline=None)
@given(summary=VALUES, notes=VALUES, formula=st.lists(VALUES, min_size=1, max_size=6).map("; ".join),
       references=VALUES)
# a statement longer than a line whose first word does not fit after the one before it
@example(summary="0", notes="0", references="0",
         formula="0; 0 0 0 000 0000000000; 0 000 0000; 000000 0000000000000; 0000000000 00000000000; "
                 "00000 0000000000 0000000000 0 0 0 0 0 0 000 0000 0000 000000000 00000000000 00000000000000000")
def test_wrapped_docstring_parses_back_to_its_facts(summary, notes, formula, references):
    facts = {"Formula": formula, "Defaults": "lr=0.1", "Notes": notes, "References": references}
    lines = docstring_lines(summary, facts)
    assert all(len(ln) <= WIDTH for ln in lines), lines
    doc = "\n".join(lines)[len('    """'): -len('"""')]
    got_summary, got = parse_docstring(doc)
    assert got_summary == summary
    assert got == facts


def test_formula_lines_break_between_statements_where_one_fits():
    stmts = [f"m{k} <- beta * m{k} + (1 - beta) * g" for k in range(6)] + ["w <- w - lr * m0"]
    lines = field_lines("Formula", "; ".join(stmts), unit_separator="; ")
    assert all(ln.endswith(";") for ln in lines[:-1]) and len(lines) > 1
    assert all(len(ln) <= WIDTH for ln in lines)
    assert lines[1].startswith("        m")


def test_every_found_rule_keeps_its_provenance_in_a_sidecar():
    assert FOUND
    sidecars = {f.name[: -len(".toml")] for f in (ROOT / "found").iterdir() if f.name.endswith(".toml")}
    assert sidecars == {f.name[: -len(".rule")] for f in FOUND}  # no sidecar without its rule
    for path in FOUND:
        name = path.name[: -len(".rule")]
        sidecar = path.parent / f"{name}.toml"
        assert sidecar.is_file(), f"{path.name} has no sidecar"
        _, doc_facts = parse_docstring(catalog.get(name).docstring or "")
        assert set(doc_facts) <= set(DESCRIPTION_KEYS), f"{path.name}: provenance in the docstring"
        provenance = tomllib.loads(sidecar.read_text(encoding="utf-8"))
        assert "Campaign" in provenance and all(isinstance(v, str) for v in provenance.values())
        meta = catalog.get(name).meta
        assert {k: meta[k] for k in provenance} == provenance  # merged into the metadata
    qh = catalog.get("found_qh_momentum").meta
    assert qh["StageHeldout"].startswith("-0.0277") and qh["ValidationCpu"].startswith("2026-11-29")


def test_sidecar_round_trips_any_string_and_refuses_bad_ones(tmp_path):
    provenance = {"Campaign": 'a "quoted" \\ path:42 é', "Date": "2026-11-29", "StageHeldout": "+0.1 [x]"}
    assert parse_sidecar(sidecar_text(provenance), "x.toml") == provenance
    with pytest.raises(CatalogError, match="must be a string"):
        parse_sidecar("Fitness = 0.5\n", "x.toml")
    with pytest.raises(CatalogError, match="not a provenance key"):
        parse_sidecar('Formula = "w <- w"\n', "x.toml")
    with pytest.raises(CatalogError, match="not TOML"):
        parse_sidecar("Campaign = \n", "x.toml")


def test_found_rule_and_sidecar_load_together_and_a_key_in_both_is_an_error():
    lion = catalog.get("lion")
    facts = {"Formula": "w <- w - lr * u", "Defaults": "lr=1e-4", "Origin": "found",
             "Notes": "short", "Campaign": "runs/demo.sqlite:42", "StageHeldout": "+0.01"}
    text, sidecar = rule_files_text(lion, "A rediscovered Lion.", facts)
    assert "Campaign" not in text and "StageHeldout" not in text and '"found"' not in sidecar
    provenance = parse_sidecar(sidecar, "found/lion.toml")
    assert provenance == {"Campaign": "runs/demo.sqlite:42", "StageHeldout": "+0.01"}
    found = load_text("lion", text, "found", "found/lion.rule", provenance)
    assert found.meta["Campaign"] == "runs/demo.sqlite:42" and found.meta["Notes"] == "short"
    with pytest.raises(CatalogError, match="Campaign"):  # required, from one place or the other
        load_text("lion", text, "found", "found/lion.rule")
    both = rule_file_text(lion, "A rediscovered Lion.", facts)  # every fact in the docstring
    assert "    Campaign: runs/demo.sqlite:42\n" in both  # one line per field, as campaigns write
    with pytest.raises(CatalogError, match="both in the docstring and in the sidecar"):
        load_text("lion", both, "found", "found/lion.rule", provenance)


def test_record_provenance_sets_one_key_and_keeps_the_others(tmp_path):
    rule = tmp_path / "found_x.rule"
    rule.write_text("unused by record_provenance")
    (tmp_path / "found_x.toml").write_text(sidecar_text({"Campaign": "c.db:1", "Date": "d"}))
    record_provenance(rule, "ValidationCpu", "2026-12-02, 2 seeds")
    record_provenance(rule, "Date", "e")
    assert list(tomllib.loads((tmp_path / "found_x.toml").read_text()).items()) == [
        ("Campaign", "c.db:1"), ("Date", "e"), ("ValidationCpu", "2026-12-02, 2 seeds")]
    with pytest.raises(ValueError):
        record_provenance(rule, "Formula", "x")
    assert json.loads(json.dumps(parse_sidecar((tmp_path / "found_x.toml").read_text(), "x")))
