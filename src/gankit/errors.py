"""gankit's error types (no heavy imports: the CLI loads them before anything else)."""

from __future__ import annotations


class GankitError(Exception):
    """An error caused by the user's input or environment; the CLI prints it as one line (exit 1)."""


class UsageError(GankitError):
    """A bad command-line argument or config value: the CLI exits 2 (runtime errors exit 1)."""


class ConfigError(UsageError):
    """A bad config key, value or preset name."""
