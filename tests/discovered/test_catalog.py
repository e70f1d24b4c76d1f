"""The catalog's rule files: they parse, are named right, document their paper, and round-trip."""

from __future__ import annotations

import re
from importlib import resources

import pytest

import optdisco
import optdisco.catalog as catalog  # noqa: E402  (a submodule import, not the lazy attribute)
from optdisco.discovered.catalog import REQUIRED_KEYS, CatalogError, load_text, parse_docstring, parse_sidecar
from optdisco.dsl import DSLError, parse, zero_states

REQUIRED = ["sgd", "momentum", "nesterov", "adam", "adamw", "nadam", "nadamw", "radam", "rmsprop",
            "adagrad", "adagradnorm", "lion", "lion_tanh", "lion_clip", "signsgd", "powersign",
            "addsign", "lamb", "lars", "adan", "adabelief", "adamp", "sgdp", "exadam",
            "gradient_noise", "muon", "adafactor"]


def rule_files():
    root = resources.files("optdisco.discovered")
    out = []
    for folder in ("known", "found"):
        if (root / folder).is_dir():
            out += [(folder, f) for f in (root / folder).iterdir() if f.name.endswith(".rule")]
    return sorted(out, key=lambda t: t[1].name)


FILES = rule_files()


def test_names_contain_every_required_rule_and_are_sorted():
    names = catalog.names()
    assert names == sorted(names)
    assert set(REQUIRED) <= set(names), sorted(set(REQUIRED) - set(names))
    assert names == [f.name[:-5] for _, f in FILES]


def test_public_alias_is_the_same_catalog():
    assert optdisco.catalog.names() == catalog.names()
    assert optdisco.catalog.get("adam") is catalog.get("adam")  # cached


@pytest.mark.parametrize("folder,path", FILES, ids=[f.name for _, f in FILES])
def test_rule_file_parses_names_itself_and_documents_its_paper(folder, path):
    text = path.read_text(encoding="utf-8")
    prog = parse(text)
    assert prog.name == path.name[:-len(".rule")]
    assert text.count("def ") == 1
    summary, facts = parse_docstring(prog.docstring)
    assert summary and "\n" not in summary
    sidecar = path.parent / (path.name[:-len(".rule")] + ".toml")
    if sidecar.is_file():  # a found rule's provenance (Campaign, ...) is beside it
        facts.update(parse_sidecar(sidecar.read_text(encoding="utf-8"), sidecar.name))
    for key in REQUIRED_KEYS[folder]:
        assert facts.get(key), f"{path.name}: docstring lacks {key}"
    assert facts["Origin"] == folder
    if folder == "known":
        assert re.fullmatch(r"\d{4}", facts["Year"]), facts["Year"]
    assert "\\" not in prog.docstring  # the printer keeps such docstrings only as escaped repr


@pytest.mark.parametrize("name", catalog.names())
def test_catalog_program_round_trips_and_carries_metadata(name):
    p = catalog.get(name)
    assert parse(p.source()) == p
    assert parse(p.source()).source() == p.source()
    meta = p.meta
    assert meta["Origin"] in ("known", "found")
    assert meta["Source"].endswith(f"/{name}.rule")
    assert meta["Summary"]


@pytest.mark.parametrize("name", catalog.names())
def test_defaults_give_a_learning_rate_and_agree_with_the_signature(name):
    p = catalog.get(name)
    pairs = dict(re.findall(r"\b([A-Za-z_][A-Za-z0-9_]*)=([^,;\s]+)", p.meta["Defaults"]))
    assert "lr" in pairs, p.meta["Defaults"]
    assert float(pairs["lr"]) > 0
    for hp, default in p.hyperparameters:
        assert hp in pairs, f"{name}: Defaults does not mention {hp}"
        try:
            stated = float(pairs[hp])
        except ValueError:  # a symbol such as alpha=e
            continue
        assert stated == default, f"{name}: Defaults says {hp}={stated}, the signature {default}"


def test_optimizer_default_lr_is_the_catalog_lr():
    from optdisco.discovered.optimizer import default_lr
    assert default_lr(catalog.get("lion")) == 1e-4
    assert default_lr(catalog.get("adafactor")) == 1.0


def test_unknown_name_is_a_key_error_with_close_matches():
    with pytest.raises(KeyError) as info:
        catalog.get("adamm")
    err = info.value
    assert isinstance(err, catalog.UnknownRule)
    assert "adam" in err.close and "did you mean" in str(err)
    with pytest.raises(catalog.UnknownRule, match="names()"):
        catalog.get("zzzzqqq")


def test_entries_list_every_rule():
    entries = catalog.entries()
    assert [e.name for e in entries] == catalog.names()
    lion = next(e for e in entries if e.name == "lion")
    assert lion.states == ("m",) and lion.origin == "known" and "2302.06675" in lion.paper


