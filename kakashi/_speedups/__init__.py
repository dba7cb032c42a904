"""The one dispatcher between the compiled hot path and its pure-Python twin.

``KAKASHI_NO_EXTENSIONS`` (any non-empty value) at import time selects the pure-Python
twin; so does a missing or broken extension, or an interpreter other than CPython.
:data:`USING_SPEEDUPS` says which one is in use. Public modules import from here, never
from a ``_c`` or ``_py`` module directly. Type checkers read the pure-Python twin.
"""

from __future__ import annotations

import os
import sys
from importlib import import_module
from types import ModuleType
from typing import TYPE_CHECKING

NO_EXTENSIONS = bool(os.environ.get("KAKASHI_NO_EXTENSIONS")) or (
    sys.implementation.name != "cpython"
)

_CAPTURE_NAMES = (
    "CAPTURE_SOURCE",
    "CAPTURE_THREAD_NAME",
    "RESERVED_KEYS",
    "Bound",
    "Logger",
    "Record",
    "Route",
    "json_default",
    "level_name",
    "render_message",
    "safe_key",
    "snapshot",
    "Snapshot",
)
_FORMAT_NAMES = ("event_dict", "exception_dict", "format_json", "minimal_json", "render_timestamp")

if TYPE_CHECKING:
    from kakashi._speedups._capture_py import (
        CAPTURE_SOURCE,
        CAPTURE_THREAD_NAME,
        RESERVED_KEYS,
        Bound,
        Logger,
        Record,
        Route,
        json_default,
        level_name,
        render_message,
        safe_key,
        snapshot,
    )
    from kakashi._speedups._format_py import (
        event_dict,
        exception_dict,
        format_json,
        minimal_json,
        render_timestamp,
    )
    from kakashi._state import Snapshot

    USING_SPEEDUPS: bool
else:

    def _load() -> tuple[ModuleType, ModuleType, bool]:
        if not NO_EXTENSIONS:
            try:
                return (
                    import_module("kakashi._speedups._capture_c"),
                    import_module("kakashi._speedups._format_c"),
                    True,
                )
            except ImportError:  # the extension was not built: use the twin
                pass
        return (
            import_module("kakashi._speedups._capture_py"),
            import_module("kakashi._speedups._format_py"),
            False,
        )

    _capture, _format, USING_SPEEDUPS = _load()
    globals().update({name: getattr(_capture, name) for name in _CAPTURE_NAMES})
    globals().update({name: getattr(_format, name) for name in _FORMAT_NAMES})
    del _capture, _format

__all__ = [
    "CAPTURE_SOURCE",
    "CAPTURE_THREAD_NAME",
    "NO_EXTENSIONS",
    "RESERVED_KEYS",
    "USING_SPEEDUPS",
    "Bound",
    "Logger",
    "Record",
    "Route",
    "Snapshot",
    "event_dict",
    "exception_dict",
    "format_json",
    "json_default",
    "level_name",
    "minimal_json",
    "render_message",
    "render_timestamp",
    "safe_key",
    "snapshot",
]
