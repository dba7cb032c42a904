"""Report internal failures once, on stderr, without ever raising into the application.

A failing enricher, formatter or writer is the library's problem, not the caller's: it is
counted, and the first occurrence of each kind is written to ``sys.__stderr__`` with a
``kakashi:`` prefix. Later occurrences are only counted (see :func:`error_counts`), so a
broken writer cannot flood the terminal.

A report made while the same thread is counting one (a signal handler that interrupted
it) never waits: its kind is set aside and counted by the next report.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter, deque
from typing import TextIO

from kakashi._locks import after_fork_in_child, fork_safe_rlock, run_in_region

__all__ = ["error_counts", "is_interrupt", "report", "reset"]

# Re-entrant, so that a signal handler that reports while its thread holds the lock
# does not wait for itself; _counting tells it that the counts are being changed.
_lock = fork_safe_rlock()
_counting = False
_late: deque[str] = deque()  # kinds reported re-entrantly, counted by the next report
_counts: Counter[str] = Counter()
#: Where reports go; ``None``: ``sys.__stderr__``, the process's real stderr, so that a
#: ``sys.stderr`` redirected into logging cannot loop a report back into Kakashi. The
#: docs' doctests point it at their captured output to show the report.
stream: TextIO | None = None


def report(where: str, exc: BaseException | None = None, detail: str = "") -> None:
    """Count a failure at *where* and print it to stderr the first time it happens:
    ``kakashi: <where> failed: <exception>`` with *exc*, else ``kakashi: <where>``, then
    ``(<detail>)`` if given.

    Never raises: if stderr itself is gone, the failure is still counted.
    """
    kind = f"{where}: {type(exc).__name__}" if exc is not None else where
    if not run_in_region(_count, kind):
        return
    text = f"kakashi: {where}"
    if exc is not None:  # without one, *where* and *detail* say what happened
        text += f" failed: {type(exc).__name__}: {_safe_str(exc)}"
    if detail:
        text += f" ({detail})"
    text += " (reported once; later occurrences are counted)\n"
    target = stream or sys.__stderr__ or sys.stderr
    try:
        target.write(text)
        target.flush()
    except Exception:
        pass


def _count(kind: str) -> bool:
    """Count one failure of *kind*; return whether it is the first."""
    global _counting
    with _lock:
        if _counting:  # re-entered on this thread: the counts are half-changed
            _late.append(kind)
            return False
        _counting = True
        try:
            while _late:
                _counts[_late.popleft()] += 1
            _counts[kind] += 1
            return _counts[kind] == 1
        finally:
            _counting = False


def is_interrupt(exc: BaseException) -> bool:
    """Whether *exc*, caught around code Kakashi calls but does not own (an enricher, a
    formatter, a value's ``repr``, a message's ``__str__``), may be a signal's, which
    goes on up to the application: a ``KeyboardInterrupt`` (Ctrl-C) or a ``SystemExit``
    (a SIGTERM handler calling ``sys.exit()``) on the main thread, where Python runs
    signal handlers, wherever that thread is, inside a log call too.

    Anything else such code raises there is its failure, caught and counted rather than
    raised into a log call or costing a worker its batch: ``GeneratorExit``, and a
    ``SystemExit`` or ``KeyboardInterrupt`` on another thread, which no signal raises.
    """
    if not isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return False
    return threading.current_thread() is threading.main_thread()


def error_counts() -> dict[str, int]:
    """Return how often each kind of internal failure happened in this process."""
    counts = run_in_region(_copy_counts)
    for kind in list(_late):  # reported re-entrantly, not counted yet
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def reset() -> None:
    """Forget all counts, so the next failure of each kind is reported again."""
    run_in_region(_forget_counts)


def _copy_counts() -> dict[str, int]:
    with _lock:
        return dict(_counts)


def _forget_counts() -> None:
    global _counting
    with _lock:
        _counts.clear()
        _late.clear()
        _counting = False  # in a forked child: a count the parent was making is over


def _safe_str(obj: object) -> str:
    try:
        return str(obj)
    except BaseException as exc:
        if is_interrupt(exc):
            raise
        return f"<unprintable {type(obj).__name__}>"


# A child process must not inherit a "reported once" state that hides its own failures.
# Registered here rather than with os.register_at_fork: it takes _lock, which must be
# released first.
after_fork_in_child(reset)
