"""``optdisco catalog-add DB:ID``: the explicit developer step that writes a found rule into a checkout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import optdisco
from optdisco.cli import main
from optdisco.discovered.catalog import load_text, parse_docstring, parse_sidecar
from optdisco.discovered.formula import formula
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
    sidecar = path.with_suffix(".toml")
    # the docstring is a description; the provenance is in the sidecar beside it
    _, doc_facts = parse_docstring(optdisco.parse(path.read_text()).docstring)
    assert set(doc_facts) == {"Formula", "Defaults", "Origin"}
    provenance = parse_sidecar(sidecar.read_text(), "found/found_mom.toml")
    assert provenance["Campaign"].startswith(f"camp.db:{pid} ") and "Date" in provenance
    rule = load_text("found_mom", path.read_text(), "found", "found/found_mom.rule", provenance)
    assert rule.name == "found_mom" and rule.meta["Origin"] == "found"
    assert rule.fingerprint() == optdisco.parse(MOMENTUM).fingerprint()
    assert rule.meta["Formula"] == formula(rule) == "m <- beta * m + g; w <- w - lr * m"
    assert all(len(line) <= 100 for line in path.read_text().split("\n"))
    # never overwritten, the sidecar neither
    assert main(["catalog-add", f"{db}:{pid}", "--name", "found_mom", "--checkout", str(root)]) == 2
    path.unlink()
    assert main(["catalog-add", f"{db}:{pid}", "--name", "found_mom", "--checkout", str(root)]) == 2
    assert not path.exists()


def test_show_prints_a_found_rules_provenance_from_its_sidecar(capsys):
    assert main(["show", "found_qh_momentum"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for key in ("Campaign: sgd.db:120", "StageHeldout: -0.0277", "Recheck:", "ValidationCpu: 2026-11-29",
                "Notes: Quasi-hyperbolic momentum"):
        assert key in out, key


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
