"""What a found rule is, against the catalog: rediscovered, a variant, or a new structure.

Nearest catalog rule, by update correlation on probe problems: both rules run in float64
(the reference interpreter) on the same input streams, ``PROBES`` seeded probe models of
``PROBE_STEPS`` steps each. A probe model is four parameter tensors of two shapes, with
parameter and gradient scales that differ from tensor to tensor (``_MODELS``); the rule runs
on each tensor with its own states, as an optimizer runs on a model's parameters. The inputs
are shared, not the trajectories: every rule sees the same ``(w_t, g_t)`` with ``w_t`` a
random walk and ``g_t = G_t + K * w_t`` (a noisy quadratic's gradient at ``w_t``), so rules
whose steps differ only in scale (a constant the learning rate absorbs) see identical
inputs. The score is the mean over models and steps of the cosine between the two updates
u(p, t), each the concatenation of the model's tensors' updates,

    corr(a, b) = mean_{p, t} <u_a(p, t), u_b(p, t)> / (|u_a(p, t)| |u_b(p, t)|),

(1 for two zero updates, 0 for a zero against a nonzero or a non-finite update). Because
the cosine is taken over all tensors at once, a per-tensor factor (a trust ratio
norm(w) / norm(u), a per-tensor normalization or mean) changes it; within one tensor it
would not.

Classes, for a found rule F against each known catalog rule X:

- ``rediscovered X``: F is equivalent to X at X's defaults
  (:func:`optdisco.dsl.equivalence.equivalent`), or corr(F, X) >= ``SAME`` there on the
  short probes and on one long probe (``LONG_STEPS`` steps, gradient scales redrawn every 40
  steps: 20 steps cannot tell an EMA of memory 1000 from a plain sum);
- ``variant of X``: not that, but X with other hyperparameter values reaches
  corr >= ``SAME`` (X's hyperparameters fitted by a greedy search over candidate values:
  X's default, 0, and F's own constants c and 1 - c), or F and X have the same skeleton
  (their sympy forms equal once every nonzero hyperparameter and non-integer number is one
  symbol, a hyperparameter at 0 being 0); among several, the one the long probe confirms,
  then the same skeleton, then the fewest changed constants;
- ``variant of X (+ move)``: a composition, X plus one designer move M (one macro mutation
  of :mod:`optdisco.search.macro`, every choice of it enumerated by
  :func:`optdisco.search.composition.one_move_edits`), with X at its fitted constants and
  then every hyperparameter of M(X) fitted as above, reaches corr >= ``SAME`` or has F's
  skeleton. Tried (:func:`nearest_compositions`) when no plain variant has F's skeleton,
  on the catalog rules nearest to F by corr and by the scale-blind corr
  (:func:`blind_correlation`); it wins over a plain variant only where that lacks the long
  probe's confirmation or the skeleton. The class stays ``"variant"`` and ``move`` names M;
- ``new structure``: none of these, for every X; the nearest X is the one of highest fitted
  corr, and the line names the nearest one-move composition.

Only a new structure that beats tuned AdamW on the full held-out suite with its 95%
interval above 0 is a discovery (:func:`is_discovery`), so a composition of one known rule
and one catalogued move never is.
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
from .composition import Edit, one_move_edits

PROBES = 2  # models (len(_MODELS)), each of four tensors in two shape groups
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
    corr_blind: float = 0.0            # blind_correlation at the catalog defaults

    @property
    def confirmed(self) -> bool:
        """Whether the long probe confirms the short probe's corr >= SAME."""
        return self.corr_long is not None and self.corr_long >= SAME


@dataclass(frozen=True)
class CompositionMatch:
    """A found rule against catalog rule ``base`` plus one designer move: corr at the edit's
    defaults (the base at its fitted constants, the move at the macro's), the best corr over
    fitted hyperparameters and the values that reach it (against the catalog's and the
    macro's defaults), skeleton, and corr on the long probe where the short one gave >= SAME."""

    base: str
    macro: str
    move: str
    corr_default: float
    corr_fitted: float
    fitted: dict[str, float]
    same_skeleton: bool
    corr_long: float | None = None

    @property
    def confirmed(self) -> bool:
        """Whether the long probe confirms the short probe's corr >= SAME."""
        return self.corr_long is not None and self.corr_long >= SAME

    @property
    def matches(self) -> bool:
        """Whether the found rule is this composition (corr >= SAME, or the same skeleton)."""
        return self.corr_fitted >= SAME or self.same_skeleton