GOOD = '''def r(w, g, m, *, beta=0.9):
    """A rule.

    Paper: A. Author, "T", arXiv:0000.00000
    Year: 2020
    Formula: m <- beta * m + (1 - beta) * g;
      w <- w - lr * m
    Defaults: lr=0.1, beta=0.9
    Origin: known
    Notes: none
    """
    m = interp(g, m, beta)
    return m, m
'''


def test_docstring_values_may_continue_on_the_next_line():
    p = load_text("r", GOOD, "known", "known/r.rule")
    assert p.meta["Formula"] == "m <- beta * m + (1 - beta) * g; w <- w - lr * m"
    assert p.meta["Summary"] == "A rule."


def test_malformed_rule_files_are_catalog_errors():
    with pytest.raises(CatalogError, match="named 'r'"):
        load_text("s", GOOD, "known", "known/s.rule")
    with pytest.raises(CatalogError, match="Notes"):
        load_text("r", GOOD.replace("    Notes: none\n", ""), "known", "known/r.rule")
    with pytest.raises(CatalogError, match="Origin"):
        load_text("r", GOOD, "found", "found/r.rule")
    with pytest.raises(CatalogError, match="Campaign"):
        load_text("r", GOOD.replace("Origin: known", "Origin: found"), "found", "found/r.rule")
    assert issubclass(CatalogError, DSLError)


def test_rule_file_text_writes_a_loadable_found_rule():
    from dataclasses import replace
    lion = catalog.get("lion")
    facts = {"Formula": "w <- w - lr * sign(...)", "Defaults": "lr=1e-4", "Origin": "found",
             "Campaign": "runs/demo.sqlite:42", "Fitness": "0.93 vs AdamW 0.90"}
    text = catalog.rule_file_text(lion, "A rediscovered Lion.", facts)
    found = load_text("lion", text, "found", "found/lion.rule")
    assert replace(found, docstring=None) == replace(lion, docstring=None)
    assert found.meta["Campaign"] == "runs/demo.sqlite:42" and found.meta["Fitness"].startswith("0.93")
    assert found.meta["Summary"] == "A rediscovered Lion."
    assert parse(found.source()) == found
    with pytest.raises(ValueError):
        catalog.rule_file_text(lion, "two\nlines", facts)


@pytest.mark.parametrize("name", catalog.names())
def test_rule_with_catalog_defaults_trains_a_small_network(name):
    # The Defaults (including lr) make a usable optimizer: 50 full-batch steps on a small
    # classifier lower the loss and stay finite. A sign error or a wild default fails here.
    import torch
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(128, 8, generator=gen)
    y = (x[:, :2].sum(1) > 0).long()
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    opt = optdisco.Optimizer(model.parameters(), name, seed=0)
    loss_fn = torch.nn.CrossEntropyLoss()
    start = loss_fn(model(x), y).item()
    for _ in range(50):
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    end = loss_fn(model(x), y).item()
    assert end == end and end < start, f"{name}: loss {start:.4f} -> {end:.4f}"


@pytest.mark.parametrize("name", catalog.names())
def test_rule_runs_batched_like_separate_runs(name):
    # The evaluators train many problems at once: a batch of 3 problems with their own
    # hyperparameters and learning rates (tensors of shape (3, 1, 1)) must give each
    # problem's separate run. Matrix problems, so reductions and matrix built-ins must
    # respect the batch dimension.
    import torch
    from optdisco.dsl import run
    prog = catalog.get(name)
    gen = torch.Generator().manual_seed(0)
    b, shape, steps = 3, (4, 5), 6
    w = torch.randn(b, *shape, generator=gen, dtype=torch.float64)
    targets = torch.randn(b, *shape, generator=gen, dtype=torch.float64)
    noises = torch.randn(steps, b, *shape, generator=gen, dtype=torch.float64)
    factors = torch.tensor([1.0, 0.99, 0.98], dtype=torch.float64)
    hyper = {k: v * factors for k, v in prog.hyperparameters}
    lrs = torch.tensor([1e-2, 2e-2, 5e-3], dtype=torch.float64)
    col = (b, 1, 1)

    def grad(x, t, target):  # a different problem per target, curved by t
        return (x - target) * (1 + 0.1 * t) + 0.3 * x ** 3

    ws = w.clone()
    states = zero_states(prog, w, batch_dims=1)
    for t in range(1, steps + 1):
        u, states = run(prog, ws, grad(ws, t, targets), states, step=float(t), lr=lrs.view(col),
                        hyperparameters={k: v.view(col) for k, v in hyper.items()},
                        batch_dims=1, noise=lambda s, t=t: noises[t - 1])
        ws = ws - lrs.view(col) * u
    for i in range(b):
        wi = w[i].clone()
        si = zero_states(prog, wi)
        for t in range(1, steps + 1):
            u, si = run(prog, wi, grad(wi, t, targets[i]), si, step=float(t), lr=float(lrs[i]),
                        hyperparameters={k: float(v[i]) for k, v in hyper.items()},
                        noise=lambda s, t=t, i=i: noises[t - 1, i])
            wi = wi - float(lrs[i]) * u
        torch.testing.assert_close(ws[i], wi, rtol=1e-12, atol=1e-12)
