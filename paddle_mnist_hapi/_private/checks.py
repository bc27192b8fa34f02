"""Argument checks shared by the library's constructors.

Examples:
    >>> check_int("log_freq", 10, minimum=1)
    10
    >>> check_int("log_freq", 0, minimum=1)
    Traceback (most recent call last):
    ...
    paddle_mnist_hapi.errors.ConfigError: log_freq must be an integer >= 1. Received: log_freq=0
"""

from __future__ import annotations

from paddle_mnist_hapi.errors import ConfigError

__all__ = ["check_int"]


def check_int(name: str, value: object, minimum: int = 0) -> int:
    """Return ``value`` if it is an ``int`` (not a ``bool``) of at least ``minimum``, else raise ``ConfigError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}. Received: {name}={value!r}")
    return value
