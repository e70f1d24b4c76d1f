"""optdisco: discover neural-network optimizers by program search.

The public API: :func:`parse` rule text into a :class:`Program`, look rules up in
:mod:`optdisco.catalog`, and train with :class:`Optimizer`::

    import optdisco
    prog = optdisco.parse(text)
    optdisco.catalog.names()
    opt = optdisco.Optimizer(model.parameters(), "lion", lr=1e-4, beta2=0.98)
"""

from .dsl import DSLError, Program, parse

__version__ = "0.1.0"
__all__ = ["parse", "Program", "DSLError", "Optimizer", "catalog", "equivalent", "__version__"]


def __getattr__(name: str):
    # Lazy so that `import optdisco` stays light and free of import cycles.
    if name == "Optimizer":
        from .discovered.optimizer import Optimizer
        return Optimizer
    if name == "catalog":
        import importlib
        return importlib.import_module(".catalog", __name__)
    if name == "equivalent":
        from .dsl.equivalence import equivalent
        return equivalent
    raise AttributeError(f"module 'optdisco' has no attribute '{name}'")
