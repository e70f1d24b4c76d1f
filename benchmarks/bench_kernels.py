"""Kernel benchmark: time per step, bytes moved and bandwidth of every execution path.

    python benchmarks/bench_kernels.py            # GPU table (when CUDA is present), then CPU
    python benchmarks/bench_kernels.py --cpu      # CPU table only
    python benchmarks/bench_kernels.py --quick    # fewer sizes and steps (smoke test)

For AdamW, Lion, Adan and one random rule, on models of N parameters (4 equal matrices)
and a transformer-like list of ~200 tensors, it prints the time per step of optdisco's
paths and of ``torch.optim.AdamW`` (fused and foreach), the bytes the rule moves per step
(counted from its reads and writes, see optdisco.kernels.traffic), the achieved GB/s and
the percent of the device's copy bandwidth measured in the same run (a large ``copy_``).
The last section times the drop-in use, ``optdisco.Optimizer(params, rule).step()``, on one
CPU thread beside ``torch.optim.AdamW(fused=True)`` for three shapes (a small MLP of 4
tensors and ~2k parameters; 196 tensors, 98 of 256x256 and 98 of 256; one tensor of 10M),
in interleaved rounds, with the first step's extra cost (the background compile must not
show there). Its last lines are ``cpu <shape> vs fused AdamW: X``: median-of-rounds time of
the AdamW rule over torch's fused AdamW (lower is better). ``--drop-in`` runs only that.
``--matrix`` runs only the matrix rules' rows (SOAP, Shampoo, Muon against pytorch_optimizer's
and torch's; see bench_matrix.py).
"""

from __future__ import annotations

import argparse
import datetime
import math
import platform
import sys
import time

import torch

import optdisco
from optdisco import catalog
from optdisco.kernels import get_backend
from optdisco.kernels.plan import make_plan
from optdisco.kernels.traffic import bytes_per_element

RANDOM_RULE = """
def random_found(w, g, m, *, beta=0.9, c=0.5):
    m = interp(g, m, beta)
    u = tanh(m / (abs(g) + c)) + 0.01 * w
    return u, m
"""


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timeit(fn, device, steps: int, repeats: int) -> float:
    """Seconds per call of ``fn``: the fastest of ``repeats`` runs of ``steps`` calls (the
    least disturbed by other processes on a shared machine)."""
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        sync(device)
        times.append((time.perf_counter() - start) / steps)
    return min(times)


def copy_bandwidth(device: torch.device, numel: int) -> float:
    """GB/s of ``dst.copy_(src)`` on float32 tensors of ``numel`` elements (read + write)."""
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    t = timeit(lambda: dst.copy_(src), device, 5, 5)
    return 2 * numel * 4 / t / 1e9


def model_shapes(kind: str, device: torch.device) -> list[tuple[int, ...]]:
    """Four equal matrices of about N parameters, or a transformer-like list of ~200 tensors."""
    if kind == "transformer":
        d, layers = (256, 16) if device.type == "cuda" else (128, 16)
        shapes = [(4096, d), (512, d)]
        for _ in range(layers):
            shapes += [(d,), (d,), (3 * d, d), (3 * d,), (d, d), (d,), (d,), (d,),
                       (4 * d, d), (4 * d,), (d, 4 * d), (d,)]
        return shapes + [(d,), (d,)]
    n = int(kind)
    cols = 1024
    rows = max(1, n // (4 * cols))
    return [(rows, cols)] * 4


def fresh(shapes, device, dtype, n_states):
    params = [torch.randn(s, device=device, dtype=dtype) for s in shapes]
    grads = [torch.randn(s, device=device, dtype=dtype) for s in shapes]
    sdt = torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype
    states = [[torch.zeros(s, device=device, dtype=sdt) for _ in range(n_states)] for s in shapes]
    return params, grads, states


def bench_rule(program, backend_name, shapes, device, dtype, steps, repeats):
    """(seconds per step, one-off seconds of the first step beyond a steady one).

    ``backend_name`` "triton-8bit" runs the Triton kernels with 8-bit blockwise states.
    """
    params, grads, states = fresh(shapes, device, dtype, len(program.state_names))
    if backend_name == "triton-8bit":
        from optdisco.kernels.quant8 import zeros_like
        states = [[zeros_like(p) for _ in s] for p, s in zip(params, states)]
        backend_name = "triton"
    backend = get_backend(program, backend_name, device)
    counter = [0]

    def one():
        counter[0] += 1
        backend.step(params, grads, states, steps=[float(counter[0])] * len(params), lr=1e-4,
                     hyperparameters={})
    sync(device)
    start = time.perf_counter()
    one()
    sync(device)
    first = time.perf_counter() - start
    one()
    t = timeit(one, device, steps, repeats)
    return t, max(0.0, first - t)


def bench_torch_adamw(shapes, device, dtype, steps, repeats, fused: bool):
    params = [torch.randn(s, device=device, dtype=dtype, requires_grad=True) for s in shapes]
    for p in params:
        p.grad = torch.randn_like(p)
    kwargs = {"fused": True} if fused else {"foreach": True}
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, **kwargs)
    opt.step()
    return timeit(opt.step, device, steps, repeats)


