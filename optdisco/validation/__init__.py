"""``optdisco validate``: rules against tuned AdamW and Lion at scale, in one package.

- :mod:`.targets`: what is compared (contenders, the RULE arguments naming them, the
  baselines whose losses are the targets) and where each result is written back;
- :mod:`.run`: the trainings (a real torch loop), tuning, seeds, the resumable results file
  and the statistics;
- :mod:`.report`: the HTML report and the printed summary table;
- :mod:`.record`: the write-back into a campaign store, a found-rule file or the user data
  directory;
- :mod:`.command`: the command from RULE arguments to the printed table.

It sits above ``search`` (it reads campaign stores and runs learned optimizers) and below
the cli.
"""
