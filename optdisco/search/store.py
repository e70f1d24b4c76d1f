"""The campaign store: one SQLite file holding everything a campaign knows.

Tables: ``meta`` (schema version, the config as TOML, phase), ``programs`` (source,
fingerprint, lineage: parent and mutation, which arm proposed it, its status and the
order its result arrived in), ``evaluations`` (every evaluation with settings, fitness,
intervals, per-task values, curves, failure reason, timings, worker and attempt) and
``batches`` (the units of work sent to workers, with their status) and ``validations``
(``optdisco validate`` results of a program: settings, per-task summary, report path;
created by ``CREATE TABLE IF NOT EXISTS``, so stores from before it gain it on open).

Every state change the driver makes is one transaction, so a campaign killed at any
moment (SIGKILL included) reopens in the state after its last finished step: nothing
finished is lost, and work that was in flight is found by its status and re-run.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..dsl import DSLError, parse
from ..dsl.ir import Program
from ..errors import UserError

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS programs (
    id INTEGER PRIMARY KEY,
    idx INTEGER UNIQUE,
    source TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    n_states INTEGER NOT NULL,
    n_statements INTEGER NOT NULL,
    parent INTEGER REFERENCES programs(id),
    mutation TEXT,
    arm TEXT NOT NULL,
    phase TEXT NOT NULL,
    status TEXT NOT NULL,
    cache_of INTEGER REFERENCES programs(id),
    batch INTEGER REFERENCES batches(id),
    seq INTEGER UNIQUE,
    fitness REAL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS programs_fp ON programs(fingerprint);
CREATE INDEX IF NOT EXISTS programs_status ON programs(status);
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    stage TEXT NOT NULL,
    settings TEXT NOT NULL,
    programs TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    submitted REAL,
    finished REAL,
    failure TEXT
);
CREATE TABLE IF NOT EXISTS evaluations (
    id INTEGER PRIMARY KEY,
    program INTEGER NOT NULL REFERENCES programs(id),
    stage TEXT NOT NULL,
    settings TEXT NOT NULL,
    fitness REAL NOT NULL,
    ci_low REAL, ci_high REAL, p_beats_baseline REAL,
    tuned_lr TEXT, per_task TEXT, losses TEXT, curves TEXT,
    failure TEXT,
    seconds REAL,
    worker TEXT,
    attempt INTEGER,
    batch INTEGER,
    finished REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS evaluations_key ON evaluations(program, settings);
CREATE TABLE IF NOT EXISTS validations (
    id INTEGER PRIMARY KEY,
    program INTEGER NOT NULL REFERENCES programs(id),
    scale TEXT NOT NULL,
    settings TEXT NOT NULL,
    summary TEXT NOT NULL,
    report TEXT,
    finished REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rejections (
    program INTEGER PRIMARY KEY REFERENCES programs(id),
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS hurdles (
    program INTEGER PRIMARY KEY REFERENCES programs(id),
    n INTEGER UNIQUE NOT NULL,
    score REAL NOT NULL,
    threshold REAL,
    passed INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tunings (
    original INTEGER NOT NULL REFERENCES programs(id),
    stage TEXT NOT NULL,
    tuned INTEGER NOT NULL REFERENCES programs(id),
    info TEXT NOT NULL,
    PRIMARY KEY (original, stage)
);
"""


class StoreError(RuntimeError, UserError):
    """A store that cannot be opened as a campaign (missing, another schema, not a campaign)."""


@dataclass(frozen=True)
class ProgramRow:
    """One row of ``programs``."""

    id: int
    idx: int | None
    source: str
    fingerprint: str
    n_states: int
    n_statements: int
    parent: int | None
    mutation: str | None
    arm: str
    phase: str
    status: str
    cache_of: int | None
    batch: int | None
    seq: int | None
    fitness: float | None
    created: float

    def program(self) -> Program:
        return parse(self.source)


_JSON_FIELDS = ("tuned_lr", "per_task", "losses", "curves")


