"""Exported standalone optimizers reproduce optdisco.Optimizer; LaTeX and Markdown exports."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import torch

import optdisco
from optdisco.discovered.export import _class_name, export, to_torch

STEPS = 8


def reference_trajectory(program, w0, target, lr):
    p = torch.nn.Parameter(w0.clone())
    opt = optdisco.Optimizer([p], program, lr=lr, backend="eager", seed=5)
    out = []
    for _ in range(STEPS):
        p.grad = (p.detach() - target).clone()
        opt.step()
        out.append(p.detach().clone())
    return torch.stack(out)


def test_every_catalog_rule_exports_to_a_standalone_file_that_reproduces_it(tmp_path):
    names = optdisco.catalog.names()
    torch.manual_seed(0)
    problems = {"matrix": (torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)),
                "vector": (torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64))}
    torch.save(problems, tmp_path / "problems.pt")
    for name in names:
        (tmp_path / f"exported_{name}.py").write_text(to_torch(optdisco.catalog.get(name)))
    # One subprocess runs every exported file with nothing of optdisco importable.
    script = textwrap.dedent(f"""
        import importlib.util, json, sys, torch
        assert "optdisco" not in sys.modules
        problems = torch.load({str(tmp_path / 'problems.pt')!r})
        results = {{}}
        for name, cls in json.loads(sys.argv[1]).items():
            spec = importlib.util.spec_from_file_location("m_" + name, {str(tmp_path)!r} + f"/exported_{{name}}.py")
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            for key, (w0, target) in problems.items():
                p = torch.nn.Parameter(w0.clone())
                opt = getattr(mod, cls)([p], lr=1e-3, seed=5)
                traj = []
                for _ in range({STEPS}):
                    p.grad = (p.detach() - target).clone()
                    opt.step()
                    traj.append(p.detach().clone())
                results[f"{{name}}/{{key}}"] = torch.stack(traj)
        torch.save(results, {str(tmp_path / 'results.pt')!r})
        blocked = [m for m in sys.modules if m.startswith("optdisco")]
        assert not blocked, blocked
    """)
    classes = {n: _class_name(n) for n in names}
    proc = subprocess.run([sys.executable, "-I", "-c", script, json.dumps(classes)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = torch.load(tmp_path / "results.pt")
    for name in names:
        prog = optdisco.catalog.get(name)
        for key, (w0, target) in problems.items():
            ref = reference_trajectory(prog, w0, target, 1e-3)
            torch.testing.assert_close(results[f"{name}/{key}"], ref, rtol=1e-12, atol=1e-14,
                                       equal_nan=True, msg=lambda m, where=f"{name}/{key}": f"{where}: {m}")


def test_exported_file_handles_names_that_clash_with_its_own(tmp_path):
    text = """
def odd(w, g, u, generator, *, beta=0.5):
    _ops = g * beta
    u = interp(g, u, beta)
    generator = _ops + u
    return sign(generator) * norm(u), u, generator
"""
    prog = optdisco.parse(text)
    source = to_torch(prog)
    ns: dict = {}
    exec(compile(source, "exported_odd.py", "exec"), ns)  # generated from the IR, not rule text
    torch.manual_seed(0)
    w0, target = torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    p = torch.nn.Parameter(w0.clone())
    opt = ns["Odd"]([p], lr=1e-2, seed=5)
    for _ in range(STEPS):
        p.grad = (p.detach() - target).clone()
        opt.step()
    torch.testing.assert_close(p.detach(), reference_trajectory(prog, w0, target, 1e-2)[-1])


def test_exported_optimizer_keeps_fp32_state_for_bf16_params():
    ns: dict = {}
    exec(compile(to_torch(optdisco.catalog.get("adam")), "exported_adam.py", "exec"), ns)
    p = torch.nn.Parameter(torch.randn(8, dtype=torch.bfloat16))
    opt = ns["Adam"]([p], lr=1e-2)
    p.grad = torch.randn(8, dtype=torch.bfloat16)
    opt.step()
    opt2 = ns["Adam"]([p], lr=1e-2)
    opt2.load_state_dict(opt.state_dict())
    assert all(v.dtype == torch.float32 for k, v in opt2.state[p].items() if k != "step")


def test_latex_and_markdown_exports():
    prog = optdisco.catalog.get("lion")
    tex = export(prog, "latex")
    assert r"\paragraph{lion}" in tex and r"\beta" in tex
    # the aligned block is only valid inside math mode
    body = tex[tex.index("\\["):]
    assert body.index(r"\begin{aligned}") > 0 and body.rstrip().endswith("\\]")
    md = export(prog, "markdown")
    assert md.startswith("# lion") and "```python" in md and prog.source().strip() in md
    assert "Paper" in md