def external(shapes, device, steps, repeats) -> list[tuple[str, float | str]]:
    """Published Triton optimizers, where installed."""
    out = []
    try:
        from lion_pytorch import Lion  # type: ignore
        params = [torch.randn(s, device=device, requires_grad=True) for s in shapes]
        for p in params:
            p.grad = torch.randn_like(p)
        opt = Lion(params, lr=1e-4, use_triton=device.type == "cuda")
        opt.step()
        out.append(("lion-pytorch (triton)", timeit(opt.step, device, steps, repeats)))
    except Exception as e:  # not installed, or no GPU
        out.append(("lion-pytorch (triton)", f"unavailable: {type(e).__name__}"))
    try:
        import flashoptim  # type: ignore  # noqa: F401
        out.append(("flashoptim", "installed but not wired in"))
    except Exception as e:
        out.append(("flashoptim", f"unavailable: {type(e).__name__}"))
    return out


def table(device: torch.device, sizes: list[str], backends: list[str], rules: dict, steps: int,
          repeats: int, dtypes: list[torch.dtype]) -> dict:
    copy_numel = (1 << 28) if device.type == "cuda" else (1 << 24)
    bw = copy_bandwidth(device, copy_numel)
    print(f"\n== {device.type}: copy_ bandwidth {bw:.1f} GB/s ({copy_numel * 4 >> 20} MiB float32 copy) ==")
    head = f"{'rule':<14}{'model':<13}{'dtype':<9}{'path':<22}{'ms/step':>10}{'MB/step':>10}{'GB/s':>8}{'%copy':>7}  note"
    print(head)
    print("-" * len(head))
    results = {}
    for size in sizes:
        shapes = model_shapes(size, device)
        numel = sum(math.prod(s) for s in shapes)
        label = f"{len(shapes)}x ({numel / 1e6:.1f}M)" if size == "transformer" else f"{numel / 1e6:.0f}M"
        for dtype in dtypes:
            pbytes = torch.finfo(dtype).bits // 8
            sbytes = 4 if pbytes < 4 else pbytes
            for rname, program in rules.items():
                for b in backends:
                    # 8-bit states: one byte per element (plus 4 bytes per 256, not counted)
                    moved = bytes_per_element(make_plan(program), pbytes, pbytes,
                                              1 if b == "triton-8bit" else sbytes) * numel
                    if b == "eager" and numel > 20_000_000:
                        continue  # minutes per step; the smaller sizes show the ratio
                    try:
                        t, extra = bench_rule(program, b, shapes, device, dtype, steps, repeats)
                    except Exception as e:
                        print(f"{rname:<14}{label:<13}{str(dtype)[6:]:<9}{b:<22}  failed: {type(e).__name__}: {str(e)[:80]}")
                        continue
                    gbs = moved / t / 1e9
                    note = f"first step +{extra:.1f}s (codegen/compile)" if extra > 0.5 else ""
                    print(f"{rname:<14}{label:<13}{str(dtype)[6:]:<9}{b:<22}{t * 1e3:>10.2f}{moved / 1e6:>10.1f}"
                          f"{gbs:>8.1f}{100 * gbs / bw:>6.0f}%  {note}")
                    results[(rname, size, str(dtype), b)] = t
                    sys.stdout.flush()
            if dtype == torch.float32:
                moved = 28 * numel
                for fused in (True, False):
                    name = "torch AdamW " + ("fused" if fused else "foreach")
                    t = bench_torch_adamw(shapes, device, dtype, steps, repeats, fused)
                    gbs = moved / t / 1e9
                    print(f"{'adamw':<14}{label:<13}{'float32':<9}{name:<22}{t * 1e3:>10.2f}{moved / 1e6:>10.1f}"
                          f"{gbs:>8.1f}{100 * gbs / bw:>6.0f}%")
                    results[("torch", size, str(dtype), "fused" if fused else "foreach")] = t
                if device.type == "cuda":
                    for name, t in external(shapes, device, steps, repeats):
                        print(f"{'lion':<14}{label:<13}{'float32':<9}{name:<22}"
                              + (f"{t * 1e3:>10.2f}" if isinstance(t, float) else f"  {t}"))
    return results


