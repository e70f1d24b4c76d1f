"""What ``optdisco learn`` calls, end to end at tiny sizes, including resume after an interruption."""

from __future__ import annotations

import io

import numpy as np
import torch
from rich.console import Console

import optdisco
from optdisco.discovered.catalog import load_text
from optdisco.cli import commands_learn as cli_support
from optdisco.search.learned.es import ESConfig, MetaTrainer


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def test_learn_rule_writes_a_loadable_found_rule(tmp_path):
    out = tmp_path / "lion_learned.rule"
    con = quiet()
    res = cli_support.learn_rule("lion", tasks=["quadratic"], pairs=1, iterations=1, budget=0.1,
                                 heldout_tasks=["ho_quadratic"], heldout_budget=0.02, out=str(out),
                                 cache_dir=str(tmp_path / "base"), console=con, progress=False)
    text = con.file.getvalue()
    assert "beats the paper defaults on heldout:" in text and res.names == ["beta1", "beta2", "wd"]
    prog = load_text("lion_learned", out.read_text(), "found", "found/lion_learned.rule")
    assert prog.meta["Origin"] == "found" and prog.meta["Defaults"].startswith("lr=")
    assert (tmp_path / "lion_learned.rule.ckpt.npz").exists()


def test_learn_mlp_resumes_then_trains_through_optimizer_and_eval(tmp_path):
    out = str(tmp_path / "mlp.npz")
    kw = dict(tasks=["quadratic"], pairs=2, truncation=4, horizon=8, hidden=4, console=quiet(), progress=False)
    # an interrupted run: two iterations reached the checkpoint ...
    MetaTrainer(ESConfig(tasks=("quadratic",), pairs=2, truncation=4, horizon=8, hidden=4, iterations=2),
                out + ".ckpt.npz").train(progress=False)
    # ... the same command continues from it to four
    cli_support.learn_mlp(out, iterations=4, **kw)
    fresh = str(tmp_path / "fresh.npz")
    cli_support.learn_mlp(fresh, iterations=4, **kw)
    np.testing.assert_array_equal(np.load(out)["theta"], np.load(fresh)["theta"])

    w = torch.nn.Parameter(torch.ones(5))
    opt = optdisco.Optimizer([w], learned=out, lr=0.1)
    for _ in range(20):
        opt.zero_grad()
        (w ** 2).sum().backward()
        opt.step()
    assert float((w ** 2).sum().detach()) < 5.0
    res = cli_support.eval_learned(out, tasks=["quadratic"], budget=0.05, cache_dir=str(tmp_path / "base"),
                                   console=quiet())
    assert np.isfinite(res["fitness"]) and set(res["per_task"]) == {"quadratic"}
