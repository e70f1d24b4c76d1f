"""What a found rule is, against the catalog: rediscovered, a variant, or a new structure.

Nearest catalog rule, by update correlation on probe problems: both rules run in float64
(the reference interpreter) on the same input streams, ``PROBES`` seeded problems of
``PROBE_STEPS`` steps each. The inputs are shared, not the trajectories: every rule sees
the same ``(w_t, g_t)`` with ``w_t`` a random walk and ``g_t = G_t + K * w_t`` (a noisy
quadratic's gradient at ``w_t``), so rules whose steps differ only in scale (a constant the
learning rate absorbs) see identical inputs. The score is the mean over problems and steps
of the cosine between the two updates,

    corr(a, b) = mean_{p, t} <u_a(p, t), u_b(p, t)> / (|u_a(p, t)| |u_b(p, t)|),

(1 for two zero updates, 0 for a zero against a nonzero or a non-finite update).

Classes, for a found rule F against each known catalog rule X:

- ``rediscovered X``: F is equivalent to X at X's defaults
  (:func:`optdisco.dsl.equivalence.equivalent`), or corr(F, X) >= ``SAME`` there on the
  short probes and on one long probe (``LONG_STEPS`` steps, gradient scales redrawn every 40
  steps: 20 steps cannot tell an EMA of memory 1000 from a plain sum);
- ``variant of X``: not that, but X with other hyperparameter values reaches
  corr >= ``SAME`` (X's hyperparameters fitted by a greedy search over candidate values:
  X's default, 0, and F's own constants c and 1 - c), or F and X have the same skeleton
  (their sympy forms equal once every hyperparameter and non-integer number is one symbol);
  among several, the one the long probe confirms, then the same skeleton, then the fewest
  changed constants;
- ``new structure``: neither, for every X; the nearest X is the one of highest fitted corr.

Only a new structure that beats tuned AdamW on the full held-out suite with its 95%
interval above 0 is a discovery (:func:`is_discovery`).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import sympy
import torch

from ..discovered import catalog
from ..dsl.equivalence import equivalent
from ..dsl.fingerprint import eliminate_dead_code, single_threaded
from ..dsl.interpreter import run, zero_states
from ..dsl.ir import Call, Const, Name, Program
from ..dsl.symbolic import to_sympy

PROBES = 4
PROBE_STEPS = 20
PROBE_LR = 0.01
LONG_STEPS = 400
#: Mean cosine at or above which two rules count as making the same updates: float64
#: rounding stays far above it; AdamW's default decay (wd 0.01) against none falls below.
SAME = 0.99999
_SEED = 20261202


@dataclass(frozen=True)
class Match:
    """A found rule against one catalog rule: corr at the catalog defaults, the best corr
    over fitted hyperparameters and the values that reach it, equivalence, skeleton, and
    corr on the long probe at those values."""

    name: str
    corr_default: float
    corr_fitted: float
    fitted: dict[str, float]
    equivalent: bool
    same_skeleton: bool
    corr_long: float | None = None     # on the long probe, where the short one gave >= SAME

    @property
    def confirmed(self) -> bool:
        """Whether the long probe confirms the short probe's corr >= SAME."""
        return self.corr_long is not None and self.corr_long >= SAME


@dataclass(frozen=True)
class Classification:
    """``kind`` is ``"rediscovered"``, ``"variant"`` or ``"new structure"``; ``nearest`` the
    nearest catalog rule; ``label`` the class in words; ``diff`` the symbolic difference."""

    kind: str
    nearest: str
    corr: float
    label: str
    diff: str
    matches: list[Match] = field(default_factory=list)

    def line(self) -> str:
        """One line for a leaderboard, a report or a rule file."""
        return f"{self.label} (update correlation {self.corr:.5f} with {self.nearest}); {self.diff}"


Probe = tuple[list[torch.Tensor], list[torch.Tensor]]


