"""A known rule plus one designer move is "variant of X (+ move)", never new structure; the
probes see per-tensor scales (a trust ratio) that a one-tensor cosine cannot."""

from __future__ import annotations

import numpy as np

from optdisco import catalog, parse
from optdisco.search.classify import (SAME, blind_correlation, classify, correlation, is_discovery,
                                      probe_updates, skeleton)
from optdisco.search.composition import DESIGNER_MOVES, one_move_edits
from optdisco.search.macro import cautious, trust_ratio
from optdisco.search.mutate import Space

ROOM = Space(max_statements=64, max_states=8)


def rules(*names: str):
    return {n: catalog.get(n) for n in names}


def test_the_probes_see_a_trust_ratio_that_a_per_tensor_cosine_cannot():
    rmsprop = catalog.get("rmsprop")
    scaled = trust_ratio(rmsprop, np.random.default_rng(0), ROOM)
    a, b = probe_updates(rmsprop), probe_updates(scaled)
    assert correlation(a, b) < 0.9
    assert blind_correlation(a, b) > 1.0 - 1e-9  # within each tensor the direction is the same


def test_rmsprop_with_a_trust_ratio_is_a_variant_of_rmsprop_plus_trust_ratio():
    # as a search would leave it: other names, other constants, the ratio on a temporary;
    # LAMB with beta1 -> 0 makes the same updates, but not with the same skeleton
    p = parse("def r(w, g, s, *, a=0.95, e=1e-6):\n    s = interp(square(g), s, a)\n"
              "    d = g / (sqrt(s) + e)\n    return d * (norm(w) / (norm(d) + 1e-8)), s\n")
    c = classify(p, rules("rmsprop", "lamb", "adam", "sgd"))
    assert c.kind == "variant" and c.label == "variant of rmsprop (+ trust ratio)", c.line()
    assert c.nearest == "rmsprop" and c.move == "trust ratio" and c.corr >= SAME
    assert "rmsprop + trust ratio" in c.line() and "alpha = 0.95" in c.diff
    assert not is_discovery(c.kind, 1.0, 0.5)


def test_adamw_with_a_cautious_mask_is_cautious_adamw_or_adamw_plus_the_mask():
    p = cautious(catalog.get("adamw"), np.random.default_rng(0), ROOM)
    c = classify(p, rules("adamw", "cautious_adamw", "adam", "momentum"))
    assert c.label in {"rediscovered cautious_adamw", "variant of cautious_adamw",
                       "variant of adamw (+ cautious mask)"}, c.line()
    assert not is_discovery(c.kind, 1.0, 0.5)


def test_a_rule_no_single_move_reaches_stays_new_structure():
    p = parse("def r(w, g, m, *, beta=0.9):\n    m = interp(abs(g), m, beta)\n"
              "    u = g * tanh(m) + 0.3 * square(g) * w\n    return u, m\n")
    c = classify(p, rules("momentum", "sgd", "adam", "lion"))
    assert c.kind == "new structure" and c.move is None, c.line()
    assert c.compositions and all(not m.matches for m in c.compositions)
    assert "nearest one-move composition" in c.diff


def test_without_compositions_the_trust_ratio_rule_is_no_variant_of_rmsprop():
    p = trust_ratio(catalog.get("rmsprop"), np.random.default_rng(0), ROOM)
    c = classify(p, rules("rmsprop", "sgd"), compositions=False)
    assert c.kind == "new structure", c.line()


def test_one_move_edits_cover_every_designer_move_and_are_valid_distinct_programs():
    adam = catalog.get("adam")
    edits = one_move_edits(adam)
    assert {e.macro for e in edits} == set(DESIGNER_MOVES)
    sources = [e.program.source() for e in edits]
    assert len(set(sources)) == len(sources) and adam.source() not in sources
    assert all(parse(s).source() == s for s in sources)
    moves = {e.move for e in edits}
    assert {"trust ratio", "cautious mask", "decoupled weight decay", "Nesterov look-ahead of m",
            "bias correction of m", "sign of the update", "clip of g"} <= moves


def test_a_hyperparameter_at_zero_drops_its_term_from_the_skeleton():
    with_decay = parse("def a(w, g, *, wd=0.0):\n    return g + wd * w\n")
    assert skeleton(with_decay) == skeleton(parse("def b(w, g):\n    return g\n"))
    assert skeleton(parse("def a(w, g, *, wd=0.1):\n    return g + wd * w\n")) != skeleton(with_decay)