@dataclass(frozen=True)
class Classification:
    """``kind`` is ``"rediscovered"``, ``"variant"`` or ``"new structure"``; ``nearest`` the
    nearest catalog rule; ``label`` the class in words; ``diff`` the symbolic difference;
    ``move`` the designer move (:mod:`.composition`) that, added to ``nearest``, gives the
    rule ("variant of rmsprop (+ trust ratio)"), or None; ``compositions`` the one-move
    edits of the nearest catalog rules that were fitted."""

    kind: str
    nearest: str
    corr: float
    label: str
    diff: str
    matches: list[Match] = field(default_factory=list)
    move: str | None = None
    compositions: list[CompositionMatch] = field(default_factory=list)

    def line(self) -> str:
        """One line for a leaderboard, a report or a rule file."""
        against = self.nearest if self.move is None else f"{self.nearest} + {self.move}"
        return f"{self.label} (update correlation {self.corr:.5f} with {against}); {self.diff}"


#: One probe model: per shape group, the parameters w_t and gradients g_t of every step, each
#: of shape ``(tensors, *shape)`` (the group's tensors stacked along a batch dimension).
Probe = list[tuple[list[torch.Tensor], list[torch.Tensor]]]

#: The probe models: per model, its shape groups as (shape, per-tensor parameter scales,
#: per-tensor gradient scales). The scales differ from tensor to tensor and the ratios of the
#: two differ, so that a per-tensor factor (a trust ratio norm(w) / norm(u), a per-tensor
#: normalization, a mean over the tensor) reweights the tensors of the concatenated update.
_MODELS: tuple[tuple[tuple[tuple[int, ...], tuple[float, ...], tuple[float, ...]], ...], ...] = (
    (((6, 5), (0.05, 3.0), (1.0, 0.3)), ((40,), (1.0, 0.2), (0.05, 2.0))),
    (((4, 8), (2.0, 0.1), (0.2, 1.0)), ((30,), (0.5, 5.0), (3.0, 0.1))),
)
_LONG_MODEL = ((((6, 5), (0.1, 1.0, 4.0), (1.0, 0.1, 0.5)),),)


def _probes(models, steps: int, regime: int, seed: int) -> list[Probe]:
    """Shared inputs: per model and shape group, the parameters w_t and gradients g_t of every
    step, with g_t = s * G_t + K * w_t (G_t standard normal times a per-coordinate scale redrawn
    every ``regime`` steps, so that long and short memories of the gradient's square differ
    within the probe; s the tensor's gradient scale; K a diagonal curvature in even models)."""
    gen = np.random.default_rng(seed)
    out = []
    for k, groups in enumerate(models):
        model = []
        for shape, w_scales, g_scales in groups:
            full = (len(w_scales), *shape)
            tensor_axes = (slice(None),) + (None,) * len(shape)
            w_scale = np.asarray(w_scales)[tensor_axes]
            g_scale = np.asarray(g_scales)[tensor_axes]
            curvature = gen.uniform(0.1, 2.0, full) * (k % 2 == 0)
            w = gen.standard_normal(full) * w_scale
            ws, gs = [], []
            for t in range(steps):
                if t % regime == 0:
                    scale = 10.0 ** gen.uniform(-2, 0.5, full)
                ws.append(torch.from_numpy(w.copy()))
                gs.append(torch.from_numpy(gen.standard_normal(full) * scale * g_scale + curvature * w))
                w = w - 0.05 * gs[-1].numpy() + 0.01 * w_scale * gen.standard_normal(full)
            model.append((ws, gs))
        out.append(model)
    return out


_PROBES = _probes(_MODELS, PROBE_STEPS, PROBE_STEPS, _SEED)
#: One long model, for the claims that rest on corr ~ 1: a 20-step probe cannot tell an EMA
#: of memory 1000 steps from a plain sum, nor small bias-correction differences.
_LONG = _probes(_LONG_MODEL, LONG_STEPS, 40, _SEED + 1)


def probe_updates(p: Program, hyperparameters: Mapping[str, float] | None = None, *,
                  long: bool = False, steps: int | None = None, models: int | None = None) -> list[np.ndarray]:
    """The updates of ``p`` (float64) on every probe model and step, each the concatenation of
    the flattened updates of the model's tensors, in order (``long``: on the long probe
    instead; ``steps``: only the first ``steps`` steps of each model; ``models``: only the
    first ``models`` models)."""
    return probe_updates_batch(p, [dict(hyperparameters or {})], long=long, steps=steps, models=models)[0]


