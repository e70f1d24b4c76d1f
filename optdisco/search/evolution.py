"""Proposing candidates: regularized evolution (aging, tournament) and random search.

The proposal of candidate ``i`` is a pure function of the campaign seed, ``i`` and the
results that arrived before it was due (a prefix of the completion order), with its own
random generator ``default_rng([seed, i])``. Nothing else (timing, worker count, a crash
and resume) enters, so one worker and a fixed seed replay a campaign exactly.

Regularized evolution (Real et al., 2019) as the Lion search used it: the population is
the ``population`` most recent results of the evolution arm (the oldest dies first, not
the worst); a parent is the best of ``tournament`` members drawn at random; the child is
the parent after 1..``max_mutations`` mutations. With ``restart_after`` set, a run of
that many results without a new best restarts the population from random programs.
A share ``random_fraction`` of candidates is drawn by random search over the same space,
the baseline arm; the two arms never mix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..dsl.ir import Program
from .macro import mutate_in_space as mutate
from .mutate import Space, random_program
from .store import ProgramRow


@dataclass(frozen=True)
class Proposal:
    """A candidate to evaluate, with its lineage."""

    program: Program
    parent: int | None
    mutation: str
    arm: str  # "evolution" or "random"


#: Subclasses chosen by a config switch, by switch name; the subclass registers itself
#: (``optdisco.search.learned.surrogate`` adds "surrogate"), so this module never imports it.
VARIANTS: dict[str, type["Evolution"]] = {}


@dataclass
class Evolution:
    """Regularized evolution with a random-search arm; see the module docstring."""

    seed: int
    space: Space
    population: int = 16
    tournament: int = 4
    max_mutations: int = 2
    restart_after: int = 0
    random_fraction: float = 0.0
    warm_start: Program | None = None

    @classmethod
    def from_config(cls, cfg: dict, warm_start: Program | None) -> "Evolution":
        if cfg.get("surrogate") and cls is Evolution:  # rank children with a learned predictor
            variant = VARIANTS.get("surrogate")
            if variant is None:
                raise ValueError("surrogate = true needs optdisco.search.learned.surrogate imported")
            return variant.from_config(cfg, warm_start)
        ev = cfg["evolution"]
        return cls(seed=cfg["seed"], space=Space.from_config(cfg), population=ev["population"],
                   tournament=ev["tournament"], max_mutations=ev["max_mutations"],
                   restart_after=ev["restart_after"],
                   random_fraction=1.0 if cfg["strategy"] == "random" else ev["random_fraction"],
                   warm_start=warm_start)

    def rng(self, i: int) -> np.random.Generator:
        """The random generator of candidate ``i`` (derivable from the store alone)."""
        return np.random.default_rng([self.seed, i])

    def restart_point(self, history: Sequence[ProgramRow]) -> int:
        """Index into the evolution arm's history where the current population began."""
        if self.restart_after <= 0:
            return 0
        start, best, since = 0, -np.inf, 0
        for j, row in enumerate(history):
            f = row.fitness if row.fitness is not None else -np.inf
            if f > best:
                best, since = f, 0
            else:
                since += 1
            if since >= self.restart_after:
                start, best, since = j + 1, -np.inf, 0
        return start

    def propose(self, i: int, history: Sequence[ProgramRow], parse_row) -> Proposal:
        """Candidate ``i`` given the completed results ``history`` (in completion order).

        ``parse_row(row) -> Program`` turns a stored row into its Program (cached by the caller).
        """
        rng = self.rng(i)
        draw_random = rng.random() < self.random_fraction
        if i == 0 and self.warm_start is not None:  # the warm start is candidate 0, the root of lineage
            return Proposal(self.warm_start, None, "warm_start", "evolution")
        if draw_random:
            return Proposal(random_program(rng, self.space), None, "random", "random")
        arm = [r for r in history if r.arm == "evolution"]
        start = self.restart_point(arm)
        pop = arm[start:][-self.population:]
        if len(pop) < self.tournament:
            return self._fill(i, rng, arm, restarted=start > 0)
        picks = rng.choice(len(pop), size=self.tournament, replace=False)
        # best fitness wins; among equals the younger one (aging favours new material)
        parent = max((pop[k] for k in picks), key=lambda r: (r.fitness if r.fitness is not None else -np.inf,
                                                              r.seq))
        n = int(rng.integers(1, self.max_mutations + 1))
        child, names = mutate(parse_row(parent), rng, self.space, n)
        return Proposal(child, parent.id, "+".join(names), "evolution")

    def _fill(self, i: int, rng: np.random.Generator, arm: Sequence[ProgramRow], restarted: bool) -> Proposal:
        if self.warm_start is not None and not restarted:
            n = int(rng.integers(1, self.max_mutations + 1))
            child, names = mutate(self.warm_start, rng, self.space, n)
            return Proposal(child, 0, "+".join(names), "evolution")
        return Proposal(random_program(rng, self.space), None, "restart" if restarted else "random_start",
                        "evolution")
