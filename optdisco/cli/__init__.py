"""The ``optdisco`` command: list, show, export, eval, search, learn, validate, report, catalog-add, bench.

Each sub-command is a thin layer over a package function; heavy imports (ray, sympy,
evaluators) happen inside the command that needs them so ``optdisco list`` stays quick.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..discovered.export import FORMATS, export
from ..dsl import Program
from ..dsl.shapes import MEMORY_REFERENCE_SHAPE, state_elements
from ..errors import UserError

console = Console()


def _rule(arg: str) -> Program:
    from ..discovered.optimizer import resolve_rule
    return resolve_rule(arg)


def _short_paper(paper: str, year: str) -> str:
    first_author = paper.split(",")[0].strip()
    many = "," in paper.split('"')[0].rstrip(", ").rstrip()
    return f"{first_author}{' et al.' if many else ''} {year}".strip()


def cmd_list(args: argparse.Namespace) -> int:
    """A table of the catalog: name, origin, state tensors per parameter, paper, summary."""
    from .. import catalog
    entries = catalog.entries()
    table = Table(title=f"optdisco catalog ({len(entries)} rules)")
    rows = [(e.name, e.origin, f"{len(e.states)}" + (f" ({', '.join(e.states)})" if e.states else ""),
             _short_paper(e.paper, e.year), e.summary.split(": ", 1)[-1]) for e in entries]
    table.add_column("name", no_wrap=True)
    for col in ("origin", "states", "paper", "summary"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    return 0


def memory_per_parameter(p: Program, state_bytes: int = 4) -> str:
    """State memory per parameter element, e.g. '2 tensors = 8 bytes/param (fp32 states)'."""
    n = len(p.state_names)
    if not p.state_shapes:
        return f"{n} state tensor{'s' if n != 1 else ''} = {n * state_bytes} bytes/param (fp32 states)"
    rows, cols = MEMORY_REFERENCE_SHAPE
    per_param = state_elements([p.state_shape(s) for s in p.state_names], MEMORY_REFERENCE_SHAPE) * state_bytes / (rows * cols)
    parts = [f"{s}: {p.state_shape(s)}" if p.state_shape(s) != "param" else s for s in p.state_names]
    return (f"{n} states ({', '.join(parts)}) = {per_param:.3g} bytes/param for a {rows} x {cols} "
            f"matrix (fp32 states; factors are rows^2 and cols^2)")


def equivalent_catalog_rules(p: Program) -> list[str]:
    """Catalog rules that compute the same updates as ``p`` (equal fingerprints)."""
    from .. import catalog
    fp = p.fingerprint()
    return [n for n in catalog.names() if catalog.get(n).fingerprint() == fp]


def cmd_show(args: argparse.Namespace) -> int:
    """Source, simplified math, LaTeX, memory and catalog equivalents of a rule."""
    from ..dsl.symbolic import simplified
    p = _rule(args.rule)
    console.rule(f"[bold]{p.name}")
    for key, value in p.metadata:
        console.print(f"[bold]{key}:[/bold] {value}", highlight=False)
    from .. import catalog
    from ..userdata import data_dir, rule_facts
    if p.name in catalog.names() and p.source() == catalog.get(p.name).source():
        # Run-time results (optdisco validate) live in the user data directory, not the package.
        for key, value in rule_facts(p.name).items():
            console.print(f"[bold]{key}:[/bold] {value} [dim](recorded in {data_dir()})[/dim]", highlight=False)
    console.print("\n[bold]source[/bold]")
    console.print(p.source(), highlight=False, markup=False)
    sym = simplified(p)
    console.print("[bold]simplified math[/bold]")
    console.print(f"  u = {sym.update}", highlight=False, markup=False)
    for name, expr in sym.states.items():
        console.print(f"  {name}' = {expr}", highlight=False, markup=False)
    console.print("\n[bold]LaTeX[/bold]")
    console.print(p.latex(), highlight=False, markup=False)
    console.print(f"\n[bold]memory:[/bold] {memory_per_parameter(p)}")
    same = [n for n in equivalent_catalog_rules(p) if n != p.name]
    console.print(f"[bold]equivalent catalog rules:[/bold] {', '.join(same) if same else 'none'}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write the rule as a standalone torch optimizer, an optax transformation, LaTeX or Markdown."""
    from ..search.learned.residual import WEIGHTS_DIR
    if args.rule.startswith("learned:") or args.rule.endswith(".npz") or (WEIGHTS_DIR / f"{args.rule}.npz").exists():
        raise UserError(f"optdisco export writes rules only; {args.rule!r} is a learned optimizer, which has no "
                        "standalone file: use optdisco.Optimizer(params, learned=...) from the package instead")
    p = _rule(args.rule)
    text = export(p, args.format)
    if args.output in (None, "-"):
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
        console.print(f"wrote {args.output} ({args.format})")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a rule against tuned AdamW on proxy or held-out tasks."""
    from . import commands_eval as cli_support
    if args.list_tasks:
        console.print(cli_support.list_tasks_table())
        return 0
    seeds = args.seeds or cli_support.DEFAULT_SEEDS[args.suite]
    if args.learned:
        from .commands_learn import eval_learned
        eval_learned(args.learned, suite=args.suite, tasks=args.task or (), seeds=seeds,
                     budget=args.budget, console=console)
        return 0
    if not args.rule:
        raise SystemExit("optdisco eval: give a RULE (or --learned WEIGHTS, or --list-tasks)")
    tasks = args.task or None
    out = cli_support.eval_command(_rule(args.rule), tasks=tasks, suite=args.suite,
                                   seeds=seeds, budget=args.budget)
    console.print(out)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """Run (or resume) a discovery campaign."""
    from . import commands_search as cli_support
    overrides = {k: v for k, v in {
        "preset": args.preset, "budget": args.budget, "workers": args.workers, "seed": args.seed,
        "db": args.db, "warm_start": args.warm_start, "strategy": args.strategy,
        "surrogate": args.surrogate or None}.items() if v is not None}
    return cli_support.run_search(args.config, overrides, resume=args.resume, address=args.address)


def cmd_learn(args: argparse.Namespace) -> int:
    """Meta-learn: a rule's constants (ES), the MLP optimizer, or a rule distilled from it."""
    from . import commands_learn as learn
    common = {"address": args.address, "workers": args.workers, "console": console}
    if args.residual:
        learn.learn_residual(args.output or "residual.npz", preset=args.preset, tasks=args.task or (),
                             iterations=args.iterations, pairs=args.pairs, seed=args.seed,
                             command="optdisco learn " + " ".join(sys.argv[2:]), **common)
    elif args.mlp:
        learn.learn_mlp(args.output or "lopt.npz", tasks=args.task or ("quadratic", "logreg"),
                        iterations=args.iterations or 50, pairs=args.pairs or 8, seed=args.seed, **common)
    elif args.distill:
        if not args.db:
            raise SystemExit("optdisco learn --distill WEIGHTS: give --db STORE for the imitation search")
        learn.distill_mlp(args.distill, args.db, tasks=args.task or ("quadratic", "logreg"),
                          budget=args.budget or 64, seed=args.seed, out=args.output,
                          console=console)
    elif args.rule:
        learn.learn_rule(args.rule, suite=args.suite, tasks=args.task or (), pairs=args.pairs or 4,
                         iterations=args.iterations or 8, seed=args.seed, seeds=args.seeds,
                         out=args.output, **common)
    else:
        raise SystemExit("optdisco learn: give a RULE, --mlp, or --distill WEIGHTS")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Validate rules at scale against tuned AdamW and Lion; one HTML report, resumable."""
    from ..validation.command import run_validate
    specs = [*(args.rules or []), *(f"learned:{p}" for p in args.learned or [])]
    run_validate(specs, scale=args.scale, seeds=args.seeds, budget=args.budget, tune_budget=args.tune_budget,
                 tasks=args.task, device=args.device, dtype=args.dtype, backend=args.backend,
                 output=args.output, report_only=args.report_only, console=console)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write a campaign's HTML report."""
    from . import commands_search as cli_support
    path = cli_support.write_report(args.db, args.output)
    console.print(f"wrote {path}")
    return 0