def _probes(n: int, steps: int, regime: int, seed: int) -> list[Probe]:
    """Shared inputs: per problem, the parameters w_t and gradients g_t of every step; each
    coordinate's gradient scale is redrawn every ``regime`` steps (so that long and short
    memories of the gradient's square differ within the probe)."""
    gen = np.random.default_rng(seed)
    out = []
    for k in range(n):
        shape = [(6, 5), (40,), (4, 8), (30,)][k % 4]
        curvature = gen.uniform(0.1, 2.0, shape) * (k % 2 == 0)
        w = gen.standard_normal(shape)
        ws, gs = [], []
        for t in range(steps):
            if t % regime == 0:
                scale = 10.0 ** gen.uniform(-2, 0.5, shape)
            ws.append(torch.from_numpy(w.copy()))
            gs.append(torch.from_numpy(gen.standard_normal(shape) * scale + curvature * w))
            w = w - 0.05 * gs[-1].numpy() + 0.01 * gen.standard_normal(shape)
        out.append((ws, gs))
    return out


_PROBES = _probes(PROBES, PROBE_STEPS, PROBE_STEPS, _SEED)
#: One long problem, for the claims that rest on corr ~ 1: a 20-step probe cannot tell an EMA
#: of memory 1000 steps from a plain sum, nor small bias-correction differences.
_LONG = _probes(1, LONG_STEPS, 40, _SEED + 1)


def probe_updates(p: Program, hyperparameters: Mapping[str, float] | None = None, *,
                  long: bool = False) -> list[np.ndarray]:
    """The updates of ``p`` (float64) on every probe problem and step, flattened, in order
    (``long``: on the long probe instead)."""
    return probe_updates_batch(p, [dict(hyperparameters or {})], long=long)[0]


