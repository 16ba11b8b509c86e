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