def catalog_add(spec: str, name: str, checkout: str | Path) -> Path:
    """Write found rule ``DB:ID`` of a campaign store as ``<checkout>/optdisco/discovered/found/<name>.rule``
    (its description, with the generated Formula) and ``<name>.toml`` beside it (its provenance).

    A developer's step, never a run's side effect: ``checkout`` must be a source checkout (it has
    ``pyproject.toml`` and ``.git``), the program must be one the store's funnel found, and an
    existing rule file is never overwritten. Returns the path written.
    """
    from dataclasses import replace

    from ..discovered.catalog import rule_files_text, sidecar_path
    from ..discovered.formula import formula
    from ..search.found import found_rules
    root = Path(checkout)
    if not ((root / "pyproject.toml").is_file() and (root / ".git").exists()):
        raise UserError(f"{root} is not a source checkout (needs pyproject.toml and .git); "
                        "catalog-add writes rules only into a checkout, never an installed package")
    if not name.isidentifier() or not name.startswith("found_"):
        raise UserError(f"--name {name!r}: a found rule's name is an identifier starting with 'found_'")
    db, sep, ident = spec.rpartition(":")
    if not sep or not ident.isdigit():
        raise UserError(f"{spec!r} is not DB:ID (a campaign store and a program id)")
    if not Path(db).is_file():
        raise UserError(f"no campaign store at {db!r}")
    by_id = {r["id"]: r for r in found_rules(db)}
    if int(ident) not in by_id:
        raise UserError(f"program {ident} of {db} is not a found rule (found: {sorted(by_id) or 'none'})")
    rule = by_id[int(ident)]
    out = root / "optdisco" / "discovered" / "found" / f"{name}.rule"
    for path in (out, sidecar_path(out)):
        if path.exists():
            raise UserError(f"{path} exists; choose another --name")
    summary = f"Found by an optdisco campaign ({Path(db).name}, program {ident})."
    program = replace(rule["program"], name=name)
    # the catalog's Formula is the generated one (tests/discovered/test_rule_files.py)
    facts = {**rule["facts"], "Formula": formula(program)}
    rule_text, provenance = rule_files_text(program, summary, facts)
    out.write_text(rule_text, encoding="utf-8")
    sidecar_path(out).write_text(provenance, encoding="utf-8")
    return out


