"""The one dispatcher between the compiled hot path and its pure-Python twin.

``KAKASHI_NO_EXTENSIONS`` at import time, read as a switch (``1``/``true``/``yes``/``on``
select the twin; ``0``/``false``/``no``/``off`` or empty do not), selects the pure-Python
twin; so does a missing or broken extension, or an interpreter other than CPython.
:data:`USING_SPEEDUPS` says which one is in use and :data:`SELECTION` why. When the
compiled build was wanted but could not be had (compiling failed when the package was
built, or the compiled modules do not load), the import says so once on stderr. Public
modules import from here, never from a ``_c`` or ``_py`` module directly. Type checkers
read the pure-Python twin.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from importlib import import_module
from importlib.util import find_spec
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from kakashi._switch import env_switch

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
    "set_trace_correlation",
    "sink_run_end",
    "snapshot",
    "Snapshot",
    "trace_fields",
)
_FORMAT_NAMES = (
    "Lines",
    "bulk_body",
    "clickhouse_body",
    "clickhouse_rows",
    "clickhouse_tsv_rows",
    "event_dict",
    "exception_dict",
    "format_batch",
    "flock_holding_gil",
    "format_json",
    "fstat_size_holding_gil",
    "gil_held_writes",
    "minimal_json",
    "close_holding_gil",
    "ofd_getlk_holding_gil",
    "open_holding_gil",
    "render_timestamp",
    "stat_identity_holding_gil",
    "write_holding_gil",
    "write_releasing_gil",
)
_QUEUE_NAMES = (
    "BLOCK",
    "DROP_NEWEST",
    "DROP_OLDEST",
    "REASONS",
    "RecordQueue",
    "begin_waiting_for_workers",
    "claim_counts",
    "claim_gil",
    "claiming",
    "end_waiting_for_workers",
    "handed_over_here",
    "never_wait_for_room",
    "unclaim_gil",
    "unclaimed",
    "park_counts",
    "yield_gil",
)
_BRIDGE_NAMES = (
    "ACCESS_LOGGERS",
    "BRIDGED",
    "ORIGIN_KEY",
    "STANDARD_ATTRIBUTES",
    "direct_handlers",
    "direct_record",
    "handler_emit",
    "handler_handle",
    "lean_log",
    "make_record",
    "set_handler_class",
    "to_record",
)
_MODULES = {
    "capture": _CAPTURE_NAMES,
    "format": _FORMAT_NAMES,
    "queue": _QUEUE_NAMES,
    "bridge": _BRIDGE_NAMES,
}

_RECORD = Path(__file__).with_name("_build.json")


def _switch_off_extensions() -> bool:
    try:
        return env_switch("KAKASHI_NO_EXTENSIONS")
    except ValueError as exc:  # an import must not fail: say so, keep the compiled build
        _notify(f"kakashi: {exc}; ignored\n")
        return False


def build_record() -> dict[str, Any] | None:
    """What the build that installed this copy recorded (``_build.json``), if anything."""
    try:
        record = json.loads(_RECORD.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _out_of_date(record: dict[str, Any] | None) -> list[str]:
    """The sources changed since the compiled modules were built from them (an in-place
    build that was not redone after a pull or an edit)."""
    if record is None or not isinstance(record.get("sources"), dict):
        return []
    changed = []
    for name, digest in record["sources"].items():
        try:
            data = (_RECORD.parent / str(name)).read_bytes()
        except OSError:
            continue  # not shipped here: nothing to compare
        if hashlib.sha256(data).hexdigest() != digest:
            changed.append(str(name))
    return changed


def _explain(failure: ImportError | None) -> tuple[str, bool]:
    """Why this implementation was selected, and whether that deserves a notice."""
    if USING_SPEEDUPS:
        return "compiled", False
    if _STALE:
        return (
            f"pure-Python: the compiled modules are older than their sources "
            f"({', '.join(_STALE)} changed since the build; `python3 -m pip install -e .` "
            "rebuilds them)",
            True,
        )
    if _REQUESTED:
        value = os.environ.get("KAKASHI_NO_EXTENSIONS")
        return f"pure-Python: KAKASHI_NO_EXTENSIONS={value} in the environment", False
    if sys.implementation.name != "cpython":
        return f"pure-Python: {sys.implementation.name} is not CPython", False
    present = any(find_spec(f"kakashi._speedups._{name}_c") for name in _MODULES)
    if present:
        return f"pure-Python: the compiled modules do not load ({failure})", True
    record = build_record()
    if record is None:
        return (
            "pure-Python: the extension is not built in this copy (a source checkout? "
            "`python3 -m pip install -e .` builds it in place)",
            False,
        )
    reason = str(record.get("reason", "unknown"))
    if record.get("compiled"):
        return "pure-Python: the compiled modules are missing from the installation", True
    if record.get("requested_pure"):
        return f"pure-Python: {reason}", False
    return f"pure-Python: {reason}", True


def _notify(text: str) -> None:
    stream = sys.__stderr__ or sys.stderr
    try:
        stream.write(text)
        stream.flush()
    except Exception:
        pass


#: Sources changed since the compiled modules were built (filled in when they are loaded).
_STALE: list[str] = []
_REQUESTED = _switch_off_extensions()
#: Whether the pure-Python twin is in use because it was asked for or the interpreter is
#: not CPython (not because the extension is missing).
NO_EXTENSIONS = _REQUESTED or sys.implementation.name != "cpython"

if TYPE_CHECKING:
    from kakashi._speedups._bridge_py import (
        ACCESS_LOGGERS,
        BRIDGED,
        ORIGIN_KEY,
        STANDARD_ATTRIBUTES,
        direct_handlers,
        direct_record,
        handler_emit,
        handler_handle,
        lean_log,
        make_record,
        set_handler_class,
        to_record,
    )
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
        set_trace_correlation,
        sink_run_end,
        snapshot,
        trace_fields,
    )
    from kakashi._speedups._format_py import (
        Lines,
        bulk_body,
        clickhouse_body,
        clickhouse_rows,
        clickhouse_tsv_rows,
        close_holding_gil,
        event_dict,
        exception_dict,
        flock_holding_gil,
        format_batch,
        format_json,
        fstat_size_holding_gil,
        gil_held_writes,
        minimal_json,
        ofd_getlk_holding_gil,
        open_holding_gil,
        render_timestamp,
        stat_identity_holding_gil,
        write_holding_gil,
        write_releasing_gil,
    )
    from kakashi._speedups._queue_py import (
        BLOCK,
        DROP_NEWEST,
        DROP_OLDEST,
        REASONS,
        RecordQueue,
        begin_waiting_for_workers,
        claim_counts,
        claim_gil,
        claiming,
        end_waiting_for_workers,
        handed_over_here,
        never_wait_for_room,
        park_counts,
        unclaim_gil,
        unclaimed,
        yield_gil,
    )
    from kakashi._state import Snapshot

    USING_SPEEDUPS: bool
    SELECTION: str
else:

    def _load(suffix: str) -> list[ModuleType]:
        return [import_module(f"kakashi._speedups._{name}_{suffix}") for name in _MODULES]

    USING_SPEEDUPS = False
    _failure: ImportError | None = None
    if not NO_EXTENSIONS:
        try:
            _modules = _load("c")
            # Compiled from other sources than these twins: their interfaces may differ.
            _STALE = _out_of_date(build_record())
            USING_SPEEDUPS = not _STALE
        except ImportError as exc:  # not built, or built but not loadable: use the twin
            _failure = exc
    if not USING_SPEEDUPS:
        _modules = _load("py")
    for _module, _names in zip(_modules, _MODULES.values(), strict=True):
        globals().update({name: getattr(_module, name) for name in _names})
    del _module, _modules, _names
    SELECTION, _surprising = _explain(_failure)
    if _surprising:
        _notify(
            f"kakashi: {SELECTION}. Logging works, several times slower; `kakashi info` says "
            "more. Set KAKASHI_NO_EXTENSIONS=1 to choose the pure-Python build and silence "
            "this.\n"
        )

__all__ = [
    "ACCESS_LOGGERS",
    "BLOCK",
    "BRIDGED",
    "CAPTURE_SOURCE",
    "CAPTURE_THREAD_NAME",
    "DROP_NEWEST",
    "DROP_OLDEST",
    "NO_EXTENSIONS",
    "ORIGIN_KEY",
    "REASONS",
    "RESERVED_KEYS",
    "SELECTION",
    "STANDARD_ATTRIBUTES",
    "USING_SPEEDUPS",
    "Bound",
    "Lines",
    "Logger",
    "Record",
    "RecordQueue",
    "Route",
    "Snapshot",
    "begin_waiting_for_workers",
    "claim_counts",
    "claim_gil",
    "claiming",
    "direct_handlers",
    "direct_record",
    "handler_emit",
    "handler_handle",
    "event_dict",
    "exception_dict",
    "format_batch",
    "format_json",
    "gil_held_writes",
    "json_default",
    "lean_log",
    "level_name",
    "make_record",
    "minimal_json",
    "end_waiting_for_workers",
    "handed_over_here",
    "never_wait_for_room",
    "render_message",
    "render_timestamp",
    "write_holding_gil",
    "flock_holding_gil",
    "fstat_size_holding_gil",
    "close_holding_gil",
    "ofd_getlk_holding_gil",
    "open_holding_gil",
    "stat_identity_holding_gil",
    "write_releasing_gil",
    "unclaim_gil",
    "unclaimed",
    "park_counts",
    "yield_gil",
    "build_record",
    "bulk_body",
    "clickhouse_body",
    "clickhouse_rows",
    "clickhouse_tsv_rows",
    "safe_key",
    "set_handler_class",
    "set_trace_correlation",
    "sink_run_end",
    "snapshot",
    "to_record",
    "trace_fields",
]
