"""Where generated sources live: one file per generated module, named by content hash.

Triton compiles only functions defined in real files (it reads their source), and files
make generated code readable; so every generator writes here and imports from here.
``OPTDISCO_CACHE_DIR`` overrides the default ``~/.cache/optdisco/kernels``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType


def cache_dir() -> Path:
    """The directory generated sources are written to (created if missing)."""
    root = os.environ.get("OPTDISCO_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "optdisco", "kernels")
    path = Path(root)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:  # read-only home: fall back to the temp dir
        path = Path(tempfile.gettempdir()) / "optdisco-kernels"
        path.mkdir(parents=True, exist_ok=True)
    return path


def load_source(prefix: str, source: str) -> ModuleType:
    """Write ``source`` to ``<cache>/<prefix>_<sha>.py`` (once) and import it as a module."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    mod_name = f"optdisco_gen_{prefix}_{digest}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    path = cache_dir() / f"{prefix}_{digest}.py"
    if not path.exists() or path.read_text() != source:
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(source)
        os.replace(tmp, path)  # atomic: concurrent writers never expose a partial file
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    spec.loader.exec_module(module)
    return module
