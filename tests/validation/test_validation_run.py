"""optdisco validate's run: the torch loop agrees with the batched evaluator, statistics, resume."""

from __future__ import annotations

import math
import re

import pytest
import torch

from optdisco.evaluators import ADAMW, Run, get_task, train
from optdisco.validation.run import (ResultsFile, Settings, mean_curve, state_bytes, steps_to_reach, t_interval,
                                     train_unit, unit_key, validate)
from optdisco.validation.targets import rule_contender

TINY = Settings(seeds=2, budget=0.05, grid=(1e-3, 1e-2, 1e-1), extend=1, n_evals=4)


@pytest.mark.parametrize("task_name", ["ho_char_lm", "ho_resnet", "logreg"])
def test_torch_loop_matches_batched_evaluator(task_name, rules):
    # Same init, minibatches, schedule and divergence rule; with the interpreter backend the
    # leaf-tensor loop through optdisco.Optimizer reproduces train.train's curve.
    task = get_task(task_name)
    for prog, lr in [(ADAMW, 1e-2), (rules["lion"], 1e-3)]:
        (ref,) = train(task, [prog], [Run(0, lr, 1)], steps=12, n_evals=4)
        unit = train_unit(task, rule_contender(prog, backend="eager").make, lr, 1, 12, n_evals=4)
        assert [s for s, _ in unit.curve] == [3, 6, 9, 12]
        assert [v for _, v in unit.curve] == pytest.approx(ref.curve, rel=1e-5)
        assert unit.failure is None and unit.steps_done == 12


def test_divergence_is_a_failure_not_a_crash(rules):
    unit = train_unit(get_task("logreg"), rule_contender(rules["exploder"]).make, 1.0, 0, 10)
    assert unit.loss == math.inf and unit.steps_done < 10
    assert unit.failure is not None and re.fullmatch(
        r"(training loss exploded|non-finite (training loss|parameters or validation loss)) (at|after) step \d+.*",
        unit.failure)


def test_bf16_parameters_with_float32_states_on_cpu():
    # The GPU path (bf16 leaf parameters under autocast, float32 rule states), run on CPU.
    task = get_task("ho_mixer")
    unit = train_unit(task, rule_contender(ADAMW).make, 1e-2, 0, 6, dtype="bf16", n_evals=2)
    assert unit.failure is None and math.isfinite(unit.loss)
    assert unit.state_bytes == 2 * 4 * task.n_params  # m and v in float32


def test_t_interval_and_steps_to_match():
    mean, lo, hi = t_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and hi - mean == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-3)
    assert t_interval([2.0]) == (2.0, 2.0, 2.0)
    assert t_interval([1.0, math.inf])[0] == math.inf
    curve = mean_curve([[(5, 3.0), (10, 1.0)], [(5, 1.0), (10, 0.5)]])
    assert curve == [(5, 2.0), (10, 0.75)]
    assert steps_to_reach(curve, 2.0) == 5 and steps_to_reach(curve, 0.1) is None


def test_interrupted_validation_resumes_without_retraining(tmp_path, rules):
    sgd = rule_contender(rules["sgd"])
    path = tmp_path / "r.results.jsonl"

    class Stop(Exception):
        pass

    seen = []

    def stop_after_three(key, unit):
        seen.append(key)
        if len(seen) == 3:
            raise Stop

    with pytest.raises(Stop):
        validate([sgd], ["ho_quadratic"], TINY, path, progress=False, on_unit=stop_after_three)
    assert len(ResultsFile(path).units) == 3
    with open(path, "a") as f:
        f.write('{"key": "torn')   # a line cut by a kill is ignored
    full = validate([sgd], ["ho_quadratic"], TINY, path, progress=False)
    assert full.reused == 3 and full.trained > 0
    again = validate([sgd], ["ho_quadratic"], TINY, path, progress=False)
    assert again.trained == 0 and again.reused == full.reused + full.trained
    assert set(full.results) == {("adamw", "ho_quadratic"), ("lion", "ho_quadratic"), ("sgd", "ho_quadratic")}
    w = full.results[("sgd", "ho_quadratic")]
    assert len(w.losses) == 2 and len(w.curves[0]) == 4 and w.lr in w.tried
    # every contender got the same tuning grid and budget
    assert all(set(TINY.grid) <= set(full.results[(n, "ho_quadratic")].tried) for n in ("adamw", "lion", "sgd"))
    assert full.summary("sgd")["ho_quadratic"]["adamw_loss"] == full.results[("adamw", "ho_quadratic")].interval[0]
    only = validate([sgd], ["ho_quadratic", "logreg"], TINY, path, progress=False, train=False)
    assert only.trained == 0 and only.missing > 0 and ("sgd", "logreg") not in only.results


