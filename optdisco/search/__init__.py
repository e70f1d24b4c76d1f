"""Discovery campaigns: regularized evolution over update rules, on Ray, in a SQLite store.

- :mod:`.config`: the campaign config (embedded ``defaults.toml``, presets, TOML files, flags).
- :mod:`.mutate`: mutations that always give a valid Program; random programs.
- :mod:`.evolution`: regularized evolution (aging, tournament) with a random-search arm.
- :mod:`.cache`: the functional-hash cache key.
- :mod:`.fitness`: the fitness functions and the batch entry point workers run.
- :mod:`.executors`: in-process (tests) and Ray executors.
- :mod:`.store`: the campaign store; :func:`.store.load_program` resolves ``DB:ID``.
- :mod:`.campaign`: the asynchronous steady-state driver (search, simplify, funnel).
- :mod:`.simplify`, :mod:`.funnel`, :mod:`.leaderboard`, :mod:`.report`, :mod:`.found`.

Heavy dependencies (ray, matplotlib, sympy) are imported where they are used.
"""
