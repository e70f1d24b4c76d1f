import math

import pytest

from optdisco.evaluators import WORST_LOG_RATIO, bootstrap_ci, log_ratio, mean_fitness, prob_beats
from optdisco.evaluators.tasks import suite_tasks


def test_log_ratio_known_values():
    assert log_ratio(2.0, 1.0) == pytest.approx(math.log(2))
    assert log_ratio(1.0, 4.0) == pytest.approx(-math.log(4))
    assert log_ratio(1.0, math.inf) == WORST_LOG_RATIO
    assert log_ratio(1.0, math.nan) == WORST_LOG_RATIO
    assert log_ratio(1.0, 1e-30) == 10.0          # clamped
    assert log_ratio(1e-3, 1e-9, floor=1e-6) == pytest.approx(math.log(1e3))  # floored


def test_mean_and_ci_known_numbers():
    ratios = {"a": [1.0, 1.0], "b": [0.0, 0.0]}
    assert mean_fitness(ratios) == 0.5
    assert bootstrap_ci(ratios) == (0.5, 0.5)  # no spread within any task
    one_seed = {"a": [0.3], "b": [-0.1]}
    assert bootstrap_ci(one_seed) == pytest.approx((0.1, 0.1))
    spread = {"a": [0.0, 1.0], "b": [0.0, 0.0]}
    lo, hi = bootstrap_ci(spread, n_boot=4000)
    # replicate means of task a are 0, 0.5 or 1 (p = 1/4, 1/2, 1/4), halved by task b's zero
    assert lo == 0.0 and hi == 0.5
    assert lo <= mean_fitness(spread) <= hi


def test_prob_beats_known_numbers():
    base = {"a": [1.0, 2.0], "b": [1.0]}
    cand = {"a": [1.5, 0.5], "b": [math.inf]}
    # task a: pairs (1.5<1?no)(1.5<2 yes)(0.5<1 yes)(0.5<2 yes) = 3/4; task b: lost
    assert prob_beats(base, cand) == pytest.approx((0.75 + 0.0) / 2)
    assert prob_beats({"a": [1.0]}, {"a": [1.0]}) == 0.5


def test_standardized_aggregate_divides_each_task_by_its_catalog_spread():
    from optdisco.evaluators.fitness import TASK_SCALES, standardized
    ratios = {"rosenbrock": [1.706], "char_lm": [0.029], "unknown_task": [0.5], "autoencoder": [WORST_LOG_RATIO]}
    z = standardized(ratios)
    assert z["rosenbrock"] == pytest.approx([1.0]) and z["char_lm"] == pytest.approx([1.0])
    assert z["unknown_task"] == [0.5] and z["autoencoder"] == [WORST_LOG_RATIO]
    assert standardized({"char_lm": [5.0]})["char_lm"] == [10.0]  # clamped to the best ratio
    assert set(TASK_SCALES) == set(suite_tasks("proxy"))
