"""optdisco: discover neural-network optimizers by program search.

The public API: :func:`parse` rule text into a :class:`Program`, look rules up in
:mod:`optdisco.catalog`, and train with :class:`Optimizer`::

    import optdisco
    prog = optdisco.parse(text)
    optdisco.catalog.names()
    opt = optdisco.Optimizer(model.parameters(), "lion", lr=1e-4, beta2=0.98)

:class:`LearnedOptimizer` runs a learned MLP optimizer (``optdisco learn --mlp``).
"""

from .discovered import hooks as _hooks
from .dsl import DSLError, Program, parse

__version__ = "0.1.0"
__all__ = ["parse", "Program", "DSLError", "Optimizer", "LearnedOptimizer", "catalog", "equivalent", "__version__"]


def _read_store(db: str, ident: str) -> Program:
    # The search layer is loaded only when a DB:ID rule name is used.
    from .search.store import load_program
    return load_program(db, ident)


def _learned_optimizer_class() -> type:
    # torch and the learned optimizer are loaded only when learned= is used.
    from .search.learned.torch_optimizer import LearnedOptimizer
    return LearnedOptimizer


_hooks.set_store_reader(_read_store)
_hooks.set_learned_optimizer(_learned_optimizer_class)


def __getattr__(name: str):
    # Lazy so that `import optdisco` stays light and free of import cycles.
    if name == "Optimizer":
        from .discovered.optimizer import Optimizer
        return Optimizer
    if name == "LearnedOptimizer":
        return _learned_optimizer_class()
    if name == "catalog":
        import importlib  # stdlib; only this branch needs it
        return importlib.import_module(".catalog", __name__)
    if name == "equivalent":
        from .dsl.equivalence import equivalent
        return equivalent
    raise AttributeError(f"module 'optdisco' has no attribute '{name}'")