def test_a_rule_equal_to_a_baseline_runs_once(tmp_path):
    from optdisco import catalog
    lion = rule_contender(catalog.get("lion"))
    val = validate([lion], ["ho_quadratic"], TINY, tmp_path / "r.jsonl", progress=False)
    assert [c.name for c in val.contenders] == ["adamw", "lion"]


def test_results_key_separates_settings(tmp_path):
    c, task = rule_contender(ADAMW), get_task("logreg")
    keys = {unit_key(c, task, s, 10, 0, 1e-3, 4) for s in (TINY, Settings(dtype="bf16"), Settings(scale="gpu"))}
    assert len(keys) == 3
    assert unit_key(c, task, TINY, 10, 0, 1e-3, 4) == unit_key(c, task, Settings(seeds=9), 10, 0, 0.001, 4)


def test_state_bytes_counts_float32_states_not_steps():
    w = torch.nn.Parameter(torch.zeros(10, dtype=torch.bfloat16))
    opt = rule_contender(ADAMW).make([w], 1e-3)
    w.grad = torch.ones_like(w)
    opt.step()
    assert state_bytes(opt) == 2 * 10 * 4


@pytest.mark.parametrize("name,per_param", [
    # L (6 x 6), R (3 x 3); then m (18), v (6 x 1); then p0, m, v, s (18 each), d and num (1 each)
    ("shampoo", 36 + 9), ("adam_mini", 18 + 6), ("prodigy", 4 * 18 + 2)])
def test_state_bytes_count_matrix_and_group_states_at_their_stored_size(name, per_param):
    from optdisco import catalog
    w = torch.nn.Parameter(torch.zeros(6, 3))
    opt = rule_contender(catalog.get(name)).make([w], 1e-3)
    w.grad = torch.ones_like(w)
    opt.step()
    assert state_bytes(opt) == 4 * per_param


def test_time_to_result_and_performance_profiles_on_a_hand_made_validation():
    from types import SimpleNamespace

    from optdisco.validation.run import Validation, Workload, performance_profiles, profile_scores

    def workload(curve, seconds):
        return Workload(1e-3, {}, [curve[-1][1]], [curve], None, 0.01, 0, 100, seconds)

    val = Validation(TINY, [SimpleNamespace(name=n) for n in ("adamw", "a", "b")], ["t1", "t2"])
    val.results = {("adamw", "t1"): workload([(50, 2.0), (100, 1.0)], 10.0),
                   ("a", "t1"): workload([(50, 1.0), (100, 0.5)], 10.0),      # 50 steps, 5 s
                   ("b", "t1"): workload([(50, 3.0), (100, 2.0)], 1.0),       # never
                   ("adamw", "t2"): workload([(50, 2.0), (100, 1.0)], 10.0),  # 100 steps, 10 s
                   ("a", "t2"): workload([(50, 2.0), (100, 1.0)], 40.0),      # 100 steps, 40 s
                   ("b", "t2"): workload([(25, 1.0), (100, 0.2)], 8.0)}       # 25 steps, 2 s
    assert val.time_to_result("a", "t1") == (50, 5.0)
    assert val.time_to_result("b", "t1") == (None, None)
    assert val.time_to_result("b", "t2") == (25, 2.0)
    assert val.summary("a")["t2"]["seconds_to_match_adamw"] == 40.0
    rho = performance_profiles(val, [1.0, 2.0, 5.0, 20.0])
    assert rho == {"adamw": [0.0, 0.5, 1.0, 1.0], "a": [0.5, 0.5, 0.5, 1.0], "b": [0.5, 0.5, 0.5, 0.5]}
    scores = profile_scores(val)
    assert scores["a"] == pytest.approx(0.5) and scores["b"] == pytest.approx(0.5)
    assert scores["adamw"] == pytest.approx(1 / 3, abs=0.01)
