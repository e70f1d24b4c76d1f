"""Training-loop companions that leave the optimizer untouched: adaptive batch sizes
(:mod:`.batch_size`) and zeroth-order gradients (:mod:`.zeroth_order`).

They depend on torch only, so they sit at the bottom of the layers beside ``errors``; the
evaluators use them to train candidates under growing batches or estimated gradients.
"""

from .batch_size import BatchSizeSpec, NormTestBatchSize, per_sample_gradients
from .zeroth_order import GradientSpec, ZerothOrderGradients, cge_estimate, cge_rows, rge_estimate, rge_rows

__all__ = ["BatchSizeSpec", "GradientSpec", "NormTestBatchSize", "per_sample_gradients", "ZerothOrderGradients", "cge_estimate", "cge_rows",
           "rge_estimate", "rge_rows"]
