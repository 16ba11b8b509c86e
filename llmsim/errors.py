"""User-facing errors.

Anything a user can cause (a bad trace row, an unknown config key, a model that does not fit its GPU)
raises :class:`UserError` with one sentence that names the file, row, column or config field and what
was expected. The CLI prints that sentence on one line and exits with status 2; it never shows a
traceback for these. Programming errors stay ordinary exceptions so they are not hidden.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input, reported as one clear line."""

    exit_code = 2


class ConfigError(UserError):
    """An invalid configuration value (names the dotted field path)."""


class TraceError(UserError):
    """An invalid trace file (names the file, row and column)."""


class ProfileError(UserError):
    """An invalid or unknown hardware/model profile, or a model that does not fit."""


def did_you_mean(name: object, choices) -> str:
    """``" (did you mean 'vllm-v1'?)"`` when ``name`` is close to one of ``choices`` (a typo), else ``""``.

    Appended to the "unknown X" errors so that a misspelt key or name points at the intended one.
    """
    import difflib

    by_lower = {str(c).lower(): str(c) for c in choices}
    close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean {by_lower[close[0]]!r}?)" if close else ""
