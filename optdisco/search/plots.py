"""Matplotlib for the HTML reports: a headless pyplot, and a figure as an inline PNG.

Both the campaign report (:mod:`optdisco.search.report`) and the validation report
(:mod:`optdisco.validation.report`) embed their plots in one self-contained HTML file.
matplotlib is optional (the ``search`` extra), so it is imported only when a plot is drawn.
"""

from __future__ import annotations

import base64
import io
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
    # optional (the search extra); only the plots need it
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"), which must come first
    return plt


def png_img(fig: Any) -> str:
    """``fig`` as an ``<img class="plot">`` tag with the PNG inlined as base64 (100 dpi); the
    figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    pyplot().close(fig)
    return f'<img class="plot" alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"/>'