class Store:
    """A campaign store at ``path`` (created with the current schema when new)."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise StoreError(f"no campaign store at {self.path}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        for stmt in _SCHEMA.strip().split(";"):
            if stmt.strip():
                self.db.execute(stmt)
        version = self.get_meta("schema_version")
        if version is None:
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        elif int(version) != SCHEMA_VERSION:
            raise StoreError(f"{self.path} has store schema {version}; this optdisco reads {SCHEMA_VERSION}")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- transactions ---------------------------------------------------------------------
    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self):
            if self.db.in_transaction:  # nested: the outer one commits
                self.nested = True
                return self.db
            self.nested = False
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type, exc, tb):
            if self.nested:
                return False
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")
            return False

    def transaction(self) -> "_Tx":
        """A context in which every write commits together, or none does."""
        return Store._Tx(self.db)

    # -- meta -------------------------------------------------------------------------------
    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row["value"]

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta(key, value) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    # -- programs ---------------------------------------------------------------------------
    def add_program(self, p: Program, fingerprint: str, *, parent: int | None, mutation: str | None,
                    arm: str, phase: str, status: str = "pending", cache_of: int | None = None,
                    idx: int | None = None) -> int:
        """Insert a program and return its id (ids count up from 0 in insertion order).

        ``idx`` is a search candidate's index: the order the search proposed it in."""
        nid = self.db.execute("SELECT COALESCE(MAX(id) + 1, 0) FROM programs").fetchone()[0]
        self.db.execute(
            "INSERT INTO programs(id, idx, source, fingerprint, n_states, n_statements, parent, mutation,"
            " arm, phase, status, cache_of, created) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (nid, idx, p.source(), fingerprint, len(p.state_names), len(p.body), parent, mutation, arm,
             phase, status, cache_of, time.time()))
        return nid

    def program(self, pid: int) -> ProgramRow:
        row = self.db.execute("SELECT * FROM programs WHERE id = ?", (pid,)).fetchone()
        if row is None:
            raise StoreError(f"{self.path} has no program {pid}")
        return ProgramRow(**dict(row))

    def programs(self, where: str = "1", args: Sequence[Any] = (), order: str = "id") -> list[ProgramRow]:
        """Rows matching the SQL condition ``where`` (with ``?`` arguments), sorted by ``order``."""
        rows = self.db.execute(f"SELECT * FROM programs WHERE {where} ORDER BY {order}", tuple(args))
        return [ProgramRow(**dict(r)) for r in rows]

    def set_status(self, pid: int, status: str, *, batch: int | None = None) -> None:
        self.db.execute("UPDATE programs SET status = ?, batch = COALESCE(?, batch) WHERE id = ?",
                        (status, batch, pid))

    def complete(self, pid: int, fitness: float, status: str = "done") -> int:
        """Mark a search program finished with ``fitness``; returns its completion number ``seq``."""
        seq = self.db.execute("SELECT COALESCE(MAX(seq) + 1, 0) FROM programs").fetchone()[0]
        self.db.execute("UPDATE programs SET status = ?, fitness = ?, seq = ? WHERE id = ?",
                        (status, fitness, seq, pid))
        return seq

    def completed(self) -> list[ProgramRow]:
        """Finished search programs in the order their results arrived."""
        rows = self.db.execute("SELECT * FROM programs WHERE seq IS NOT NULL ORDER BY seq")
        return [ProgramRow(**dict(r)) for r in rows]

    def find_fingerprint(self, fingerprint: str, phase: str | None = None) -> ProgramRow | None:
        """The first program with this fingerprint that was evaluated or is being evaluated (not a cache hit)."""
        q = "SELECT * FROM programs WHERE fingerprint = ? AND cache_of IS NULL"
        args: list[Any] = [fingerprint]
        if phase is not None:
            q += " AND phase = ?"
            args.append(phase)
        row = self.db.execute(q + " ORDER BY id LIMIT 1", args).fetchone()
        return None if row is None else ProgramRow(**dict(row))

    # -- batches ----------------------------------------------------------------------------
    def add_batch(self, stage: str, settings: str, program_ids: Sequence[int]) -> int:
        cur = self.db.execute("INSERT INTO batches(stage, settings, programs, status) VALUES (?,?,?,?)",
                              (stage, settings, json.dumps(list(program_ids)), "pending"))
        return int(cur.lastrowid)

    def batch_submitted(self, bid: int) -> None:
        self.db.execute("UPDATE batches SET status = 'running', attempts = attempts + 1, submitted = ? "
                        "WHERE id = ?", (time.time(), bid))

    def batch_finished(self, bid: int, status: str = "done", failure: str | None = None) -> None:
        self.db.execute("UPDATE batches SET status = ?, finished = ?, failure = ? WHERE id = ?",
                        (status, time.time(), failure, bid))

    def open_batches(self) -> list[dict[str, Any]]:
        """Batches not finished (pending or in flight when the campaign stopped), oldest first."""
        rows = self.db.execute("SELECT * FROM batches WHERE status IN ('pending', 'running') ORDER BY id")
        return [dict(r, programs=json.loads(r["programs"])) for r in rows]

    # -- evaluations ------------------------------------------------------------------------
    def add_evaluation(self, pid: int, stage: str, settings: str, result: dict[str, Any], *,
                       attempt: int = 1, batch: int | None = None) -> None:
        vals = {k: json.dumps(result.get(k)) for k in _JSON_FIELDS}
        self.db.execute(
            "INSERT INTO evaluations(program, stage, settings, fitness, ci_low, ci_high, p_beats_baseline,"
            " tuned_lr, per_task, losses, curves, failure, seconds, worker, attempt, batch, finished)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (pid, stage, settings, float(result["fitness"]), result.get("ci_low"), result.get("ci_high"),
             result.get("p_beats_baseline"), vals["tuned_lr"], vals["per_task"], vals["losses"],
             vals["curves"], result.get("failure"), result.get("seconds"), result.get("worker"), attempt,
             batch, time.time()))

    def evaluations(self, pid: int | None = None, stage: str | None = None) -> list[dict[str, Any]]:
        q, args = "SELECT * FROM evaluations WHERE 1", []
        if pid is not None:
            q += " AND program = ?"
            args.append(pid)
        if stage is not None:
            q += " AND stage = ?"
            args.append(stage)
        out = []
        for r in self.db.execute(q + " ORDER BY id", args):
            d = dict(r)
            for k in _JSON_FIELDS:
                d[k] = json.loads(d[k]) if d[k] is not None else None
            out.append(d)
        return out

    def cached_evaluation(self, fingerprint: str, settings: str) -> dict[str, Any] | None:
        """A finished evaluation, with these settings, of any program with this fingerprint."""
        row = self.db.execute(
            "SELECT e.* FROM evaluations e JOIN programs p ON p.id = e.program "
            "WHERE p.fingerprint = ? AND e.settings = ? ORDER BY e.id LIMIT 1",
            (fingerprint, settings)).fetchone()
        if row is None:
            return None
        d = dict(row)
        for k in _JSON_FIELDS:
            d[k] = json.loads(d[k]) if d[k] is not None else None
        return d

    # -- validations (optdisco validate) -------------------------------------------------
    def add_validation(self, pid: int, scale: str, settings: dict[str, Any], summary: dict[str, Any],
                       report: str | None = None) -> int:
        """Record a validation of program ``pid``; returns the row id."""
        cur = self.db.execute(
            "INSERT INTO validations(program, scale, settings, summary, report, finished) VALUES (?,?,?,?,?,?)",
            (pid, scale, json.dumps(settings), json.dumps(summary), report, time.time()))
        return int(cur.lastrowid)

    def validations(self, pid: int | None = None) -> list[dict[str, Any]]:
        """Validations (of ``pid``, or all), oldest first, with settings and summary decoded."""
        q, args = "SELECT * FROM validations", ()
        if pid is not None:
            q, args = q + " WHERE program = ?", (pid,)
        return [dict(r, settings=json.loads(r["settings"]), summary=json.loads(r["summary"]))
                for r in self.db.execute(q + " ORDER BY id", args)]

    # -- named queries used by the campaign, funnel, leaderboard and report -----------------
    def simplified(self, *, by_key: bool = False) -> list[dict[str, Any]]:
        """The simplified rules the campaign stored (meta keys ``simplified:<id>``), decoded: each a
        dict with at least ``id``, ``source`` and ``fitness``. In the order they were stored, or with
        ``by_key`` in text order of the key (``simplified:12`` before ``simplified:3``), the order
        the funnel has always taken its entrants in."""
        q = "SELECT value FROM meta WHERE key LIKE 'simplified:%'" + (" ORDER BY key" if by_key else "")
        return [json.loads(r["value"]) for r in self.db.execute(q)]

    def best_search_program(self) -> ProgramRow | None:
        """The completed search-phase program of highest fitness (earliest ``seq`` on ties), or None."""
        row = self.db.execute("SELECT * FROM programs WHERE phase = 'search' AND seq IS NOT NULL "
                              "ORDER BY fitness DESC, seq LIMIT 1").fetchone()
        return ProgramRow(**dict(row)) if row is not None else None

    def top_programs(self, n: int | None = None) -> list[ProgramRow]:
        """The best ``n`` (all if None) distinct search programs that finished ``done``: cache
        hits (``cache_of`` set) folded into their original, ordered by fitness descending, then seq."""
        rows = [ProgramRow(**dict(r)) for r in self.db.execute(
            "SELECT * FROM programs WHERE phase = 'search' AND seq IS NOT NULL AND cache_of IS NULL "
            "AND status = 'done' ORDER BY fitness DESC, seq")]
        return rows if n is None else rows[:n]

    def scored_search_programs(self) -> list[ProgramRow]:
        """Distinct search programs that finished ``done`` with a fitness, in id order (the
        states-vs-fitness scatter of the report)."""
        return [ProgramRow(**dict(r)) for r in self.db.execute(
            "SELECT * FROM programs WHERE phase = 'search' AND cache_of IS NULL AND status = 'done' "
            "AND fitness IS NOT NULL ORDER BY id")]

    def search_programs(self, statuses: Sequence[str] | None = None) -> list[ProgramRow]:
        """Search-phase programs (those whose status is in ``statuses``, or all), in id order."""
        q, args = "SELECT * FROM programs WHERE phase = 'search'", ()
        if statuses is not None:
            q += f" AND status IN ({','.join('?' * len(statuses))})"
            args = tuple(statuses)
        return [ProgramRow(**dict(r)) for r in self.db.execute(q + " ORDER BY id", args)]

    def waiting_on(self, pid: int) -> list[ProgramRow]:
        """Programs waiting for the result of ``pid`` (cache hits on a running evaluation), id order."""
        return [ProgramRow(**dict(r)) for r in self.db.execute(
            "SELECT * FROM programs WHERE cache_of = ? AND status = 'waiting' ORDER BY id", (pid,))]

    def original_of(self, fingerprint: str) -> int | None:
        """Id of the first program with ``fingerprint`` that is not itself a cache hit, or None."""
        row = self.db.execute("SELECT id FROM programs WHERE fingerprint = ? AND cache_of IS NULL "
                              "ORDER BY id LIMIT 1", (fingerprint,)).fetchone()
        return None if row is None else int(row["id"])

    def batch_programs(self, bid: int) -> list[int]:
        """The program ids of batch ``bid``, in the order they were batched."""
        return [int(i) for i in json.loads(
            self.db.execute("SELECT programs FROM batches WHERE id = ?", (bid,)).fetchone()[0])]

    def batch_stage(self, bid: int) -> str:
        """The stage batch ``bid`` was formed for ("search", "screen", or a funnel stage)."""
        return str(self.db.execute("SELECT stage FROM batches WHERE id = ?", (bid,)).fetchone()[0])

    def evaluation_seconds(self) -> tuple[float, int]:
        """Total training seconds over all stored evaluations and their number: (sum, count)."""
        total, count = self.db.execute("SELECT SUM(seconds), COUNT(*) FROM evaluations").fetchone()
        return (float(total or 0.0), int(count))

    # -- summaries --------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        """Search-phase numbers: proposed, done, cache hits, failed, trained evaluations."""
        q = self.db.execute(
            "SELECT COUNT(*) AS proposed,"
            " SUM(seq IS NOT NULL) AS done,"
            " SUM(cache_of IS NOT NULL AND seq IS NOT NULL) AS hits,"
            " SUM(status = 'failed') AS failed FROM programs WHERE phase = 'search'").fetchone()
        trained = self.db.execute("SELECT COUNT(*) FROM evaluations WHERE stage = 'search'").fetchone()[0]
        return {"proposed": q["proposed"] or 0, "done": q["done"] or 0, "hits": q["hits"] or 0,
                "failed": q["failed"] or 0, "trained": trained}

    def lineage(self, pid: int) -> list[ProgramRow]:
        """The program, its parent, its parent's parent, ... back to a start."""
        out, seen = [], set()
        cur: int | None = pid
        while cur is not None and cur not in seen:
            seen.add(cur)
            row = self.program(cur)
            out.append(row)
            cur = row.parent
        return out


    # -- rejections (optdisco.search.prefilter): candidates screened out untrained ----------
    # The table is created by CREATE TABLE IF NOT EXISTS, so stores from before it gain it on open.
    def add_rejection(self, pid: int, reason: str) -> None:
        """Record that search program ``pid`` was rejected untrained, and why."""
        self.db.execute("INSERT OR REPLACE INTO rejections(program, reason) VALUES (?, ?)", (pid, reason))

    def rejection(self, pid: int) -> str | None:
        """Why program ``pid`` was rejected untrained, or None if it was not."""
        row = self.db.execute("SELECT reason FROM rejections WHERE program = ?", (pid,)).fetchone()
        return None if row is None else row["reason"]

    def rejection_counts(self) -> dict[str, int]:
        """Rejected candidates per reason, most frequent first."""
        rows = self.db.execute("SELECT reason, COUNT(*) AS n FROM rejections GROUP BY reason "
                               "ORDER BY n DESC, reason")
        return {r["reason"]: r["n"] for r in rows}

    # -- hurdles (progressive screening, campaign.Campaign): each screened child's decision --
    # Created by CREATE TABLE IF NOT EXISTS, so stores from before it gain it on open.
    def add_hurdle(self, pid: int, score: float, threshold: float | None, passed: bool) -> int:
        """Record search program ``pid``'s screening ``score``, the hurdle it met (None in the
        warmup) and whether it passed; returns its decision number ``n`` (0, 1, ...)."""
        n = self.db.execute("SELECT COALESCE(MAX(n) + 1, 0) FROM hurdles").fetchone()[0]
        self.db.execute("INSERT INTO hurdles(program, n, score, threshold, passed) VALUES (?,?,?,?,?)",
                        (pid, n, score, threshold, int(passed)))
        return int(n)

    def hurdle_scores(self) -> list[float]:
        """Every screening score recorded so far, in the order the decisions were made."""
        return [r[0] for r in self.db.execute("SELECT score FROM hurdles ORDER BY n")]

    def hurdle(self, pid: int) -> dict[str, Any] | None:
        """Program ``pid``'s screening decision (score, threshold, passed), or None if it had none."""
        row = self.db.execute("SELECT * FROM hurdles WHERE program = ?", (pid,)).fetchone()
        return None if row is None else dict(row, passed=bool(row["passed"]))

    def hurdle_counts(self) -> dict[str, int]:
        """Screened children: how many went on to the full fitness and how many were screened out."""
        row = self.db.execute("SELECT COUNT(*) AS screened, SUM(passed) AS passed FROM hurdles").fetchone()
        screened, passed = row["screened"] or 0, row["passed"] or 0
        return {"screened": screened, "passed": passed, "screened_out": screened - passed}

    # -- tunings (the funnel's ES stage, funnel.run_funnel): a rule and its tuned constants --
    # Created by CREATE TABLE IF NOT EXISTS, so stores from before it gain it on open.
    def add_tuning(self, original: int, stage: str, tuned: int, info: dict[str, Any]) -> None:
        """Record that funnel stage ``stage`` tuned program ``original`` into program ``tuned``
        (``info``: the ES settings, the values before and after, both fitnesses, its history)."""
        self.db.execute("INSERT OR REPLACE INTO tunings(original, stage, tuned, info) VALUES (?,?,?,?)",
                        (original, stage, tuned, json.dumps(info)))

    def tuning(self, original: int, stage: str) -> dict[str, Any] | None:
        """What stage ``stage`` made of program ``original`` (``tuned`` id and the info), or None."""
        row = self.db.execute("SELECT tuned, info FROM tunings WHERE original = ? AND stage = ?",
                              (original, stage)).fetchone()
        return None if row is None else dict(json.loads(row["info"]), tuned=row["tuned"], original=original,
                                             stage=stage)

    def tuned_from(self, tuned: int) -> dict[str, Any] | None:
        """The tuning that produced program ``tuned`` (as :meth:`tuning` gives it), or None."""
        row = self.db.execute("SELECT original, stage, info FROM tunings WHERE tuned = ? ORDER BY rowid "
                              "LIMIT 1", (tuned,)).fetchone()
        return None if row is None else dict(json.loads(row["info"]), tuned=tuned, original=row["original"],
                                             stage=row["stage"])


def load_program(db: str | Path, ident: str | int) -> Program:
    """Program ``ident`` of the campaign store ``db`` (the ``DB:ID`` rule syntax), named ``found_<id>``."""
    try:
        pid = int(ident)
    except ValueError:
        raise DSLError(f"'{ident}' is not a program id in {db} (write DB:ID with a number)") from None
    with Store(db, create=False) as store:
        row = store.program(pid)
    p = parse(row.source)
    return p.with_metadata(Origin="campaign", Provenance=f"{db}:{pid}")