def probe_updates_batch(p: Program, settings: Sequence[Mapping[str, float]], *,
                        long: bool = False) -> list[list[np.ndarray]]:
    """:func:`probe_updates` for each hyperparameter setting in ``settings``, in one batched
    run per problem and step (the settings along a leading batch dimension, batch_dims=1,
    so whole-tensor reductions stay per setting)."""
    n = len(settings)
    names = [h for h, _ in p.hyperparameters]
    defaults = dict(p.hyperparameters)
    out: list[list[np.ndarray]] = [[] for _ in range(n)]
    with single_threaded():
        for k, (ws, gs) in enumerate(_LONG if long else _PROBES):
            ones = (1,) * ws[0].dim()
            hyper = {h: torch.tensor([float(s.get(h, defaults[h])) for s in settings],
                                     dtype=torch.float64).reshape(n, *ones) for h in names}
            gen = torch.Generator().manual_seed(_SEED + k)
            states = zero_states(p, torch.zeros((n, *ws[0].shape), dtype=torch.float64), batch_dims=1)
            for t, (w, g) in enumerate(zip(ws, gs), start=1):
                wb, gb = w.expand(n, *w.shape), g.expand(n, *g.shape)
                u, states = run(p, wb, gb, states, step=float(t), lr=PROBE_LR, hyperparameters=hyper,
                                batch_dims=1, generator=gen)
                for i in range(n):
                    out[i].append(u[i].reshape(-1).numpy())
    return out


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return 0.0
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def correlation(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """Mean per-step cosine between two rules' probe updates (see the module doc)."""
    return float(np.mean([_cos(x, y) for x, y in zip(a, b)]))


def _constants(p: Program) -> list[float]:
    values = [v for _, v in p.hyperparameters]
    for stmt in p.body:
        values += [n.value for n in stmt.expr.walk() if isinstance(n, Const)]
    values += [n.value for n in p.update.walk() if isinstance(n, Const)]
    return sorted({float(v) for v in values if math.isfinite(v)})


def _fit(found_u: Sequence[np.ndarray], x: Program, found: Program, max_changes: int = 4
         ) -> tuple[float, dict[str, float]]:
    """Greedy search of x's hyperparameters for the highest corr with the found rule: from
    x's defaults, every single change (each hyperparameter to each of {its default, 0, c and
    1 - c for every constant c of the found rule}) is tried in one batched run and the best
    one kept, until none improves or ``max_changes`` are made."""
    consts = _constants(found)
    candidates = sorted({0.0, *consts, *(1.0 - c for c in consts if 0.0 < c < 1.0)})
    defaults = dict(x.hyperparameters)
    values = dict(defaults)
    best = correlation(found_u, probe_updates(x, values))
    for _ in range(min(max_changes, len(defaults))):
        trials = [{**values, name: v} for name, default in x.hyperparameters
                  for v in [default, *candidates] if v != values[name]]
        if not trials or best >= 1.0 - 1e-12:
            break
        scores = [correlation(found_u, u) for u in probe_updates_batch(x, trials)]
        i = int(np.argmax(scores))
        if scores[i] <= best + 1e-12:
            break
        best, values = scores[i], trials[i]
    return best, {n: v for n, v in values.items() if v != defaults[n]}


def skeleton(p: Program) -> tuple[str, ...]:
    """The rule's structure: its sympy update and new states (in order, dead code removed)
    with every hyperparameter and every non-integer number replaced by one symbol ``c``
    (so Lion with beta1 = beta2 has Signum's skeleton: coarse, on the side of "not new")."""
    return _skeleton(p.source())


@functools.lru_cache(maxsize=256)
def _skeleton(source: str) -> tuple[str, ...]:
    from ..dsl import parse
    from ..dsl.symbolic import Timeout, time_limit
    p = eliminate_dead_code(parse(source))
    rule = to_sympy(p)
    c = sympy.Symbol("c")
    subs = {rule.symbols[h]: c for h, _ in p.hyperparameters}
    subs.update({rule.symbols[s]: sympy.Symbol(f"s{i}") for i, s in enumerate(p.state_names)})

    def shape(e: sympy.Expr) -> str:
        e = e.xreplace(subs)
        e = e.xreplace({a: c for a in e.atoms(sympy.Number) if not a.is_Integer})
        try:
            with time_limit(1.0):
                e = sympy.expand(e)
        except Timeout:  # a large form: compared as sympy built it
            pass
        return str(e)

    return (shape(rule.update), *(shape(rule.states[s]) for s in p.state_names))


def _same_skeleton(a: Program, b: Program) -> bool:
    try:
        return skeleton(a) == skeleton(b)
    except Exception:  # noqa: BLE001 - no sympy form of one of them: the numbers decide alone
        return False


def known_rules() -> dict[str, Program]:
    """The known (published) catalog rules, by name."""
    return {e.name: catalog.get(e.name) for e in catalog.entries() if e.origin == "known"}


def symbolic_diff(found: Program, x: Program, fitted: Mapping[str, float]) -> str:
    """What separates ``found`` from catalog rule ``x``, in words: the hyperparameter values
    that differ (after fitting), and whether the skeletons (:func:`skeleton`) agree."""
    parts = [f"{n} = {v:.4g} (catalog {dict(x.hyperparameters)[n]:.4g})" for n, v in fitted.items()]
    same = _same_skeleton(found, x)
    where = f"same skeleton as {x.name}" if same else f"not {x.name}'s skeleton"
    return where + (f"; at {', '.join(parts)}" if parts else "")


def classify(found: Program, catalog_rules: Mapping[str, Program] | None = None) -> Classification:
    """The class of ``found`` against ``catalog_rules`` (default: :func:`known_rules`), by the
    rules of the module doc. Every catalog rule gets its hyperparameters fitted (batched
    probe runs; several seconds for the whole catalog)."""
    rules = dict(catalog_rules if catalog_rules is not None else known_rules())
    found_u = probe_updates(found)
    found_long: list[np.ndarray] | None = None
    matches: list[Match] = []
    for n, x in rules.items():
        at_default = correlation(found_u, probe_updates(x))
        fitted_c, fitted = (at_default, {}) if at_default >= SAME else _fit(found_u, x, found)
        eq = bool(equivalent(found, x)) if at_default >= SAME else False
        long_c = None
        if fitted_c >= SAME:
            found_long = found_long if found_long is not None else probe_updates(found, long=True)
            long_c = correlation(found_long, probe_updates(x, fitted, long=True))
        matches.append(Match(n, at_default, fitted_c, fitted, eq, _same_skeleton(found, x), long_c))
    same_now = [m for m in matches if m.equivalent or (m.corr_default >= SAME and m.confirmed)]
    if same_now:
        m = max(same_now, key=lambda m: (m.equivalent, m.same_skeleton, m.corr_default))
        how = "equivalent program" if m.equivalent else \
            f"same updates at the catalog constants ({LONG_STEPS}-step probe: {m.corr_long:.6f})"
        return Classification("rediscovered", m.name, m.corr_default, f"rediscovered {m.name}", how, matches)
    variants = [m for m in matches if m.corr_fitted >= SAME or m.same_skeleton]
    if variants:
        # the long probe's confirmation first, then the same skeleton, then the fewest changed
        # constants, the closer updates, and the shorter catalog rule
        m = max(variants, key=lambda m: (m.confirmed, m.same_skeleton, -len(m.fitted), round(m.corr_fitted, 6),
                                         -len(rules[m.name].body)))
        diff = symbolic_diff(found, rules[m.name], m.fitted)
        if m.corr_long is not None and not m.confirmed:
            diff += f"; the {LONG_STEPS}-step probe tells them apart (correlation {m.corr_long:.5f})"
        return Classification("variant", m.name, m.corr_fitted, f"variant of {m.name}", diff, matches)
    m = max(matches, key=lambda m: (round(m.corr_fitted, 4), -len(m.fitted)))
    return Classification("new structure", m.name, m.corr_fitted, "new structure",
                          f"nearest {m.name}: " + symbolic_diff(found, rules[m.name], m.fitted), matches)


def is_discovery(kind: str, heldout_fitness: float, ci_low: float | None) -> bool:
    """A discovery: a new structure (``kind``) that beats tuned AdamW on the full held-out
    suite, its fitness (mean log(AdamW loss / rule loss)) > 0 with the 95% interval's lower
    end above 0. No interval (one seed) is not evidence: not a discovery."""
    return (kind == "new structure" and ci_low is not None and math.isfinite(heldout_fitness)
            and heldout_fitness > 0.0 and ci_low > 0.0)


def stored_class(store, pid: int) -> dict | None:
    """The class the funnel stored for program ``pid`` (``meta['class:<pid>']``: kind, label,
    nearest, corr, diff, line, discovery), or None."""
    value = store.get_meta(f"class:{pid}")
    return json.loads(value) if value else None


# -- the catalog envelope ----------------------------------------------------------------

#: The catalog rules whose per-task best is the bar a found rule must clear beside AdamW.
ENVELOPE_RULES = ("adamw", "adam", "rmsprop", "nadamw", "adabelief", "lion", "momentum")


@dataclass(frozen=True)
class EnvelopeComparison:
    """A candidate against the per-task best catalog rule: per task the envelope's rule and
    the log-ratio, their mean and its 95% bootstrap interval."""

    per_task: dict[str, float]
    best_rule: dict[str, str]
    fitness: float
    ci_low: float
    ci_high: float

    def line(self) -> str:
        """One line: the aggregate with its interval and the per-task bests."""
        tasks = ", ".join(f"{t} {r:+.2f} vs {self.best_rule[t]}" for t, r in self.per_task.items())
        return f"{self.fitness:+.3f} [{self.ci_low:+.3f}, {self.ci_high:+.3f}] against the catalog envelope ({tasks})"


def envelope_comparison(candidate: Mapping[str, Sequence[float]],
                        catalog_losses: Mapping[str, Mapping[str, Sequence[float]]], *,
                        n_boot: int = 2000, seed: int = 0) -> EnvelopeComparison:
    """The candidate against the envelope of catalog rules on each task.

    ``candidate``: task -> final validation loss per seed (an
    :class:`optdisco.evaluators.evaluate.Evaluation`'s ``losses``); ``catalog_losses``: rule
    -> the same for each catalog rule. Per task t the envelope is the rule b*(t) of lowest
    mean log loss; per seed s, r_ts = log(L_b*(t),s / L_cand,s) (clamped as
    :func:`optdisco.evaluators.fitness.log_ratio`, a failed run is its worst value). The
    aggregate is the mean over tasks of the seed means, with the task-stratified bootstrap
    interval of :func:`optdisco.evaluators.fitness.bootstrap_ci`. Positive: better than every
    catalog rule's best on the average task.
    """
    from ..evaluators.fitness import bootstrap_ci, log_ratio, mean_fitness

    def mean_log(v: Sequence[float]) -> float:
        return float(np.mean([math.log(max(x, 1e-30)) if math.isfinite(x) else math.inf for x in v]))

    ratios: dict[str, list[float]] = {}
    best_rule: dict[str, str] = {}
    for task, losses in candidate.items():
        have = {r: ls[task] for r, ls in catalog_losses.items() if task in ls and len(ls[task])}
        if not have:
            continue
        best = min(have, key=lambda r: mean_log(have[r]))
        base = list(have[best])
        best_rule[task] = best
        ratios[task] = [log_ratio(base[i % len(base)], c) for i, c in enumerate(losses)]
    if not ratios:
        raise ValueError("no task has both the candidate's and a catalog rule's losses")
    lo, hi = bootstrap_ci(ratios, n_boot=n_boot, seed=seed)
    return EnvelopeComparison({t: float(np.mean(v)) for t, v in ratios.items()}, best_rule,
                              mean_fitness(ratios), lo, hi)


def envelope_programs(names: Iterable[str] = ENVELOPE_RULES) -> dict[str, Program]:
    """The envelope's catalog rules as Programs (those the catalog has)."""
    have = set(catalog.names())
    return {n: catalog.get(n) for n in names if n in have}


# -- canonical form ----------------------------------------------------------------------

@dataclass(frozen=True)
class Canonical:
    """A rule in canonical form: ``program``, with ``u_original = scale * u_program`` at the
    defaults (so the original at learning rate lr is this rule at ``scale * lr``), and what
    was changed, in words."""

    program: Program
    scale: float
    notes: list[str]


def _scalar(e, hyper: set[str]) -> bool:
    return isinstance(e, Const) or (isinstance(e, Name) and e.id in hyper)


def _split(e, hyper: set[str]) -> tuple[list[tuple[object, int]], object | None]:
    """A product as its scalar factors (a constant or hyperparameter, with power +-1) and
    the rest (None when nothing but scalars)."""
    if _scalar(e, hyper):
        return [(e, 1)], None
    if isinstance(e, Call) and e.fn == "mul":
        fa, ra = _split(e.args[0], hyper)
        fb, rb = _split(e.args[1], hyper)
        rest = ra if rb is None else rb if ra is None else Call("mul", (ra, rb))
        return fa + fb, rest
    if isinstance(e, Call) and e.fn == "div":
        fa, ra = _split(e.args[0], hyper)
        fb, rb = _split(e.args[1], hyper)
        inv = [(x, -k) for x, k in fb]
        if rb is None:
            return fa + inv, ra
        return fa + inv, Call("div", (ra if ra is not None else Const(1.0), rb))
    return [], e


def _terms(e, sign: int = 1) -> list[tuple[int, object]]:
    if isinstance(e, Call) and e.fn == "add":
        return _terms(e.args[0], sign) + _terms(e.args[1], sign)
    if isinstance(e, Call) and e.fn == "sub":
        return _terms(e.args[0], sign) + _terms(e.args[1], -sign)
    if isinstance(e, Call) and e.fn == "neg":
        return _terms(e.args[0], -sign)
    return [(sign, e)]


def _value(factors: Sequence[tuple[object, int]], defaults: Mapping[str, float]) -> float:
    v = 1.0
    for x, k in factors:
        v *= (x.value if isinstance(x, Const) else defaults[x.id]) ** k
    return v


def canonical_form(p: Program) -> Canonical:
    """``p`` with a constant step scale folded into the learning rate and the decoupled decay
    named ``wd``. The update is read as a sum of terms, each a product of scalar factors
    (constants, hyperparameters) and a rest; when every term but those whose rest is ``w``
    has the same scalar factors K, u = K (sum of rests) + sum c_i w becomes u' = (sum of
    rests) + wd w with wd = sum c_i / K at the defaults, and scale = K. Hyperparameters left
    unused are dropped. A rule with nothing to fold is returned as it is (scale 1)."""
    from dataclasses import replace

    from ..dsl.ir import Assign

    hyper = {h for h, _ in p.hyperparameters}
    defaults = dict(p.hyperparameters)
    target, expr = None, p.update
    if isinstance(p.update, Name) and [s.target for s in p.body].count(p.update.id) == 1:
        target = p.update.id
        uses = [n for s in p.body for n in s.expr.walk() if isinstance(n, Name) and n.id == target]
        if uses or target in p.state_names:
            return Canonical(p, 1.0, [])
        expr = next(s.expr for s in p.body if s.target == target)
    terms = [(sign, *_split(e, hyper)) for sign, e in _terms(expr)]
    decay = [(s, f) for s, f, r in terms if isinstance(r, Name) and r.id == "w"]
    step = [(s, f, r) for s, f, r in terms if not (isinstance(r, Name) and r.id == "w")]
    if not step or any(r is None for _, _, r in step):
        return Canonical(p, 1.0, [])
    keys = {tuple(sorted((repr(x), k) for x, k in f)) for _, f, _ in step}
    if len(keys) != 1 or not step[0][1]:
        return Canonical(p, 1.0, [])
    scale = _value(step[0][1], defaults)
    if not math.isfinite(scale) or scale == 0.0 or scale == 1.0:
        return Canonical(p, 1.0, [])
    if scale < 0:  # a negative scale would make the learning rate negative: fold only |K|
        return Canonical(p, 1.0, [])
    new: object | None = None
    for s, _, r in step:
        new = (r if s > 0 else Call("neg", (r,))) if new is None else Call("add" if s > 0 else "sub", (new, r))
    notes = [f"the step's common factor {scale:.4g} is folded into the learning rate"]
    hp = list(p.hyperparameters)
    if decay:
        wd = sum(s * _value(f, defaults) for s, f in decay) / scale
        new = Call("add", (new, Call("mul", (Name("wd_decay"), Name("w")))))
        notes.append(f"the decoupled decay is one hyperparameter wd = {wd:.4g}")
        hp.append(("wd_decay", wd))
    body = tuple(Assign(s.target, new) if s.target == target else s for s in p.body)
    q = replace(p, body=body, update=new if target is None else p.update)
    used = {n.id for s in q.body for n in s.expr.walk() if isinstance(n, Name)}
    used |= {n.id for n in q.update.walk() if isinstance(n, Name)}
    hp = [(n, v) for n, v in hp if n in used]
    names = {n for n, _ in hp}
    rename = "wd" if "wd" not in names else "wd_decay"
    q = replace(q, hyperparameters=tuple((rename if n == "wd_decay" else n, v) for n, v in hp))
    if rename == "wd":
        q = _rename(q, "wd_decay", "wd")
    return Canonical(q, scale, notes)


def _rename(p: Program, old: str, new: str) -> Program:
    from dataclasses import replace

    from ..dsl.ir import Assign

    def sub(e):
        if isinstance(e, Name) and e.id == old:
            return Name(new)
        if isinstance(e, Call):
            return Call(e.fn, tuple(sub(a) for a in e.args))
        return e

    return replace(p, body=tuple(Assign(s.target, sub(s.expr)) for s in p.body), update=sub(p.update))


# -- adaptive rules ------------------------------------------------------------------------

#: The gradient scale factor of the adaptivity probe: large enough that an eps of 1e-8 next to
#: sqrt(v) is invisible, small enough that nothing overflows.
_ADAPTIVE_SCALE = 100.0


def second_moment_states(p: Program, steps: int = 6, seed: int = _SEED) -> list[str]:
    """The states of ``p`` (at its defaults, float64) that hold a second moment of the gradient:
    from zero states on a gradient stream G_t at fixed w, state s is one when scaling the stream
    by k (``_ADAPTIVE_SCALE``) scales s by k^2 (relative error < 1e-3) and s is not zero."""
    gen = np.random.default_rng(seed)
    w = torch.from_numpy(gen.standard_normal(40))
    stream = [torch.from_numpy(gen.standard_normal(40) * 10.0 ** gen.uniform(-1, 0.5, 40)) for _ in range(steps)]
    finals = []
    for k in (1.0, _ADAPTIVE_SCALE):
        states = [torch.zeros(40, dtype=torch.float64) for _ in p.state_names]
        gt = torch.Generator().manual_seed(seed)
        with single_threaded():
            for t, g in enumerate(stream, start=1):
                _, states = run(p, w, k * g, states, step=float(t), lr=PROBE_LR, generator=gt)
        finals.append(states)
    out = []
    for name, a, b in zip(p.state_names, *finals):
        na = float(torch.linalg.norm(a))
        if na > 0 and math.isfinite(na) and bool(torch.isfinite(b).all()):
            err = float(torch.linalg.norm(b - _ADAPTIVE_SCALE ** 2 * a)) / (_ADAPTIVE_SCALE ** 2 * na)
            if err < 1e-3:
                out.append(name)
    return out


def is_adaptive(p: Program, steps: int = 6, seed: int = _SEED) -> bool:
    """Whether ``p``'s update is normalized by a second-moment state (Adam, RMSprop and their
    kin, also behind a trust ratio as in LAMB; not momentum, sign descent or Lion), decided
    from the rule's updates alone, at its defaults in float64:

    1. some state is a second moment (:func:`second_moment_states`);
    2. the update is scale-free: with the gradient stream scaled by k = 100, |u| changes by
       less than a factor 2 (a momentum or SGD update grows by k);
    3. the update is divided by that state: rerun with the state multiplied, before every
       step, by a per-coordinate factor f_i = 10^U(-1, 1), the changes r_i = log |u'_i / u_i|
       correlate with log f_i below -0.5 (Adam's r_i is -log(f_i) / 2 exactly; an unused or
       multiplying second moment gives 0 or a positive correlation).
    """
    moments = second_moment_states(p, steps, seed)
    if not moments:
        return False
    gen = np.random.default_rng(seed)
    w = torch.from_numpy(gen.standard_normal(40))
    stream = [torch.from_numpy(gen.standard_normal(40) * 10.0 ** gen.uniform(-1, 0.5, 40)) for _ in range(steps)]
    factor = torch.from_numpy(10.0 ** gen.uniform(-1, 1, 40))

    def last_update(k: float, boost: str | None = None) -> torch.Tensor:
        states = [torch.zeros(40, dtype=torch.float64) for _ in p.state_names]
        gt = torch.Generator().manual_seed(seed)
        u = torch.zeros(40, dtype=torch.float64)
        with single_threaded():
            for t, g in enumerate(stream, start=1):
                if boost is not None:
                    states = [s * factor if n == boost else s for n, s in zip(p.state_names, states)]
                u, states = run(p, w, k * g, states, step=float(t), lr=PROBE_LR, generator=gt)
        return u

    base, scaled = last_update(1.0), last_update(_ADAPTIVE_SCALE)
    nb, ns = float(torch.linalg.norm(base)), float(torch.linalg.norm(scaled))
    if not (nb > 0 and math.isfinite(nb) and math.isfinite(ns) and 0.5 < ns / nb < 2.0):
        return False
    for s in moments:
        boosted = last_update(1.0, boost=s)
        ok = (base.abs() > 0) & (boosted.abs() > 0) & torch.isfinite(boosted)
        if int(ok.sum()) < 10:
            continue
        r = torch.log(boosted[ok].abs() / base[ok].abs()).numpy()
        f = torch.log(factor[ok]).numpy()
        if np.std(r) > 1e-9 and float(np.corrcoef(f, r)[0, 1]) < -0.5:
            return True
    return False
