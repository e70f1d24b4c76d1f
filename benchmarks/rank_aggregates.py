"""How the proxy suite's aggregate should weigh its tasks: Spearman correlation with the
held-out ranking of 12 catalog rules for several aggregates of the per-task log-ratios.

    python benchmarks/rank_aggregates.py

The held-out fitnesses are the ones `bench_eval.py --rank` printed on 2026-11-29 (after the
batch-independence fix); the proxy per-task values are recomputed and written to
proxy_per_task.json beside the current directory.
"""
import json, numpy as np
from optdisco import catalog
from optdisco.evaluators import evaluate
names = ["sgd", "momentum", "nesterov", "adam", "adamw", "nadamw", "lion", "signum", "adabelief", "rmsprop", "adagrad", "lamb"]
held = {"nesterov": -0.073, "momentum": -0.112, "adamw": 0.0, "adam": 0.090, "adabelief": 0.152, "nadamw": 0.224,
        "rmsprop": 0.286, "signum": 0.014, "adagrad": -0.140, "lamb": 0.006, "sgd": -0.334, "lion": -0.474}
evs = evaluate([catalog.get(n) for n in names], suite="proxy", budget=1.0, properties=False)
per = {n: e.per_task for n, e in zip(names, evs)}
json.dump(per, open("proxy_per_task.json", "w"), indent=1)
def sp(a, b):
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])
h = [held[n] for n in names]
tasks = list(per[names[0]])
for c in (None, 2.0, 1.0, 0.5, 0.25):
    f = [np.mean([np.clip(per[n][t], -c, c) if c else per[n][t] for t in tasks]) for n in names]
    print("clip", c, "rho", round(sp(f, h), 3))
sd = {t: float(np.std([per[n][t] for n in names])) for t in tasks}
for t in tasks:
    print(t, "spread", round(sd[t], 3))
print("standardized mean (each task divided by its spread) rho",
      round(sp([np.mean([per[n][t] / sd[t] for t in tasks]) for n in names], h), 3))
print("mean without rosenbrock rho", round(sp([np.mean([per[n][t] for t in tasks if t != "rosenbrock"]) for n in names], h), 3))
print("median rho", round(sp([np.median([per[n][t] for t in tasks]) for n in names], h), 3))
default4 = ["quadratic", "logreg", "digits_mlp", "teacher_student"]
print("mean of the default campaign's 4 tasks rho", round(sp([np.mean([per[n][t] for t in default4]) for n in names], h), 3))
