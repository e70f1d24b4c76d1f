"""The broader held-out suite (a GRU on the adding problem, noisy tabular data), the robust
aggregates over tasks, and the noise floor of a held-out result."""

import math

import pytest
import torch

from optdisco.discovered import catalog
from optdisco.evaluators import (ADAMW, SUITES, Run, aggregate_fitness, bootstrap_ci, get_task, noise_floor,
                                 train, trimmed_mean)
from optdisco.evaluators import data as D
from optdisco.evaluators.layers import gru
from optdisco.evaluators.train import seed_generator

NEW_HELDOUT = ["ho_gru_adding", "ho_tabular"]


@pytest.mark.parametrize("shared", [True, False])
def test_gru_matches_torch_gru_in_float64(shared):
    gen = torch.Generator().manual_seed(0)
    P, N, T, C, H = 3, 4, 5, 2, 6
    w_ih = torch.randn(P, 3 * H, C, generator=gen, dtype=torch.float64)
    w_hh = torch.randn(P, 3 * H, H, generator=gen, dtype=torch.float64)
    b = torch.randn(P, 3 * H, generator=gen, dtype=torch.float64)
    x = torch.randn(*(() if shared else (P,)), N, T, C, generator=gen, dtype=torch.float64)
    ours = gru(x, w_ih, w_hh, b)
    for p in range(P):
        ref = torch.nn.GRU(C, H, batch_first=True).double()
        with torch.no_grad():
            ref.weight_ih_l0.copy_(w_ih[p])
            ref.weight_hh_l0.copy_(w_hh[p])
            ref.bias_ih_l0.copy_(b[p])
            ref.bias_hh_l0.zero_()   # our recurrent projection has no bias
        _, h = ref(x if shared else x[p])
        torch.testing.assert_close(ours[p], h[0], rtol=1e-12, atol=1e-12)


def test_adding_problem_targets_are_the_sum_of_the_marked_values():
    d = D.adding(8, 50, 10)
    assert d.x_train.shape == (50, 8, 2)
    marks = d.x_train[..., 1]
    assert (marks.sum(1) == 2).all() and (marks[:, :4].sum(1) == 1).all()
    torch.testing.assert_close((d.x_train[..., 0] * marks).sum(1), d.y_train)
    assert not torch.equal(D.adding(8, 50, 10, stream=1).x_train, d.x_train)


def test_tabular_flips_training_labels_only():
    clean = D.noisy_tabular(12, 3, 3000, 500, flip=0.0)
    noisy = D.noisy_tabular(12, 3, 3000, 500, flip=0.3)
    torch.testing.assert_close(clean.x_train, noisy.x_train)
    assert torch.equal(clean.y_val, noisy.y_val)              # validation labels stay clean
    changed = (clean.y_train != noisy.y_train).float().mean().item()
    assert changed == pytest.approx(0.3 * 2 / 3, abs=0.03)   # a flip to a random class keeps 1/3
    assert (noisy.x_train[:, 2::3] * (1 - noisy.x_train[:, 2::3]) == 0).all()   # binary columns
    assert (noisy.x_train[:, 1::3] > 0).all()                                 # log-normal columns


def test_new_tasks_are_held_out_only():
    for name in NEW_HELDOUT:
        assert name in SUITES["heldout"] and name not in SUITES["proxy"] and name not in SUITES["validate"]
        assert get_task(name).suite == "heldout"
    # the proxy tasks of the same kinds train on other data
    assert not torch.equal(get_task("adding").dataset().x_train[:5, :6], get_task("ho_gru_adding").dataset().x_train[:5, :6])


@pytest.mark.parametrize("name", NEW_HELDOUT)
def test_new_heldout_tasks_train_and_are_deterministic_per_seed(name):
    task = get_task(name)
    init = task.val_loss([p.unsqueeze(0) for p in task.init(seed_generator(task, 0, "init"))]).item()
    runs = [Run(0, 3e-2, 0), Run(0, 3e-2, 1)]
    first = train(task, [ADAMW], runs, steps=25, keep_params=False)
    again = train(task, [ADAMW], runs, steps=25, keep_params=False)
    assert all(r.failure is None and math.isfinite(r.loss) for r in first)
    assert first[0].loss < 0.9 * init
    assert [r.loss for r in first] == [r.loss for r in again]   # bit for bit per seed
    assert first[0].loss != first[1].loss                       # seeds differ


def test_trimmed_mean_and_median_are_not_decided_by_one_task():
    assert trimmed_mean([1.0, 2.0, 3.0, 4.0]) == 2.5                      # under 5 values: the mean
    assert trimmed_mean([0.0, 0.1, 0.2, 0.3, 9.0]) == pytest.approx(0.2)  # 1 dropped at each end
    assert trimmed_mean(list(range(10))) == pytest.approx(4.5)            # 2 dropped at each end
    toy_wins = {"toy": [-3.5], "a": [0.2], "b": [0.1], "c": [0.3], "d": [0.2], "e": [0.15]}
    assert aggregate_fitness(toy_wins, "mean") < 0                        # the toy decides the mean
    assert aggregate_fitness(toy_wins, "trimmed") == pytest.approx((0.1 + 0.15 + 0.2 + 0.2) / 4)
    assert aggregate_fitness(toy_wins, "median") == pytest.approx(0.175)
    assert aggregate_fitness({"a": [1.0, 3.0], "b": [0.0]}, "mean") == 1.0
    assert aggregate_fitness({"rosenbrock": [1.706]}, "standardized") == pytest.approx(1.0)
    assert aggregate_fitness({"x": [1.0]}, "standardized", scales={"x": 0.5}) == 2.0
    with pytest.raises(ValueError, match="aggregate"):
        aggregate_fitness(toy_wins, "max")


def test_bootstrap_of_the_median_resamples_seeds_per_task():
    ratios = {"a": [0.0, 1.0], "b": [0.0, 0.0], "c": [5.0, 5.0]}
    lo, hi = bootstrap_ci(ratios, statistic=lambda v: float(sorted(v)[1]), n_boot=2000)
    # task a's seed mean is 0, 0.5 or 1, and it is always the median of {a, 0, 5}
    assert lo == 0.0 and hi == 1.0


def test_noise_floor_is_catalog_adamw_against_the_baseline_and_cached(tmp_path):
    nf = noise_floor(tasks=["logreg"], seeds=1, budget=0.1, cache_dir=tmp_path)
    assert catalog.get("adamw").source() != ADAMW.source()   # two programs, one mathematics
    assert nf.margin < 0.05 and set(nf.per_task) == {"logreg"}
    assert nf.settings["seeds"] == 1 and nf.settings["budget"] == 0.1
    files = list((tmp_path / "noise_floor").iterdir())
    assert len(files) == 1
    again = noise_floor(tasks=["logreg"], seeds=1, budget=0.1, cache_dir=tmp_path)
    assert again.fitness == nf.fitness and len(list((tmp_path / "noise_floor").iterdir())) == 1
