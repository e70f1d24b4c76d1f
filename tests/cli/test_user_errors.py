"""Every user mistake is one line on stderr with exit code 2; ``--debug`` shows the traceback.

Each case runs the real ``optdisco`` command in a subprocess, as a user would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from optdisco.search.store import Store

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPTDISCO_DATA": str(cwd / "data")}
    return subprocess.run([sys.executable, "-m", "optdisco.cli", *argv], check=False, capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)


def existing_store(tmp_path: Path) -> Path:
    db = tmp_path / "existing.db"
    Store(db).close()
    return db


CASES = {
    "unknown rule": (lambda t: ["show", "lino"], "no rule named 'lino'"),
    "bad rule text": (lambda t: ["show", str(t / "bad.rule")], "line 2"),
    "missing store (report)": (lambda t: ["report", str(t / "MISSING.db")], "MISSING.db"),
    "missing store (resume)": (lambda t: ["search", "--resume", str(t / "MISSING.db")], "MISSING.db"),
    "missing store (DB:ID)": (lambda t: ["show", f"{t / 'MISSING.db'}:3"], "no campaign store"),
    "existing store": (lambda t: ["search", "--db", str(existing_store(t))], "--resume"),
    "bad config file": (lambda t: ["search", str(t / "bad.toml")], "not valid TOML"),
    "unknown config key": (lambda t: ["search", str(t / "typo.toml")], "budgett"),
    "missing config file": (lambda t: ["search", str(t / "nowhere.toml")], "cannot read config file"),
    "unknown task": (lambda t: ["validate", "sgd", "--task", "nope", "-o", str(t / "v.html")],
                     "unknown task 'nope'"),
}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "bad.rule").write_text("def f(w, g):\n    return sgn(g)\n")
    (tmp_path / "bad.toml").write_text("budget = = 3\n")
    (tmp_path / "typo.toml").write_text("budgett = 3\n")
    return tmp_path


@pytest.mark.parametrize("case", list(CASES))
def test_user_error_is_one_line_exit_2(case: str, workdir: Path) -> None:
    argv, expected = CASES[case]
    proc = run_cli(*argv(workdir), cwd=workdir)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("optdisco: error: ") and expected in lines[0], lines[0]


def test_debug_shows_the_traceback(workdir: Path) -> None:
    proc = run_cli("--debug", "report", str(workdir / "MISSING.db"), cwd=workdir)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr and "StoreError" in proc.stderr


def test_a_bug_is_not_dressed_up_as_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # A KeyError from a defect (injected into the catalog listing) must propagate, not exit 2.
    from optdisco import catalog
    from optdisco.cli import main

    def broken() -> list:
        raise KeyError("a bug")
    monkeypatch.setattr(catalog, "entries", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["list"])
