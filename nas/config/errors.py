"""The one error type of bad user input (its own module: every other ``nas.config`` module raises it)."""
from __future__ import annotations

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """Bad user input: the message is one line naming the value and what was expected."""
