"""Milliseconds per functional fingerprint of each catalog rule (the search hashes thousands).

    python benchmarks/bench_fingerprint.py

Prints the median over rounds per rule group: rules with matrix-shaped states (hashed on their
own matrix probes) and the rest.
"""

from __future__ import annotations

import statistics
import time

import optdisco
from optdisco.dsl.fingerprint import fingerprint


def main(rounds: int = 3) -> None:
    progs = [optdisco.catalog.get(n) for n in optdisco.catalog.names()]
    fingerprint(progs[0])
    groups = {"elementwise states": [p for p in progs if not p.has_matrix_states],
              "matrix states": [p for p in progs if p.has_matrix_states]}
    for name, group in groups.items():
        per = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for p in group:
                fingerprint(p)
            per.append((time.perf_counter() - t0) / max(1, len(group)))
        print(f"{name}: {len(group)} rules, {1e3 * statistics.median(per):.1f} ms per fingerprint (median of {rounds})")


if __name__ == "__main__":
    main()
