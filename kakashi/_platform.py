"""What needs POSIX, imported only where it is used.

``import kakashi`` works on every platform CPython runs on; a feature that cannot work
without a POSIX module (``fcntl`` locks, for one) imports it when it is configured and
raises :class:`UnsupportedPlatformError` naming the feature if the platform lacks it.
Fork hooks are registered only where ``os.register_at_fork`` exists.
"""

from __future__ import annotations

import sys
from importlib import import_module
from types import ModuleType

__all__ = ["UnsupportedPlatformError", "posix_module"]


class UnsupportedPlatformError(RuntimeError):
    """A feature was configured on a platform that lacks what it needs (see the message)."""


def posix_module(name: str, feature: str) -> ModuleType:
    """Import the POSIX-only module *name*, which *feature* needs.

    Raises:
        UnsupportedPlatformError: the platform has no such module; the message names
            the feature, the module and the platform.
    """
    try:
        return import_module(name)
    except ImportError:
        raise UnsupportedPlatformError(
            f"{feature} needs the POSIX module {name!r}, which this platform "
            f"({sys.platform}) does not have"
        ) from None
