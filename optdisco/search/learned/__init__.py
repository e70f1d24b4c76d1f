"""Learned optimizers and learned search (issue 7).

- :mod:`.features`, :mod:`.mlp_optimizer`: a small per-parameter MLP optimizer.
- :mod:`.es`: evolution strategies (antithetic, fitness shaping, truncated unrolls, PES),
  in-process or on Ray, with checkpoints.
- :mod:`.constants`: ES over a rule's hyperparameters and literal constants.
- :mod:`.distill`: record the learned optimizer, search rules that imitate it.
- :mod:`.surrogate`: a fitness predictor that ranks children before training.
"""