def cmd_catalog_add(args: argparse.Namespace) -> int:
    """Write a found rule of a campaign into the catalog of a source checkout (developers only)."""
    out = catalog_add(args.rule, args.name, args.checkout)
    console.print(f"wrote {out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Run one of the benchmark scripts in benchmarks/ (from a source checkout)."""
    import runpy
    script = Path(__file__).resolve().parents[2] / "benchmarks" / f"bench_{args.what}.py"
    if not script.exists():
        raise SystemExit(f"optdisco bench: {script} not found (benchmarks ship with the source checkout)")
    sys.argv = [str(script), *args.rest]
    runpy.run_path(str(script), run_name="__main__")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``optdisco`` command."""
    ap = argparse.ArgumentParser(prog="optdisco", description=__doc__.splitlines()[0])
    ap.add_argument("--debug", action="store_true", help="show the traceback of a user error")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("list", help="the catalog of rules")
    s.set_defaults(fn=cmd_list)

    s = sub.add_parser("show", help="a rule's source, math, LaTeX, memory and equivalents")
    s.add_argument("rule", help="catalog name, rule file, or DB:ID")
    s.set_defaults(fn=cmd_show)

    s = sub.add_parser("export", help="a rule as a standalone torch optimizer, optax transformation, LaTeX or Markdown")
    s.add_argument("rule")
    s.add_argument("--format", "-f", default="torch", choices=list(FORMATS))
    s.add_argument("-o", "--output", default=None, help="output file (default: stdout)")
    s.set_defaults(fn=cmd_export)

    s = sub.add_parser("eval", help="evaluate a rule against tuned AdamW")
    s.add_argument("rule", nargs="?")
    s.add_argument("--task", action="append", help="a task name (repeatable)")
    s.add_argument("--suite", default="proxy", choices=["proxy", "heldout"])
    s.add_argument("--seeds", type=int, default=None, help="task seeds (default: 1 on proxy, 2 on heldout)")
    s.add_argument("--budget", type=float, default=1.0, help="multiplies each task's default steps")
    s.add_argument("--list-tasks", action="store_true", help="list the tasks with sizes and budgets")
    s.add_argument("--learned", metavar="WEIGHTS", help="evaluate a learned optimizer instead (.npz, or 'default': the shipped one)")
    s.set_defaults(fn=cmd_eval)

    s = sub.add_parser("search", help="run a discovery campaign")
    s.add_argument("config", nargs="?", help="a campaign TOML file (default: embedded defaults)")
    # the names of optdisco.search.config.preset_names() (not imported here: the CLI starts light)
    s.add_argument("--preset", choices=["quick", "standard", "large", "hour"],
                   help="hour: an hour-long campaign on 2 cores with the ES tune stage (search/hour.toml)")
    s.add_argument("--budget", type=int, help="number of evaluations")
    s.add_argument("--workers", type=int)
    s.add_argument("--seed", type=int)
    s.add_argument("--db", help="campaign store path (default: ./runs/<time>.db)")
    s.add_argument("--warm-start", dest="warm_start", help="catalog name, rule file or DB:ID")
    s.add_argument("--strategy", choices=["evolution", "random"])
    s.add_argument("--surrogate", action="store_true", help="experiment (off by default; it needed 1.24x more evaluations): rank children with a learned predictor")
    s.add_argument("--address", help="join an existing Ray cluster")
    s.add_argument("--resume", help="continue the campaign in this store")
    s.set_defaults(fn=cmd_search)

    s = sub.add_parser("learn", help="meta-learn a rule's constants, an MLP optimizer, or distill one")
    s.add_argument("rule", nargs="?", help="ES over this rule's hyperparameters and constants")
    s.add_argument("--mlp", action="store_true", help="meta-train the per-parameter MLP optimizer")
    s.add_argument("--residual", action="store_true",
                   help="meta-train the residual optimizer (AdamW plus a learned correction) by ES")
    s.add_argument("--preset", default="hour", help="--residual: smoke (seconds) or hour (about an hour, 2 cores)")
    s.add_argument("--distill", metavar="WEIGHTS", help="search a rule imitating this learned optimizer")
    s.add_argument("--suite", default="proxy", choices=["proxy", "heldout"])
    s.add_argument("--task", action="append", help="train on this task only (repeatable)")
    s.add_argument("--iterations", type=int, help="ES iterations (rule: 8, --mlp: 50)")
    s.add_argument("--pairs", type=int, help="antithetic pairs per iteration (rule: 4, --mlp: 8)")
    s.add_argument("--seeds", type=int, default=1, help="task seeds per fitness")
    s.add_argument("--budget", type=int, help="--distill: imitation-search evaluations (64)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--db", help="--distill: the imitation search's campaign store")
    s.add_argument("-o", "--output", help="the learned rule file / weights (rerun to resume)")
    s.add_argument("--workers", type=int, default=0, help="start a local Ray with this many workers")
    s.add_argument("--address", help="join an existing Ray cluster")
    s.set_defaults(fn=cmd_learn)

    s = sub.add_parser("validate", help="rules vs tuned AdamW and Lion on the held-out suite at scale; HTML report")
    s.add_argument("rules", nargs="*", metavar="RULE", help="catalog name, rule file, DB:ID or learned:PATH")
    s.add_argument("--scale", default="cpu", choices=["cpu", "gpu"])
    s.add_argument("--seeds", type=int, default=3, help="validation seeds per workload (95%% CIs over them)")
    s.add_argument("--budget", type=float, default=1.0, help="multiplies each workload's default steps")
    s.add_argument("--tune-budget", dest="tune_budget", type=float, default=0.25,
                   help="tuning runs' steps as a fraction of the validation steps (same for every rule)")
    s.add_argument("--task", action="append", help="a workload (repeatable; default: heldout + validate suites)")
    s.add_argument("--learned", action="append", metavar="WEIGHTS", help="also validate a learned MLP optimizer")
    s.add_argument("--device", help="default: cuda for --scale gpu, else cpu")
    s.add_argument("--dtype", choices=["fp32", "bf16"], help="parameter dtype (default: bf16 on cuda, else fp32)")
    s.add_argument("--backend", default="auto", help="optimizer backend (auto: Triton on cuda)")
    s.add_argument("-o", "--output", default="validate.html",
                   help="the report; finished trainings go to <name>.results.jsonl beside it (rerun to resume)")
    s.add_argument("--report-only", dest="report_only", action="store_true",
                   help="train nothing: write the report and table from the results file")
    s.set_defaults(fn=cmd_validate)

    s = sub.add_parser("report", help="a campaign's HTML report")
    s.add_argument("db")
    s.add_argument("-o", "--output", default="report.html")
    s.set_defaults(fn=cmd_report)

    s = sub.add_parser("catalog-add", help="developers: write a found rule DB:ID into a source checkout's catalog")
    s.add_argument("rule", metavar="DB:ID", help="a found rule of a campaign store")
    s.add_argument("--name", required=True, help="the catalog name, found_...")
    s.add_argument("--checkout", required=True, help="the source checkout (has pyproject.toml and .git)")
    s.set_defaults(fn=cmd_catalog_add)

    s = sub.add_parser("bench", help="run a benchmark script: kernels, eval, search, heldout or surrogate")
    s.add_argument("what", choices=["kernels", "eval", "search", "heldout", "surrogate"])
    s.add_argument("rest", nargs=argparse.REMAINDER)
    s.set_defaults(fn=cmd_bench)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``optdisco`` console script.

    A :class:`~optdisco.errors.UserError` (unknown rule, missing or existing store, bad config,
    bad rule text) prints one line on stderr and returns 2; with ``--debug`` it propagates with
    its traceback. Any other exception is a bug and always propagates.
    """
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except UserError as e:
        if args.debug:
            raise
        message = " ".join(str(e).split())  # one line, whatever the message's own newlines
        print(f"optdisco: error: {message}", file=sys.stderr)
        return 2

