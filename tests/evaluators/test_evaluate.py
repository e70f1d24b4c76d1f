import json
import math

import pytest

from optdisco.dsl import Program
from optdisco.dsl.ir import Assign, Call, Name
from optdisco.evaluators import ADAMW, WORST_LOG_RATIO, evaluate

TASKS = ["quadratic", "logreg"]
SMALL = dict(tasks=TASKS, budget=0.25)


def test_adamw_against_itself_is_zero_and_deterministic(tmp_path):
    (ev,) = evaluate([ADAMW], cache_dir=tmp_path, **SMALL)
    assert ev.failure is None
    assert ev.fitness == 0.0 and ev.ci_low == ev.ci_high == 0.0
    assert ev.per_task == {"quadratic": 0.0, "logreg": 0.0}
    assert ev.p_beats_baseline == 0.5
    assert ev.tuned_lr == ev.baseline_lr
    assert set(ev.curves) == set(TASKS) and all(len(c) >= 2 for c in ev.curves.values())
    props = ev.properties["logreg"]
    assert set(props) == {"weight_norm", "frac_near_zero", "effective_rank", "sharpness"}
    assert props["weight_norm"] > 0 and 0 <= props["frac_near_zero"] <= 1
    assert 1 <= props["effective_rank"] <= 10 and props["sharpness"] > 0
    (again,) = evaluate([ADAMW], cache_dir=tmp_path, **SMALL)
    assert again.losses == ev.losses and again.tuned_lr == ev.tuned_lr


def test_baseline_cache_is_read(tmp_path, rules):
    evaluate([rules["sgd"]], cache_dir=tmp_path, **SMALL)
    files = sorted((tmp_path / "baselines").glob("*.json"))
    assert len(files) == 2
    # Doubling the cached baseline losses must show up as exactly log(2) for AdamW itself.
    for f in files:
        entry = json.loads(f.read_text())
        entry["losses"] = {s: 2 * l for s, l in entry["losses"].items()}
        f.write_text(json.dumps(entry))
    (ev,) = evaluate([ADAMW], cache_dir=tmp_path, **SMALL)
    for t in TASKS:
        assert ev.per_task[t] == pytest.approx(math.log(2), rel=1e-6)


def test_env_var_sets_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTDISCO_CACHE", str(tmp_path / "c"))
    evaluate([ADAMW], tasks=["quadratic"], budget=0.1)
    assert list((tmp_path / "c" / "baselines").glob("quadratic-*.json"))


def test_batch_of_candidates_with_failures(tmp_path, rules):
    broken = Program(name="broken", state_names=(), hyperparameters=(),
                     body=(Assign("u", Call("frobnicate", (Name("g"),))),), update=Name("u"))
    evs = evaluate([rules["lion"], broken, rules["exploder"], ADAMW], cache_dir=tmp_path, **SMALL)
    lion, bad, boom, adamw = evs
    assert adamw.fitness == 0.0 and adamw.failure is None
    assert lion.failure is None and math.isfinite(lion.fitness)
    assert bad.fitness == WORST_LOG_RATIO and "rule error" in bad.failure and "frobnicate" in bad.failure
    assert boom.fitness == WORST_LOG_RATIO and boom.failure
    assert all(math.isnan(v) for v in bad.tuned_lr.values())
    (alone,) = evaluate([rules["lion"]], cache_dir=tmp_path, **SMALL)
    for t in TASKS:
        assert alone.losses[t][0] == pytest.approx(lion.losses[t][0], rel=1e-4)


def test_seeds_give_intervals(tmp_path, rules):
    (ev,) = evaluate([rules["lion"]], cache_dir=tmp_path, seeds=3, **SMALL)
    assert all(len(v) == 3 for v in ev.losses.values())
    assert all(len(v) == 3 for v in ev.baseline_losses.values())
    assert ev.ci_low <= ev.fitness <= ev.ci_high
    assert 0.0 <= ev.p_beats_baseline <= 1.0


def test_time_limit_is_a_failure(tmp_path):
    evaluate([ADAMW], cache_dir=tmp_path, **SMALL)  # baselines cached first
    # 1 microsecond: already over at the first step of the first task, however fast the machine
    (ev,) = evaluate([ADAMW], cache_dir=tmp_path, time_limit=1e-6, **SMALL)
    assert ev.failure and "time limit" in ev.failure
    assert ev.fitness == WORST_LOG_RATIO


def test_standardized_aggregate_keeps_per_task_values_and_rescales_fitness(tmp_path, rules):
    from optdisco.evaluators.fitness import TASK_SCALES
    (plain,) = evaluate([rules["lion"]], cache_dir=tmp_path, **SMALL)
    (z,) = evaluate([rules["lion"]], cache_dir=tmp_path, aggregate="standardized", **SMALL)
    assert z.per_task == plain.per_task
    expected = sum(max(min(v / TASK_SCALES[t], 10.0), -10.0) for t, v in plain.per_task.items()) / len(plain.per_task)
    assert z.fitness == pytest.approx(expected)
    with pytest.raises(ValueError, match="aggregate"):
        evaluate([rules["lion"]], cache_dir=tmp_path, aggregate="max", **SMALL)