def headline(size: str, rounds: int) -> tuple[float, float, float]:
    """(fast path, torch fused AdamW, interpreter) seconds per step for the adamw rule at
    ``size`` on CPU, measured interleaved (A, B, C, A, B, C, ...) and taking each one's
    fastest round, so that load from other processes hits all three alike."""
    cpu = torch.device("cpu")
    shapes = model_shapes(size, cpu)
    program = catalog.get("adamw")
    ours = {}
    for name in ("auto", "eager"):
        params, grads, states = fresh(shapes, cpu, torch.float32, 2)
        backend = get_backend(program, name, cpu)
        ours[name] = (backend, params, grads, states)
        backend.step(params, grads, states, steps=[1.0] * len(params), lr=1e-4, hyperparameters={})
    tparams = [torch.randn(s, requires_grad=True) for s in shapes]
    for p in tparams:
        p.grad = torch.randn_like(p)
    fused = torch.optim.AdamW(tparams, lr=1e-4, weight_decay=0.01, fused=True)
    fused.step()

    def run(name):
        b, p, g, s = ours[name]
        return lambda: b.step(p, g, s, steps=[2.0] * len(p), lr=1e-4, hyperparameters={})
    fns = [run("auto"), fused.step, run("eager")]
    best = [float("inf")] * 3
    for r in range(rounds):
        for i, fn in enumerate(fns):
            if i == 2 and r >= max(3, rounds // 4):
                continue  # the interpreter is slow; a few rounds suffice
            best[i] = min(best[i], timeit(fn, cpu, 2, 1))
    return best[0], best[1], best[2]


DROP_IN_SHAPES = {
    "mlp-2k": [(64, 24), (64,), (8, 64), (8,)],
    "196-tensors": [(256, 256), (256,)] * 98,
    "10M": [(10_000_000,)],
}


def drop_in(rounds: int, steps: int) -> dict[str, float]:
    """Seconds per ``Optimizer.step()`` (median and best of ``rounds`` interleaved rounds of
    ``steps`` steps, more where that is under 20 ms of fused AdamW steps) of optdisco's AdamW, Lion, Adan and a random rule (``backend="auto"``)
    and torch's fused AdamW, on one CPU thread; prints a table, returns the AdamW ratios."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rules = {"adamw": "adamw", "lion": "lion", "adan": "adan", "random_found": optdisco.parse(RANDOM_RULE)}
    ratios = {}
    print(f"\n== drop-in optdisco.Optimizer(params, rule).step() on 1 CPU thread, {rounds} interleaved "
          f"rounds of {steps} steps ==")
    head = f"{'shape':<14}{'optimizer':<22}{'median ms':>10}{'best ms':>10}{'first +s':>10}{'vs fused':>10}"
    print(head)
    print("-" * len(head))
    for shape_name, shapes in DROP_IN_SHAPES.items():
        opts, first = {}, {}
        for name, rule in [("torch fused AdamW", None)] + list(rules.items()):
            params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
            for p in params:
                p.grad = torch.randn_like(p)
            opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, fused=True) if rule is None \
                else optdisco.Optimizer(params, rule, lr=1e-4)
            start = time.perf_counter()
            opt.step()
            first[name] = time.perf_counter() - start
            start = time.perf_counter()
            opt.step()
            first[name] -= time.perf_counter() - start
            if rule is not None:  # time the steady state: let a background compile finish
                backend = opt._backend_for(params[0].device)
                if hasattr(backend, "wait_compiled"):
                    backend.wait_compiled()
                opt.step()
            opts[name] = opt
        times: dict[str, list[float]] = {n: [] for n in opts}
        # At least ~20 ms per round: a round of a few 0.1 ms steps is one scheduler slice on a
        # shared machine, and its time says more about the other processes than the step.
        fused_step = timeit(opts["torch fused AdamW"].step, torch.device("cpu"), steps, 5)
        n_steps = max(steps, min(500, int(0.02 / max(fused_step, 1e-6))))
        for _ in range(rounds):
            for name, opt in opts.items():
                times[name].append(timeit(opt.step, torch.device("cpu"), n_steps, 1))
        med = {n: sorted(t)[len(t) // 2] for n, t in times.items()}
        for name in opts:
            print(f"{shape_name:<14}{name:<22}{med[name] * 1e3:>10.3f}{min(times[name]) * 1e3:>10.3f}"
                  f"{max(0.0, first[name]):>10.2f}{med[name] / med['torch fused AdamW']:>10.2f}"
                  f"  ({n_steps} steps/round)")
        ratios[shape_name] = med["adamw"] / med["torch fused AdamW"]
        sys.stdout.flush()
    torch.set_num_threads(threads)
    return ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", action="store_true", help="CPU table only")
    ap.add_argument("--quick", action="store_true", help="small sizes, few steps (smoke test)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    ap.add_argument("--drop-in", action="store_true", help="only the drop-in Optimizer comparison")
    ap.add_argument("--matrix", action="store_true",
                    help="only the SOAP, Shampoo and Muon rows against their peers (bench_matrix.py)")
    args = ap.parse_args()
    if args.matrix:
        from bench_matrix import print_matrix  # the sibling script (benchmarks/ is on sys.path)
        print_matrix(args.quick)
        return
    if args.drop_in:
        print_drop_in(args.quick)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    rules = {"adamw": catalog.get("adamw"), "lion": catalog.get("lion"), "adan": catalog.get("adan"),
             "random_found": optdisco.parse(RANDOM_RULE)}
    print(f"optdisco kernel benchmark, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} CPU threads")
    if torch.cuda.is_available() and not args.cpu:
        dev = torch.device("cuda")
        print(f"GPU: {torch.cuda.get_device_name(dev)}")
        sizes = ["1000000", "16000000"] if args.quick else ["1000000", "16000000", "128000000", "transformer"]
        table(dev, sizes, ["triton", "triton-8bit", "eager"], rules, 10 if args.quick else 50, 3 if args.quick else 5,
              [torch.float32, torch.bfloat16])
    cpu = torch.device("cpu")
    sizes = ["1000000"] if args.quick else ["1000000", "10000000", "transformer"]
    table(cpu, sizes, ["auto", "foreach", "compile", "eager"], rules, 2 if args.quick else 5,
          3, [torch.float32])
    big = "10000000" if not args.quick else "1000000"
    fast, fused, eager = headline(big, 6 if args.quick else 20)
    print(f"\nheadline (adamw rule, {int(big) / 1e6:.0f}M params, CPU, interleaved, best of rounds): "
          f"fast path {fast * 1e3:.1f} ms, torch fused AdamW {fused * 1e3:.1f} ms, "
          f"interpreter {eager * 1e3:.1f} ms")
    print(f"cpu fast path vs interpreter: {eager / fast:.2f}x faster")
    print(f"cpu fast path vs fused AdamW: {fast / fused:.2f}")
    print_drop_in(args.quick)


def print_drop_in(quick: bool) -> None:
    ratios = drop_in(5 if quick else 15, 5 if quick else 20)
    print()
    for shape_name, ratio in ratios.items():
        print(f"cpu {shape_name} vs fused AdamW: {ratio:.2f}")


if __name__ == "__main__":
    main()