def probe_updates_batch(p: Program, settings: Sequence[Mapping[str, float]], *, long: bool = False,
                        steps: int | None = None, models: int | None = None) -> list[list[np.ndarray]]:
    """:func:`probe_updates` for each hyperparameter setting in ``settings``, in one batched
    run per shape group and step (the settings, then the group's tensors, along two leading
    batch dimensions, batch_dims=2, so whole-tensor reductions stay per setting and tensor)."""
    n = len(settings)
    names = [h for h, _ in p.hyperparameters]
    defaults = dict(p.hyperparameters)
    out: list[list[np.ndarray]] = [[] for _ in range(n)]
    with single_threaded():
        for k, model in enumerate((_LONG if long else _PROBES)[:models]):
            per_group: list[list[torch.Tensor]] = []
            for j, (ws, gs) in enumerate(model):
                ones = (1,) * ws[0].dim()
                hyper = {h: torch.tensor([float(s.get(h, defaults[h])) for s in settings],
                                         dtype=torch.float64).reshape(n, *ones) for h in names}
                gen = torch.Generator().manual_seed(_SEED + 16 * k + j)
                states = zero_states(p, torch.zeros((n, *ws[0].shape), dtype=torch.float64), batch_dims=2)
                us = []
                for t, (w, g) in enumerate(zip(ws[:steps], gs[:steps]), start=1):
                    wb, gb = w.expand(n, *w.shape), g.expand(n, *g.shape)
                    u, states = run(p, wb, gb, states, step=float(t), lr=PROBE_LR, hyperparameters=hyper,
                                    batch_dims=2, generator=gen)
                    us.append(u.reshape(n, -1))
                per_group.append(us)
            for step_us in zip(*per_group):
                joined = torch.cat(step_us, dim=1).numpy()
                for i in range(n):
                    out[i].append(joined[i])
    return out


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = math.sqrt(float(np.dot(a, a))), math.sqrt(float(np.dot(b, b)))
    if not (math.isfinite(na) and math.isfinite(nb)):  # a nan or inf (or an overflowing) entry
        return 0.0
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(np.dot(a, b) / (na * nb))


