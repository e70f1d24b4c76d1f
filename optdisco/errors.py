"""The project's error type for user mistakes.

A :class:`UserError` is something the person at the keyboard can fix: an unknown rule name,
a store that is missing or already exists, a bad config file, a rule text that does not parse.
The ``optdisco`` command prints it as one line on stderr with exit code 2; any other exception
is a bug and surfaces as a traceback. This module imports nothing so every layer may use it.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user asked for (a name, a path, a setting, a rule text)."""
