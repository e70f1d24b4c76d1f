"""The campaign driver: an asynchronous steady-state search loop over a store and an executor.

There are no generations. The driver keeps up to ``D = workers x batch_size x queue``
candidates ahead of the results: candidate ``i`` is proposed once ``i - D`` results have
arrived, from exactly those first ``i - D`` results (so proposals do not depend on
timing), and candidates are sent to workers in batches of ``batch_size``. Every result
is one transaction in the store (record it, propose what it unlocks, form batches), so a
campaign killed at any moment resumes from its last finished step, re-running only the
batches that were in flight; with one worker and a fixed seed the resumed campaign ends
exactly where an uninterrupted one does.

A candidate whose fingerprint matches a program already evaluated (or in flight) in the
store is a cache hit: it takes that program's fitness and is never trained.
"""

from __future__ import annotations

import json
import math
import time
import tomllib
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, Sequence

from ..dsl import parse
from ..dsl.ir import Program
from . import config as config_mod
from .cache import fingerprint, settings_key
from .config import search_settings
from .evolution import Evolution
from .executors import BatchFailure
from .fitness import WORST
from .prefilter import screen
from .store import ProgramRow, Store, StoreError


FUNNEL_TIME_FACTOR = 10


def _write_config(store: Store, cfg: Mapping[str, Any]) -> None:
    """The campaign's config in the store, as TOML (what resume reads) and as JSON (for reports)."""
    store.set_meta("config", config_mod.dumps(cfg))
    store.set_meta("config_json", json.dumps(cfg))


def stored_config(store: Store) -> dict[str, Any]:
    """The validated config of the campaign in ``store``; StoreError if it holds no campaign."""
    text = store.get_meta("config")
    if text is None:
        raise StoreError(f"{store.path} is not a campaign store (no config)")
    return config_mod.validate(tomllib.loads(text))


def update_config(store: Store, cfg: Mapping[str, Any], budget_changed: bool) -> None:
    """Store a resumed campaign's changed config; a changed budget above what was proposed
    reopens the search phase (so the campaign proposes the extra candidates)."""
    with store.transaction():
        _write_config(store, cfg)
        if budget_changed and store.get_meta("phase") != "search" and \
                store.counts()["proposed"] < cfg["budget"]:
            store.set_meta("phase", "search")


