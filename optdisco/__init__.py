"""optdisco: discover neural-network optimizers by program search.

The public API: :func:`parse` rule text into a :class:`Program`, look rules up in
:mod:`optdisco.catalog`, and train with :class:`Optimizer`.
"""

from .dsl import DSLError, Program, parse

__version__ = "0.1.0"
__all__ = ["parse", "Program", "DSLError", "__version__"]