def correlation(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """Mean per-step cosine between two rules' probe updates (see the module doc)."""
    return float(np.mean([_cos(x, y) for x, y in zip(a, b)]))


def _tensor_sizes(models) -> list[list[int]]:
    return [[math.prod(shape) for shape, w_scales, _ in groups for _ in w_scales] for groups in models]


_SIZES = _tensor_sizes(_MODELS)


def blind_correlation(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """The scale-blind corr of two rules' (short) probe updates: the mean over models, steps
    and tensors of the cosine within one tensor, so blind to any per-tensor factor (a trust
    ratio); used to choose the catalog rules a one-move composition starts from."""
    out = []
    for i, (x, y) in enumerate(zip(a, b)):
        cuts = np.cumsum(_SIZES[i // PROBE_STEPS])[:-1]
        out += [_cos(p, q) for p, q in zip(np.split(x, cuts), np.split(y, cuts))]
    return float(np.mean(out))


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
    (so Lion with beta1 = beta2 has Signum's skeleton: coarse, on the side of "not new"),
    except a hyperparameter whose value is 0, which is 0 (a term times wd = 0 is not there)."""
    from dataclasses import replace
    zeros = replace(p, docstring=None, hyperparameters=tuple((n, 0.0 if v == 0.0 else 1.0)
                                                             for n, v in p.hyperparameters))
    return _skeleton(zeros.source())


@functools.lru_cache(maxsize=1024)
def _skeleton(source: str) -> tuple[str, ...]:
    from ..dsl import parse
    from ..dsl.symbolic import Timeout, time_limit
    p = eliminate_dead_code(parse(source))
    rule = to_sympy(p)
    c = sympy.Symbol("c")
    subs: dict[sympy.Basic, sympy.Basic] = {rule.symbols[h]: sympy.Integer(0) if v == 0.0 else c
                                            for h, v in p.hyperparameters}
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
    that differ (after fitting), and whether the skeletons (:func:`skeleton`, at those values) agree."""
    parts = [f"{n} = {v:.4g} (catalog {dict(x.hyperparameters)[n]:.4g})" for n, v in fitted.items()]
    same = _same_skeleton(found, _with_values(x, fitted))
    where = f"same skeleton as {x.name}" if same else f"not {x.name}'s skeleton"
    return where + (f"; at {', '.join(parts)}" if parts else "")


#: How many catalog rules, nearest first by fitted corr and by scale-blind corr, get every
#: one-move edit tried (up to twice this many in all).
COMPOSITION_BASES = 2
#: The first steps of the first probe model on which every edit is screened (corr at its defaults).
SCREEN_STEPS = 4
#: How many edits, best by screened corr, get the full probe and their constants fitted.
FIT_COMPOSITIONS = 4


def _with_values(x: Program, values: Mapping[str, float]) -> Program:
    from dataclasses import replace
    return replace(x, hyperparameters=tuple((n, float(values.get(n, v))) for n, v in x.hyperparameters))


def _screen_steps(us: Sequence[np.ndarray]) -> list[np.ndarray]:
    return list(us[:SCREEN_STEPS])


def nearest_compositions(found: Program, found_u: Sequence[np.ndarray], matches: Sequence[Match],
                         rules: Mapping[str, Program]) -> list[CompositionMatch]:
    """The one-move compositions (:func:`optdisco.search.composition.one_move_edits`) of the
    ``COMPOSITION_BASES`` catalog rules nearest to ``found`` (highest fitted corr), each base
    at the constants fitted for it, fitted against ``found``: every edit is screened by its
    corr at its defaults on the first ``SCREEN_STEPS`` steps of the first probe model; the
    ``FIT_COMPOSITIONS`` best (one per distinct screened update) get the full probe, their
    hyperparameters fitted as in :func:`classify`, their skeleton compared, and the long probe
    where the fitted corr reaches ``SAME``. Best first."""
    found_screen = _screen_steps(found_u)
    # a base that already matches needs no move; the scale-blind order finds the base of a
    # per-tensor move (a trust ratio) that the concatenated corr ranks low
    open_ = [m for m in matches if m.corr_fitted < SAME]
    by_corr = sorted(open_, key=lambda m: (-round(m.corr_fitted, 6), len(m.fitted)))
    by_blind = sorted(open_, key=lambda m: -round(m.corr_blind, 6))
    bases = list(dict.fromkeys([m.name for m in by_corr[:COMPOSITION_BASES]]
                               + [m.name for m in by_blind[:COMPOSITION_BASES]]))
    by_name = {m.name: m for m in matches}
    screened: list[tuple[float, str, Edit, dict[str, float]]] = []
    seen: set[bytes] = set()
    for name in bases:
        x = _with_values(rules[name], by_name[name].fitted)
        reference = dict(rules[name].hyperparameters)
        base_screen = probe_updates(x, steps=SCREEN_STEPS, models=1)
        for edit in one_move_edits(x):
            try:
                us = probe_updates(edit.program, steps=SCREEN_STEPS, models=1)
            except Exception:  # noqa: BLE001 - an edit the probes cannot run (a shape it rejects)
                continue
            key = np.round(np.concatenate(us), 12).tobytes()
            if key in seen or correlation(base_screen, us) >= SAME:
                continue  # updates already kept (another site or base), or a move that does nothing here
            seen.add(key)
            screened.append((correlation(found_screen, us), name, edit, reference))
    screened.sort(key=lambda s: -s[0])
    found_long: list[np.ndarray] | None = None
    out = []
    for _, name, edit, reference in screened[:FIT_COMPOSITIONS]:
        q = edit.program
        at_default = correlation(found_u, probe_updates(q))
        fitted_c, fit = (at_default, {}) if at_default >= SAME else _fit(found_u, q, found)
        values = {**dict(q.hyperparameters), **fit}
        start = {**dict(q.hyperparameters), **reference}  # the catalog's constants, the macro's defaults
        changed = {n: v for n, v in values.items() if v != start[n]}
        long_c = None
        if fitted_c >= SAME:
            found_long = found_long if found_long is not None else probe_updates(found, long=True)
            long_c = correlation(found_long, probe_updates(q, fit, long=True))
        out.append(CompositionMatch(name, edit.macro, edit.move, at_default, fitted_c, changed,
                                    _same_skeleton(found, _with_values(q, fit)), long_c))
    return sorted(out, key=lambda c: (not c.matches, not c.confirmed, not c.same_skeleton, len(c.fitted),
                                      -round(c.corr_fitted, 6)))


def _constants_text(values: Mapping[str, float], reference: Mapping[str, float]) -> str:
    return ", ".join(f"{n} = {v:.4g}" + (f" (catalog {reference[n]:.4g})" if n in reference else "")
                     for n, v in values.items())


def classify(found: Program, catalog_rules: Mapping[str, Program] | None = None, *,
             compositions: bool = True) -> Classification:
    """The class of ``found`` against ``catalog_rules`` (default: :func:`known_rules`), by the
    rules of the module doc. Every catalog rule gets its hyperparameters fitted (batched
    probe runs); then, unless a catalog rule of the same skeleton was found (or with
    ``compositions`` False), the one-move compositions of the nearest catalog rules
    (:func:`nearest_compositions`)."""
    rules = dict(catalog_rules if catalog_rules is not None else known_rules())
    found_u = probe_updates(found)
    found_long: list[np.ndarray] | None = None
    matches: list[Match] = []
    for n, x in rules.items():
        x_u = probe_updates(x)
        at_default = correlation(found_u, x_u)
        fitted_c, fitted = (at_default, {}) if at_default >= SAME else _fit(found_u, x, found)
        eq = bool(equivalent(found, x)) if at_default >= SAME else False
        long_c = None
        if fitted_c >= SAME:
            found_long = found_long if found_long is not None else probe_updates(found, long=True)
            long_c = correlation(found_long, probe_updates(x, fitted, long=True))
        matches.append(Match(n, at_default, fitted_c, fitted, eq, _same_skeleton(found, _with_values(x, fitted)), long_c,
                             blind_correlation(found_u, x_u)))
    same_now = [m for m in matches if m.equivalent or (m.corr_default >= SAME and m.confirmed)]
    if same_now:
        m = max(same_now, key=lambda m: (m.equivalent, m.same_skeleton, m.corr_default))
        how = "equivalent program" if m.equivalent else \
            f"same updates at the catalog constants ({LONG_STEPS}-step probe: {m.corr_long:.6f})"
        return Classification("rediscovered", m.name, m.corr_default, f"rediscovered {m.name}", how, matches)
    variants = [m for m in matches if m.corr_fitted >= SAME or m.same_skeleton]
    # the long probe's confirmation first, then the same skeleton, then the fewest changed
    # constants, the closer updates, and the shorter catalog rule
    best = max(variants, key=lambda m: (m.confirmed, m.same_skeleton, -len(m.fitted), round(m.corr_fitted, 6),
                                        -len(rules[m.name].body))) if variants else None

    def variant(m: Match, comps: list[CompositionMatch]) -> Classification:
        diff = symbolic_diff(found, rules[m.name], m.fitted)
        if m.corr_long is not None and not m.confirmed:
            diff += f"; the {LONG_STEPS}-step probe tells them apart (correlation {m.corr_long:.5f})"
        return Classification("variant", m.name, m.corr_fitted, f"variant of {m.name}", diff, matches,
                              compositions=comps)

    if best is not None and (best.same_skeleton or not compositions):
        return variant(best, [])
    comps = nearest_compositions(found, found_u, matches, rules) if compositions else []
    hit = comps[0] if comps and comps[0].matches else None
    # a composition wins over a plain variant only by a confirmation or a skeleton the variant lacks
    if hit is not None and (best is None or (hit.confirmed, hit.same_skeleton) > (best.confirmed, best.same_skeleton)):
        x = rules[hit.base]
        diff = (f"{hit.base} with one move, {hit.move}; "
                + ("same skeleton" if hit.same_skeleton else f"not the skeleton of {hit.base} + {hit.move}"))
        if hit.fitted:
            diff += "; at " + _constants_text(hit.fitted, dict(x.hyperparameters))
        if hit.corr_long is not None and not hit.confirmed:
            diff += f"; the {LONG_STEPS}-step probe tells them apart (correlation {hit.corr_long:.5f})"
        return Classification("variant", hit.base, hit.corr_fitted, f"variant of {hit.base} (+ {hit.move})", diff,
                              matches, move=hit.move, compositions=comps)
    if best is not None:
        return variant(best, comps)
    m = max(matches, key=lambda m: (round(m.corr_fitted, 4), -len(m.fitted)))
    diff = f"nearest {m.name}: " + symbolic_diff(found, rules[m.name], m.fitted)
    if comps:
        c = max(comps, key=lambda c: round(c.corr_fitted, 6))
        diff += f"; nearest one-move composition {c.base} + {c.move} (update correlation {c.corr_fitted:.5f})"
    return Classification("new structure", m.name, m.corr_fitted, "new structure", diff, matches,
                          compositions=comps)


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
