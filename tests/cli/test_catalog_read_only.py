"""The catalog is read-only at run time: validate records into the user data directory."""

from __future__ import annotations

import hashlib
from pathlib import Path

from optdisco.cli import main

PACKAGE = Path(__file__).resolve().parents[2] / "optdisco"
TINY = ["--task", "ho_quadratic", "--seeds", "2", "--budget", "0.05"]


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root`` (caches aside) with its sha256 and mtime in nanoseconds."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def test_validate_writes_nothing_under_the_package_and_show_merges_the_result(tmp_path, monkeypatch, capsys):
    data = tmp_path / "data"
    monkeypatch.setenv("OPTDISCO_DATA", str(data))
    before = snapshot(PACKAGE / "discovered")
    assert main(["validate", "found_qh_momentum", *TINY, "-o", str(tmp_path / "v.html")]) == 0
    assert snapshot(PACKAGE / "discovered") == before
    recorded = data / "rules" / "found_qh_momentum.json"
    assert recorded.is_file() and "ho_quadratic" in recorded.read_text()
    assert "v.html" in recorded.read_text()
    capsys.readouterr()
    assert main(["show", "found_qh_momentum"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    # The new result, from the data directory, beside the catalog's own lines.
    merged = out.split(f"(recorded in {data})")
    assert len(merged) == 2
    merged_line = merged[0].rsplit("ValidationCpu:", 1)[1]  # the rule file's own line has no ho_quadratic
    assert "ho_quadratic" in merged_line and "vs AdamW" in merged_line
    assert snapshot(PACKAGE / "discovered") == before
