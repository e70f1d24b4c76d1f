"""Sharded optimizer state: optdisco optimizers under ZeroRedundancyOptimizer (gloo, 2 processes)."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import optdisco
from optdisco.discovered.export import to_torch

STEPS = 6
RULES = ["adamw", "lion", "lamb"]


def make_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()


def batch(rank: int):
    gen = torch.Generator().manual_seed(100 + rank)
    return torch.randn(8, 6, generator=gen, dtype=torch.float64), torch.randn(8, 3, generator=gen,
                                                                            dtype=torch.float64)


def optimizer_kwargs(rule: str, exported_path: str | None):
    if exported_path is None:
        return optdisco.Optimizer, {"rule": rule, "lr": 1e-2, "backend": "eager"}
    import importlib.util
    spec = importlib.util.spec_from_file_location("exported_rule", exported_path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cls = next(v for v in vars(mod).values()
               if isinstance(v, type) and issubclass(v, torch.optim.Optimizer) and v is not torch.optim.Optimizer)
    return cls, {"lr": 1e-2}


def _worker(rank: int, world: int, init_file: str, cases: list, out: str):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        from torch.distributed.optim import ZeroRedundancyOptimizer
        from torch.nn.parallel import DistributedDataParallel as DDP
        results = {}
        for key, rule, exported_path in cases:
            model = DDP(make_model())
            cls, kwargs = optimizer_kwargs(rule, exported_path)
            opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=cls, **kwargs)
            x, y = batch(rank)
            for _ in range(STEPS):
                opt.zero_grad()
                torch.nn.functional.mse_loss(model(x), y).backward()
                opt.step()
            results[key] = [p.detach().clone() for p in model.module.parameters()]
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


def unsharded(rule: str, exported_path: str | None):
    model = make_model()
    cls, kwargs = optimizer_kwargs(rule, exported_path)
    opt = cls(model.parameters(), **kwargs)
    xs, ys = zip(*(batch(r) for r in range(2)))
    for _ in range(STEPS):
        opt.zero_grad()
        # DDP averages the two ranks' gradients: the mean of the per-rank mean losses
        loss = sum(torch.nn.functional.mse_loss(model(x), y) for x, y in zip(xs, ys)) / 2
        loss.backward()
        opt.step()
    return [p.detach() for p in model.parameters()]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not built")
def test_zero_sharded_training_equals_unsharded(tmp_path):
    """Each rule, through optdisco.Optimizer and through its exported file, sharded over two
    gloo processes, ends with the parameters of unsharded full-batch training."""
    cases = []
    for rule in RULES:
        exported = str(tmp_path / f"exported_{rule}.py")
        with open(exported, "w") as f:
            f.write(to_torch(optdisco.catalog.get(rule)))
        cases += [(f"{rule}/optimizer", rule, None), (f"{rule}/exported", rule, exported)]
    out = str(tmp_path / "sharded.pt")
    mp.start_processes(_worker, args=(2, str(tmp_path / "init"), cases, out), nprocs=2,
                       join=True, start_method="spawn")
    sharded = torch.load(out)
    for key, rule, exported in cases:
        for a, b in zip(sharded[key], unsharded(rule, exported)):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=lambda m, key=key: f"{key}: {m}")
