"""The structural detector of adaptive rules (an update normalized by a second-moment state),
which benchmarks/bench_discovery.py counts rediscoveries by."""

from __future__ import annotations

import pytest

from optdisco import catalog, parse
from optdisco.search.classify import is_adaptive, second_moment_states


@pytest.mark.parametrize("name", ["adam", "adamw", "rmsprop", "nadamw", "adabelief", "lamb", "amsgrad", "yogi"])
def test_adaptive_catalog_rules_are_detected(name):
    assert is_adaptive(catalog.get(name))


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "signsgd", "lion", "lars", "qhm"])
def test_non_adaptive_catalog_rules_are_not(name):
    assert not is_adaptive(catalog.get(name))


def test_second_moment_detector_needs_the_square_and_the_division():
    unused = parse("def r(w, g, m, v):\n    m = interp(g, m, 0.9)\n    v = interp(square(g), v, 0.99)\n"
                   "    return m, m, v\n")
    times = parse("def r(w, g, v):\n    v = interp(square(g), v, 0.99)\n    return g * sqrt(v), v\n")
    first_moment = parse("def r(w, g, v):\n    v = interp(abs(g), v, 0.99)\n    return g / (v + 1e-8), v\n")
    assert second_moment_states(unused) == ["v"] and not is_adaptive(unused)
    assert not is_adaptive(times)
    assert second_moment_states(first_moment) == [] and not is_adaptive(first_moment)
    rms_clip = parse("def r(w, g, v):\n    v = interp(square(g), v, 0.99)\n"
                     "    return clip(g / (sqrt(v) + 1e-8), 1.0), v\n")
    assert is_adaptive(rms_clip)
