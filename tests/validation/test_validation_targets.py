"""RULE arguments of ``optdisco validate``: a catalog found rule is named, never a file."""

from __future__ import annotations

from validation_helpers import found_rule_file

from optdisco.discovered import catalog
from optdisco.validation import targets


def test_catalog_found_rule_is_named_not_a_file(tmp_path, monkeypatch):
    # A catalog found rule is validated under its name (its results go to the user data
    # directory); no file of the package is a write-back target.
    path = found_rule_file(tmp_path)
    real = catalog._rule_files()
    monkeypatch.setattr(catalog, "_rule_files",
                        lambda: {**real, "found_mom": ("found", path.read_text(), "found/found_mom.rule")})
    catalog.reload()
    try:
        target = targets.resolve_target("found_mom")
        assert target.found_file is None and target.catalog_rule == "found_mom"
        assert target.contender.name == "found_mom"
        assert targets.best_found_rule() == "found_mom"
    finally:
        monkeypatch.undo()
        catalog.reload()
