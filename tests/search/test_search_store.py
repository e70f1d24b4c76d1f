"""The campaign store: a round trip of everything it keeps, and clear errors."""

from __future__ import annotations

import sqlite3

import pytest

from optdisco.dsl import DSLError, parse
from optdisco.search.cache import fingerprint
from optdisco.search.store import SCHEMA_VERSION, Store, StoreError, load_program

MOM = "def mom(w, g, m, *, beta=0.9):\n    m = interp(g, m, beta)\n    return m, m\n"


def test_round_trip(tmp_path):
    path = tmp_path / "c.db"
    p = parse(MOM)
    with Store(path) as s:
        with s.transaction():
            s.set_meta("config", "budget = 3\n")
            a = s.add_program(p, fingerprint(p), parent=None, mutation="warm_start", arm="evolution",
                              phase="search")
            b = s.add_program(p.with_hyperparameters({"beta": 0.5}), "fp-b", parent=a,
                              mutation="perturb_constant", arm="evolution", phase="search")
            bid = s.add_batch("search", "{}", [a, b])
            s.batch_submitted(bid)
            s.add_evaluation(a, "search", "{}", {"fitness": 0.25, "ci_low": 0.1, "ci_high": 0.4,
                                                 "per_task": {"quadratic": 0.25}, "curves": {"q": [3.0, 1.0]},
                                                 "seconds": 1.5, "worker": "host:1"}, batch=bid)
            s.complete(a, 0.25)
    with Store(path, create=False) as s:
        assert s.get_meta("schema_version") == str(SCHEMA_VERSION)
        assert s.get_meta("config") == "budget = 3\n"
        ra, rb = s.program(a), s.program(b)
        assert ra.program() == p and ra.fingerprint == fingerprint(p) and ra.seq == 0 and ra.fitness == 0.25
        assert rb.parent == a and rb.mutation == "perturb_constant" and rb.seq is None
        assert [r.id for r in s.lineage(b)] == [b, a]
        (ev,) = s.evaluations(a)
        assert ev["per_task"] == {"quadratic": 0.25} and ev["curves"] == {"q": [3.0, 1.0]}
        assert ev["seconds"] == 1.5 and ev["worker"] == "host:1" and ev["batch"] == bid
        assert [x["id"] for x in s.open_batches()] == [bid]  # in flight when it stopped
        assert s.cached_evaluation(fingerprint(p), "{}")["fitness"] == 0.25
        assert s.counts() == {"proposed": 2, "done": 1, "hits": 0, "failed": 0, "trained": 1}
    q = load_program(str(path), str(b))
    assert q.hyperparameter_defaults == {"beta": 0.5} and q.meta["Provenance"].endswith(f":{b}")


def test_a_failed_transaction_leaves_nothing(tmp_path):
    with Store(tmp_path / "c.db") as s:
        with pytest.raises(RuntimeError):
            with s.transaction():
                s.set_meta("x", "1")
                raise RuntimeError("boom")
        assert s.get_meta("x") is None


def test_errors(tmp_path):
    with pytest.raises(StoreError, match="no campaign store"):
        Store(tmp_path / "missing.db", create=False)
    path = tmp_path / "old.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="schema 999"):
        Store(path)
    with Store(tmp_path / "c.db") as s:
        with pytest.raises(StoreError, match="no program 5"):
            s.program(5)
    with pytest.raises(DSLError, match="not a program id"):
        load_program(str(tmp_path / "c.db"), "abc")
