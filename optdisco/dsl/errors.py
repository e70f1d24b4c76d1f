"""The one exception type of the rule language."""

from __future__ import annotations

from ..errors import UserError


class DSLError(ValueError, UserError):
    """A rule text that is not a valid program, or a program used wrongly.

    ``line`` and ``col`` are 1-based positions in the rule text (``None`` when the
    error is not tied to a place); ``hint`` says what to do about it.
    """

    def __init__(self, message: str, line: int | None = None, col: int | None = None,
                 hint: str | None = None) -> None:
        self.message = message
        self.line = line
        self.col = col
        self.hint = hint
        where = f"line {line}, column {col}: " if line is not None and col is not None else (
            f"line {line}: " if line is not None else "")
        text = where + message
        if hint:
            text += f" ({hint})"
        super().__init__(text)
