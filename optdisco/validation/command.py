"""``optdisco validate`` from RULE arguments to the printed summary: resolve the targets
(:mod:`.targets`), run or reuse the trainings (:mod:`.run`), write the HTML report
(:mod:`.report`), write each result back where its rule came from (:mod:`.record`).

The results file sits beside the report: ``validate.html`` -> ``validate.results.jsonl``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from ..evaluators.heldout_scale import validate_tasks
from ..evaluators.tasks import get_task
from ..kernels import BACKENDS
from .record import write_back
from .report import summary_table, write_validation_report
from .run import Settings, Validation, validate
from .targets import ValidateError, resolve_target, unique_names


def results_path_for(report: str | Path) -> Path:
    """The results file beside a report: ``validate.html`` -> ``validate.results.jsonl``."""
    report = Path(report)
    return report.with_name(report.stem + ".results.jsonl")


def run_validate(specs: Sequence[str], *, scale: str = "cpu", seeds: int = 3, budget: float = 1.0,
                 tune_budget: float = 0.25, tasks: Sequence[str] | None = None, device: str | None = None,
                 dtype: str | None = None, backend: str = "auto", output: str | Path = "validate.html",
                 report_only: bool = False, console: Any = None, progress: bool = True) -> tuple[Validation, Path]:
    """Resolve the RULEs, run (or with ``report_only`` just read) the validation, write the report,
    write results back, and print the summary table last. Returns the validation and the report path."""
    if not specs:
        raise ValidateError("optdisco validate: give at least one RULE (or --learned WEIGHTS)")
    if seeds < 1 or budget <= 0 or not 0 < tune_budget <= 1:
        raise ValidateError("--seeds must be >= 1, --budget > 0, and 0 < --tune-budget <= 1")
    if backend not in BACKENDS:
        raise ValidateError(f"unknown --backend {backend!r}; backends: {', '.join(BACKENDS)}")
    targets = [resolve_target(s, backend) for s in specs]
    unique_names(targets)
    if device is None:
        if scale == "gpu" and not torch.cuda.is_available():
            raise ValidateError("--scale gpu needs a CUDA device (torch sees none); "
                                "pass --device cpu to run the gpu sizes on the CPU anyway")
        device = "cuda" if scale == "gpu" else "cpu"
    dtype = dtype or ("bf16" if torch.device(device).type == "cuda" else "fp32")
    names = list(tasks) if tasks else validate_tasks()
    for n in names:
        get_task(n, scale, device)  # unknown names fail before any training
    settings = Settings(scale=scale, seeds=seeds, budget=budget, tune_budget=tune_budget, device=device,
                        dtype=dtype, backend=backend)
    out = Path(output)
    results = results_path_for(out)
    val = validate([t.contender for t in targets], names, settings, results, train=not report_only,
                   console=console, progress=progress and not report_only)
    report = write_validation_report(val, out, results_path=results)
    written = write_back(val, targets, report) if not report_only and not val.missing else []
    if console is not None:
        console.print(f"{val.trained} trainings run, {val.reused} reused from {results}"
                      + (f", at least {val.missing} not trained yet" if val.missing else ""))
        for w in written:
            console.print(f"recorded in {w}")
        console.print(f"wrote {report}")
        console.print(summary_table(val))
    return val, report
