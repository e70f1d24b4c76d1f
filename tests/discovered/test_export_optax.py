"""The optax export: a standalone JAX file that reproduces the interpreter's float64 trajectory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import optdisco
from optdisco.cli import main
from optdisco.discovered.export import export
from optdisco.discovered.export_optax import to_optax
from optdisco.dsl import parse
from optdisco.dsl.interpreter import trajectory
from optdisco.errors import UserError

pytest.importorskip("jax", reason="jax is not installed (pip install jax optax); the optax export is untested")
pytest.importorskip("optax", reason="optax is not installed")

STEPS = 8
LR = 1e-3


def _noisy(program) -> bool:
    return any(getattr(n, "fn", None) == "randn" for e in [a.expr for a in program.body] + [program.update]
               for n in e.walk())


def _run_exported(tmp_path, texts: dict[str, str], script_body: str) -> dict:
    """Run exported files in a subprocess that cannot import optdisco; returns its JSON output."""
    for name, text in texts.items():
        (tmp_path / f"exported_{name}.py").write_text(text)
    script = textwrap.dedent(f"""
        import importlib.util, json, sys
        import jax
        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp, numpy as np, optax
        def load(name):
            spec = importlib.util.spec_from_file_location("m_" + name, {str(tmp_path)!r} + f"/exported_{{name}}.py")
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            return getattr(mod, name)
        args = json.loads(sys.argv[1])
        out = {{}}
    """) + textwrap.dedent(script_body) + textwrap.dedent("""
        assert not [m for m in sys.modules if m.startswith("optdisco")]
        print(json.dumps(out))
    """)
    proc = subprocess.run([sys.executable, "-I", "-c", script, json.dumps({"problems": PROBLEMS_JSON})],
                          capture_output=True, text=True, cwd=tmp_path, timeout=600,
                          env={"JAX_PLATFORMS": "cpu", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


_rng = np.random.default_rng(0)
PROBLEMS = {"matrix": (_rng.standard_normal((4, 3)), _rng.standard_normal((4, 3))),
            "vector": (_rng.standard_normal(5), _rng.standard_normal(5))}
PROBLEMS_JSON = {k: [w.tolist(), t.tolist()] for k, (w, t) in PROBLEMS.items()}

TRAJECTORY = """
for name in {names}:
    tx = load(name)(learning_rate={lr})
    for key, (w0, target) in args["problems"].items():
        w, target = jnp.asarray(w0, jnp.float64), jnp.asarray(target, jnp.float64)
        state = tx.init(w)
        traj = []
        for _ in range({steps}):
            upd, state = tx.update(w - target, state, w)
            w = optax.apply_updates(w, upd)
            traj.append(np.asarray(w).tolist())
        out[name + "/" + key] = traj
"""


def test_every_noise_free_catalog_rule_exports_to_optax_and_matches_the_interpreter(tmp_path):
    names = [n for n in optdisco.catalog.names()
             if not _noisy(optdisco.catalog.get(n)) and not optdisco.catalog.get(n).has_matrix_states]
    assert len(names) >= 40
    texts = {n: to_optax(optdisco.catalog.get(n)) for n in names}
    out = _run_exported(tmp_path, texts, TRAJECTORY.format(names=names, lr=LR, steps=STEPS))
    for name in names:
        program = optdisco.catalog.get(name)
        for key, (w0, target) in PROBLEMS.items():
            t = torch.as_tensor(target)
            ref = trajectory(program, torch.as_tensor(w0), lambda w, _s, t=t: w - t, steps=STEPS, lr=LR)
            got = torch.tensor(out[f"{name}/{key}"], dtype=torch.float64)
            torch.testing.assert_close(got, torch.stack(ref), rtol=1e-10, atol=1e-13, equal_nan=True,
                                       msg=lambda m, where=f"{name}/{key}": f"{where}: {m}")


def test_optax_export_on_a_pytree_with_a_schedule_under_jit_matches_per_leaf_runs(tmp_path):
    program = optdisco.catalog.get("adamw")
    body = """
tx = load("adamw")(learning_rate=lambda count: 1e-2 / (1.0 + count), wd=0.1)
params = {"a": jnp.asarray(args["problems"]["matrix"][0]), "b": jnp.asarray(args["problems"]["vector"][0])}
targets = {"a": jnp.asarray(args["problems"]["matrix"][1]), "b": jnp.asarray(args["problems"]["vector"][1])}
state = tx.init(params)
update = jax.jit(tx.update)
for _ in range(6):
    grads = jax.tree_util.tree_map(lambda w, t: w - t, params, targets)
    upd, state = update(grads, state, params)
    params = optax.apply_updates(params, upd)
out = {k: np.asarray(v).tolist() for k, v in params.items()}
out["count"] = int(state.count)
try:
    tx.update(grads, state)
    out["no_params"] = "accepted"
except ValueError as e:
    out["no_params"] = str(e)
"""
    out = _run_exported(tmp_path, {"adamw": to_optax(program)}, body)
    assert out["count"] == 6
    assert "call update(grads, state, params)" in out["no_params"]

    def schedule(t: int) -> float:  # the schedule above at optax's count t - 1
        return 1e-2 / t

    for leaf, key in (("a", "matrix"), ("b", "vector")):
        w0, target = (torch.as_tensor(x) for x in PROBLEMS[key])
        ref = trajectory(program, w0, lambda w, _s, target=target: w - target, steps=6, lr=schedule,
                         hyperparameters={"wd": 0.1})
        torch.testing.assert_close(torch.tensor(out[leaf], dtype=torch.float64), ref[-1], rtol=1e-10, atol=1e-13)


def test_a_noisy_rule_exports_and_is_reproducible_by_seed(tmp_path):
    name = next(n for n in optdisco.catalog.names() if _noisy(optdisco.catalog.get(n)))
    body = f"""
def run(seed):
    tx = load({name!r})(seed=seed)
    w = jnp.asarray(args["problems"]["matrix"][0])
    state = tx.init(w)
    for _ in range(3):
        upd, state = tx.update(w, state, w)
        w = optax.apply_updates(w, upd)
    return np.asarray(w).tolist()
out = {{"a": run(1), "b": run(1), "c": run(2), "w0": args["problems"]["matrix"][0]}}
"""
    out = _run_exported(tmp_path, {name: to_optax(optdisco.catalog.get(name))}, body)
    assert out["a"] == out["b"]
    assert out["a"] != out["c"]
    assert np.all(np.isfinite(out["a"])) and out["a"] != out["w0"]


def test_optax_export_refuses_names_that_clash_with_its_state_fields():
    program = parse("def r(w, g, count, *, beta=0.9):\n    count = interp(g, count, beta)\n    return count, count\n")
    with pytest.raises(UserError, match="count"):
        to_optax(program)
    assert export(optdisco.catalog.get("lion"), "optax").startswith('"""lion:')
    with pytest.raises(UserError, match="matrix-shaped states"):
        to_optax(optdisco.catalog.get("shampoo"))


def test_the_export_command_writes_an_optax_file(tmp_path):
    out = tmp_path / "lion_optax.py"
    assert main(["export", "lion", "--format", "optax", "-o", str(out)]) == 0
    text = out.read_text()
    assert "def lion(learning_rate=" in text and "optax.GradientTransformation(init_fn, update_fn)" in text
    compile(text, str(out), "exec")