def screen_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of the hurdle's screening stage: the search settings on ``hurdle.tasks``
    (the search's own tasks when empty) at ``hurdle.budget``."""
    out = search_settings(cfg)
    h = cfg["hurdle"]
    if h["tasks"]:
        out["tasks"] = list(h["tasks"])
    out["budget"] = h["budget"]
    return out


def hurdle_threshold(scores: Sequence[float], q: float) -> float:
    """The ``q`` quantile of ``scores`` by linear interpolation between order statistics:
    with ``s`` sorted and ``h = (n - 1) q``, ``s[floor h] + (h - floor h) (s[floor h + 1] - s[floor h])``."""
    s = sorted(scores)
    h = (len(s) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (h - lo) * (s[hi] - s[lo])


@dataclass
class Progress:
    """What the live display shows; updated after every result."""

    phase: str = "search"
    done: int = 0
    budget: int = 0
    trained: int = 0
    hits: int = 0
    failed: int = 0
    best_fitness: float = -math.inf
    best_id: int | None = None
    best_source: str = ""
    started: float = field(default_factory=time.monotonic)
    done_at_start: int = 0

    trained_at_start: int = -1

    @property
    def rate(self) -> float:
        """Results (cache hits included) per second in this session (resumed work excluded)."""
        dt = time.monotonic() - self.started
        return (self.done - self.done_at_start) / dt if dt > 0 else 0.0

    @property
    def train_rate(self) -> float:
        """Trained evaluations per second in this session."""
        dt = time.monotonic() - self.started
        return (self.trained - max(self.trained_at_start, 0)) / dt if dt > 0 else 0.0

    @property
    def hit_rate(self) -> float:
        return self.hits / self.done if self.done else 0.0


class Campaign:
    """One campaign: ``cfg`` (validated), a :class:`Store`, an executor, and a progress callback.

    ``run()`` performs the search, then simplification and the funnel, and returns the
    ids of the programs found (those that held up through every funnel stage).
    """

    def __init__(self, cfg: Mapping[str, Any], store: Store, executor, *,
                 on_progress: Callable[[Progress], None] | None = None,
                 warm_start: Program | None = None) -> None:
        self.cfg = dict(cfg)
        self.store = store
        self.executor = executor
        self.on_progress = on_progress or (lambda p: None)
        #: where the long stages after the search (the funnel's ES tuning) report progress, line by line
        self.log: Callable[[str], None] = lambda line: None
        self.progress = Progress(budget=cfg["budget"])
        stored = store.get_meta("config")
        if stored is None:
            with store.transaction():
                _write_config(store, self.cfg)
                store.set_meta("phase", "search")
                store.set_meta("created", str(time.time()))
                if warm_start is not None:  # the catalog keeps its paper notes; lineage shows the code
                    store.set_meta("warm_start", replace(warm_start, docstring=None).source())
        ws = store.get_meta("warm_start")
        self.warm_start = parse(ws) if ws else None
        if self.cfg.get("surrogate"):  # children ranked by the learned fitness predictor first
            from .learned.surrogate import SurrogateEvolution
            self.strategy = SurrogateEvolution.from_config(self.cfg, self.warm_start)
        else:
            self.strategy = Evolution.from_config(self.cfg, self.warm_start)
        d = cfg["distributed"]
        self.batch_size = d["batch_size"]
        self.max_retries = d["max_retries"]
        self.depth = max(1, executor.workers) * d["batch_size"] * d["queue"]
        self.settings = search_settings(self.cfg)
        self.prefilter = bool(self.cfg["space"].get("prefilter", False))
        self.hurdle = dict(self.cfg["hurdle"])
        self.screen_settings = screen_settings(self.cfg)
        self.settings_key = settings_key(self.settings)
        self._parsed: dict[int, Program] = {}
        self._batches: dict[int, dict[str, Any]] = {}  # in flight: id -> {stage, programs, attempt}

    # -- helpers --------------------------------------------------------------------------
    def parse_row(self, row: ProgramRow) -> Program:
        p = self._parsed.get(row.id)
        if p is None:
            p = self._parsed[row.id] = parse(row.source)
        return p

    def _runtime_settings(self, settings: Mapping[str, Any], stage: str) -> dict[str, Any]:
        out = dict(settings)
        # the limit is sized for the search's evaluations; the few later ones (longer budgets,
        # other suites, their baselines tuned on first use) get ten times as long
        limit = self.cfg["fitness"]["time_limit"] * (1 if stage in ("search", "screen") else FUNNEL_TIME_FACTOR)
        out["time_limit"] = limit or None
        # tuned baselines are shared by every campaign in the same folder
        out["cache_dir"] = str(self.store.path.resolve().parent / ".baselines")
        return out

    def _submit(self, bid: int, stage: str, pids: Sequence[int], settings: Mapping[str, Any],
                attempt: int) -> None:
        sources = [self.store.program(pid).source for pid in pids]
        self.store.batch_submitted(bid)
        self._batches[bid] = {"stage": stage, "programs": list(pids), "attempt": attempt,
                              "settings": dict(settings)}
        runtime = self._runtime_settings(settings, stage)
        self.executor.submit(bid, sources, runtime, time_limit=runtime["time_limit"] or 0.0)

    def _refresh_progress(self) -> None:
        c = self.store.counts()
        pr = self.progress
        pr.done, pr.hits, pr.failed, pr.trained = c["done"], c["hits"], c["failed"], c["trained"]
        if pr.trained_at_start < 0:
            pr.trained_at_start = pr.trained
        row = self.store.best_search_program()
        if row is not None:
            pr.best_fitness, pr.best_id, pr.best_source = row.fitness, row.id, row.source
        self.on_progress(pr)

    # -- the search loop --------------------------------------------------------------------
    def _search_rows(self) -> list[ProgramRow]:
        return self.store.search_programs()

    def _propose_due(self, history: list[ProgramRow], n_generated: int) -> int:
        """Propose every candidate that the results so far unlock; returns the new count."""
        budget = self.cfg["budget"]
        while n_generated < budget and n_generated < len(history) + self.depth:
            i = n_generated
            prop = self.strategy.propose(i, history[:max(0, i - self.depth)], self.parse_row)
            fp = fingerprint(prop.program)
            hit = self.store.find_fingerprint(fp, phase="search")
            # the warm start is the user's choice: it is trained whatever the screen says
            reason = (screen(prop.program) if hit is None and self.prefilter and prop.mutation != "warm_start"
                      else None)
            # with hurdles, a new child is screened first; the warm start goes straight on
            fresh = "screening" if self.hurdle["enabled"] and prop.mutation != "warm_start" else "pending"
            status = "rejected" if reason is not None else fresh if hit is None else "waiting"
            pid = self.store.add_program(prop.program, fp, parent=prop.parent, mutation=prop.mutation,
                                         arm=prop.arm, phase="search", status=status,
                                         cache_of=None if hit is None else hit.id, idx=i)
            if reason is not None:  # never trained: the worst fitness, the reason kept with it
                self.store.add_rejection(pid, reason)
                self.store.complete(pid, WORST, "rejected")
                history.append(self.store.program(pid))
            elif hit is not None and hit.seq is not None:
                self.store.complete(pid, hit.fitness, "cached")
                history.append(self.store.program(pid))
            n_generated += 1
        return n_generated

    def _form_batches(self, final: bool) -> list[int]:
        """Group proposed, unbatched candidates into batches; returns the new batch ids."""
        new: list[int] = []
        for waiting, stage, skey, queued in (
                ("pending", "search", self.settings_key, "queued"),
                ("screening", "screen", settings_key(self.screen_settings), "screen_queued")):
            pending = [r.id for r in self.store.search_programs([waiting])]
            while pending and (len(pending) >= self.batch_size or final
                               or len(self._batches) + len(new) < self.executor.workers):
                chunk, pending = pending[:self.batch_size], pending[self.batch_size:]
                bid = self.store.add_batch(stage, skey, chunk)
                for pid in chunk:
                    self.store.set_status(pid, queued, batch=bid)
                new.append(bid)
        return new

    def _stage_settings(self, stage: str) -> dict[str, Any]:
        return self.screen_settings if stage == "screen" else self.settings

    def _clear_hurdle(self, pid: int, r: Mapping[str, Any], history: list[ProgramRow] | None) -> None:
        """Decide whether screened child ``pid`` goes on to the full fitness (inside the caller's
        transaction). It does while fewer than ``hurdle.warmup`` children have been screened, and
        after that if its screening fitness is at least the ``hurdle.quantile`` quantile of every
        screening score before it; a child screened out completes with the worst fitness, untrained
        on the full suite. Scores and decisions come from the store alone, so a resumed campaign
        decides exactly as an uninterrupted one."""
        score = float(r["fitness"])
        prior = self.store.hurdle_scores()
        threshold = (hurdle_threshold(prior, self.hurdle["quantile"])
                     if len(prior) >= self.hurdle["warmup"] and prior else None)
        passed = threshold is None or (not r.get("failure") and score >= threshold)
        self.store.add_hurdle(pid, score, threshold, passed)
        if passed:
            self.store.set_status(pid, "pending")
            return
        self.store.complete(pid, WORST, "screened_out")
        if history is not None:
            history.append(self.store.program(pid))
        for w in self.store.waiting_on(pid):
            self.store.complete(w.id, WORST, "cached")
            if history is not None:
                history.append(self.store.program(w.id))

    def _record(self, bid: int, outcome, history: list[ProgramRow] | None) -> bool:
        """Store a finished batch (inside the caller's transaction); False if it is to be retried."""
        info = self._batches.pop(bid)
        stage, pids, attempt = info["stage"], info["programs"], info["attempt"]
        skey = settings_key(info["settings"])
        if isinstance(outcome, BatchFailure):
            if attempt <= self.max_retries:
                self.store.batch_finished(bid, "retrying", outcome.reason)
                self._batches[bid] = dict(info, attempt=attempt + 1)
                return False
            self.store.batch_finished(bid, "failed", outcome.reason)
            results = [{"fitness": WORST, "failure": f"batch failed after {attempt} attempt(s): "
                                                     f"{outcome.reason}"} for _ in pids]
        else:
            self.store.batch_finished(bid, "done")
            results = outcome
        for pid, r in zip(pids, results):
            self.store.add_evaluation(pid, stage, skey, r, attempt=attempt, batch=bid)
            status = "failed" if r.get("failure") else "done"
            if stage == "screen":
                self._clear_hurdle(pid, r, history)
            elif stage == "search":
                self.store.complete(pid, float(r["fitness"]), status)
                if history is not None:
                    history.append(self.store.program(pid))
                for w in self.store.waiting_on(pid):
                    self.store.complete(w.id, float(r["fitness"]), "cached")
                    if history is not None:
                        history.append(self.store.program(w.id))
            elif self.store.program(pid).phase != "search":
                self.store.set_status(pid, status)
        return True

    def _submit_new(self, bid: int) -> None:
        stage = self.store.batch_stage(bid)
        self._submit(bid, stage, self.store.batch_programs(bid), self._stage_settings(stage), 1)

    def search(self) -> None:
        """The steady-state loop, from wherever the store stands, until the budget is done."""
        if self.store.get_meta("phase") != "search":
            return
        history = self.store.completed()
        n_generated = len(self._search_rows())
        self.progress.done_at_start = len(history)
        # work that was in flight when the campaign stopped runs again, in its original batches
        for b in self.store.open_batches():
            if b["stage"] in ("search", "screen"):
                with self.store.transaction():
                    self._submit(b["id"], b["stage"], b["programs"], self._stage_settings(b["stage"]), 1)
        while True:
            with self.store.transaction():
                n_generated = self._propose_due(history, n_generated)
                final = n_generated >= self.cfg["budget"]
                new = self._form_batches(final)
                for bid in new:
                    self._submit_new(bid)
            self._refresh_progress()
            if not self._batches:
                waiting = self.store.search_programs(["pending", "waiting", "screening"])
                if final and not waiting:
                    break
                if not waiting:
                    continue
                raise RuntimeError(f"campaign stalled with {len(waiting)} candidates waiting")  # pragma: no cover
            events = []
            while not events:
                events = self.executor.wait(timeout=0.5)
            for bid, outcome in sorted(events, key=lambda e: e[0]):
                with self.store.transaction():
                    if not self._record(bid, outcome, history):
                        info = self._batches[bid]
                        self._submit(bid, info["stage"], info["programs"], info["settings"], info["attempt"])
                        continue
                    n_generated = self._propose_due(history, n_generated)
                    final = n_generated >= self.cfg["budget"]
                    for nb in self._form_batches(final):
                        self._submit_new(nb)
                self._refresh_progress()
        with self.store.transaction():
            self.store.set_meta("phase", "simplify")

    # -- evaluating a list of programs (simplify, funnel) ----------------------------------------
    def evaluate(self, programs: Sequence[Program], stage: str, settings: Mapping[str, Any], *,
                 parents: Sequence[int | None] | None = None, mutation: str | None = None,
                 arm: str = "funnel") -> list[tuple[int, float, dict[str, Any]]]:
        """Evaluate programs under ``settings``, reusing any stored evaluation of an equivalent
        program with the same settings; returns ``(program id, fitness, result)`` per program."""
        skey = settings_key(settings)
        parents = list(parents) if parents is not None else [None] * len(programs)
        ids: list[int] = []
        todo: list[int] = []
        with self.store.transaction():
            for p, parent in zip(programs, parents):
                fp = fingerprint(p)
                known = self.store.cached_evaluation(fp, skey)
                same = self.store.original_of(fp)  # one row per behaviour: lineage stays in one place
                if same is not None:
                    pid = same
                else:
                    pid = self.store.add_program(p, fp, parent=parent, mutation=mutation, arm=arm,
                                                 phase=arm, status="pending")
                ids.append(pid)
                if known is None and pid not in todo:
                    todo.append(pid)
            batches = []
            for k in range(0, len(todo), self.batch_size):
                chunk = todo[k:k + self.batch_size]
                bid = self.store.add_batch(stage, skey, chunk)
                batches.append(bid)
                self._submit(bid, stage, chunk, settings, 1)
        while self._batches:
            events = self.executor.wait(timeout=0.5)
            for bid, outcome in sorted(events, key=lambda e: e[0]):
                with self.store.transaction():
                    if not self._record(bid, outcome, None):
                        info = self._batches[bid]
                        self._submit(bid, info["stage"], info["programs"], info["settings"], info["attempt"])
        out = []
        for pid in ids:
            fp = self.store.program(pid).fingerprint
            ev = self.store.cached_evaluation(fp, skey)
            assert ev is not None
            out.append((pid, float(ev["fitness"]), ev))
        return out

    # -- after the search ---------------------------------------------------------------------
    def top(self, k: int) -> list[ProgramRow]:
        """The ``k`` best distinct programs of the search (by fitness; cache hits folded)."""
        return self.store.top_programs(k)

    def run(self) -> list[int]:
        """Search, simplify the best, funnel them; returns the ids of the programs found."""
        from .funnel import run_funnel
        from .simplify import simplify_winners
        self.search()
        if self.store.get_meta("phase") == "simplify":
            simplify_winners(self)
            with self.store.transaction():
                self.store.set_meta("phase", "funnel")
        if self.store.get_meta("phase") == "funnel":
            found = run_funnel(self)
            with self.store.transaction():
                self.store.set_meta("found", json.dumps(found))
                self.store.set_meta("phase", "finished")
                self.store.set_meta("finished", str(time.time()))
        self.progress.phase = "finished"
        self._refresh_progress()
        return json.loads(self.store.get_meta("found") or "[]")
