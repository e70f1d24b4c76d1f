"""``optdisco catalog-add DB:ID``: the explicit developer step that writes a found rule into a checkout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import optdisco
from optdisco.cli import main
from optdisco.discovered.catalog import load_text
from optdisco.search.store import Store

MOMENTUM = "def mom(w, g, m, *, beta=0.9):\n    m = beta * m + g\n    return m, m\n"


def store_with_a_found_rule(tmp_path: Path) -> tuple[Path, int]:
    db = tmp_path / "camp.db"
    with Store(db) as store:
        p = optdisco.parse(MOMENTUM)
        pid = store.add_program(p, p.fingerprint(), parent=None, mutation=None, arm="evolution",
                                phase="search", status="done")
        store.set_meta("found", json.dumps([pid]))
    return db, pid


def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    (root / ".git").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'optdisco'\n")
    (root / "optdisco" / "discovered" / "found").mkdir(parents=True)
    return root


def test_catalog_add_writes_a_loadable_found_rule_into_the_checkout(tmp_path):
    db, pid = store_with_a_found_rule(tmp_path)
    root = checkout(tmp_path)
    assert main(["catalog-add", f"{db}:{pid}", "--name", "found_mom", "--checkout", str(root)]) == 0
    path = root / "optdisco" / "discovered" / "found" / "found_mom.rule"
    rule = load_text("found_mom", path.read_text(), "found", "found/found_mom.rule")
    assert rule.name == "found_mom" and rule.meta["Origin"] == "found"
    assert rule.fingerprint() == optdisco.parse(MOMENTUM).fingerprint()
    # never overwritten
    assert main(["catalog-add", f"{db}:{pid}", "--name", "found_mom", "--checkout", str(root)]) == 2


@pytest.mark.parametrize("make_root,spec,name,message", [
    (lambda t: t, "{db}:{pid}", "found_mom", "is not a source checkout"),  # no pyproject.toml / .git
    (checkout, "{db}:999", "found_mom", "is not a found rule"),
    (checkout, "{db}", "found_mom", "is not DB:ID"),
    (checkout, "{db}:{pid}", "mom", "starting with 'found_'"),
])
def test_catalog_add_refuses(make_root, spec, name, message, tmp_path, capsys):
    db, pid = store_with_a_found_rule(tmp_path)
    root = make_root(tmp_path)
    assert main(["catalog-add", spec.format(db=db, pid=pid), "--name", name, "--checkout", str(root)]) == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert not list(Path(root).rglob("*.rule"))
