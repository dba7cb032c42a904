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
_FORMAT_NAMES = (
    "event_dict",
    "exception_dict",
    "format_batch",
    "format_json",
    "minimal_json",
    "render_timestamp",
)
_QUEUE_NAMES = ("BLOCK", "DROP_NEWEST", "DROP_OLDEST", "REASONS", "RecordQueue")

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
        format_batch,
        format_json,
        minimal_json,
        render_timestamp,
    )
    from kakashi._speedups._queue_py import (
        BLOCK,
        DROP_NEWEST,
        DROP_OLDEST,
        REASONS,
        RecordQueue,
    )
    from kakashi._state import Snapshot

    USING_SPEEDUPS: bool
else:

    def _load(suffix: str) -> list[ModuleType]:
        return [import_module(f"kakashi._speedups._{name}_{suffix}") for name in _MODULES]

    _MODULES = {"capture": _CAPTURE_NAMES, "format": _FORMAT_NAMES, "queue": _QUEUE_NAMES}
    USING_SPEEDUPS = False
    if not NO_EXTENSIONS:
        try:
            _modules = _load("c")
            USING_SPEEDUPS = True
        except ImportError:  # the extension was not built: use the twin
            pass
    if not USING_SPEEDUPS:
        _modules = _load("py")
    for _module, _names in zip(_modules, _MODULES.values(), strict=True):
        globals().update({name: getattr(_module, name) for name in _names})
    del _module, _modules, _names

__all__ = [
    "BLOCK",
    "CAPTURE_SOURCE",
    "CAPTURE_THREAD_NAME",
    "DROP_NEWEST",
    "DROP_OLDEST",
    "NO_EXTENSIONS",
    "REASONS",
    "RESERVED_KEYS",
    "USING_SPEEDUPS",
    "Bound",
    "Logger",
    "Record",
    "RecordQueue",
    "Route",
    "Snapshot",
    "event_dict",
    "exception_dict",
    "format_batch",
    "format_json",
    "json_default",
    "level_name",
    "minimal_json",
    "render_message",
    "render_timestamp",
    "safe_key",
    "snapshot",
]
