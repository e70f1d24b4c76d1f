import re

from rich.console import Console

import optdisco
from optdisco.cli.commands_eval import eval_command, list_tasks_table
from optdisco.evaluators import SUITES


def render(obj) -> str:
    console = Console(width=200, record=True)
    console.print(obj)
    return console.export_text()


def test_list_tasks_names_every_task_with_sizes():
    text = render(list_tasks_table())
    for names in SUITES.values():
        for n in names:
            assert n in text
    assert "25,405,952" in text  # the gpu-size transformer LM


def test_eval_command_prints_table_and_summary(tmp_path):
    text = render(eval_command(optdisco.catalog.get("lion"), tasks=["logreg"], suite="proxy", seeds=1, budget=0.2,
                               cache_dir=str(tmp_path)))
    assert "logreg" in text and "AdamW lr" in text
    # the summary's numbers, not only its words: fitness inside its 95% interval
    m = re.search(r"fitness ([+-]\d+\.\d{3})  95% CI \[([+-]\d+\.\d{3}), ([+-]\d+\.\d{3})\]", text)
    assert m is not None
    fitness, low, high = map(float, m.groups())
    assert low <= fitness <= high
    assert "noise floor" not in text


def test_a_heldout_result_prints_its_noise_floor(tmp_path):
    text = render(eval_command(optdisco.catalog.get("lion"), tasks=["ho_tabular"], suite="heldout", seeds=1,
                               budget=0.05, cache_dir=str(tmp_path)))
    assert "ho_tabular" in text and "noise floor ±" in text
