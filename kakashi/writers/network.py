"""Writers that hand records to your code or a remote collector."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from kakashi import _errors
from kakashi._durations import MAX_WAIT, check_seconds

__all__ = ["SendWriter"]


class SendWriter:
    """Call ``send(message)`` for each formatted record, retrying failures with backoff.

    Used by :func:`kakashi.core.async_interface.get_network_logger`: under the async
    backend, ``send`` runs on a worker thread, never on the caller. A message that still
    fails after *max_error_retries* retries is counted as dropped (``write`` returns how
    many were), reported once on stderr, and the next message is tried. The parameters
    are named as in :class:`~kakashi.core.async_backend.AsyncConfig`, with its defaults.

    Args:
        send: called with each message (a ``str``, one JSON object) in order.
        max_error_retries: retries per message after the first attempt.
        error_retry_delay: the first retry's delay in seconds; doubled each time, capped
            at *max_delay*. From 0 to one day.
        max_delay: the longest single wait between retries; from 0 to one day.

    Raises:
        TypeError: *send* is not callable.
        ValueError: a negative retry count, or a delay that is NaN, infinite or out of
            range (the message names the parameter).
    """

    def __init__(
        self,
        send: Callable[[str], Any],
        *,
        max_error_retries: int = 3,
        error_retry_delay: float = 0.1,
        max_delay: float = 2.0,
    ) -> None:
        if not callable(send):
            raise TypeError(f"send must be callable, got {type(send).__name__}")
        retries = max_error_retries
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"max_error_retries must be an int >= 0, got {retries!r}")
        self.send = send
        self.max_error_retries = retries
        self.error_retry_delay = check_seconds(
            "error_retry_delay", error_retry_delay, at_most=MAX_WAIT, zero=True
        )
        self.max_delay = check_seconds("max_delay", max_delay, at_most=MAX_WAIT, zero=True)
        self.sent = 0
        self.failed = 0

    def write(self, batch: Sequence[bytes]) -> int:
        """Send every record of *batch*; return how many could not be sent."""
        failed = 0
        for line in batch:
            message = line.decode("utf-8", "replace")
            delay = self.error_retry_delay
            for attempt in range(self.max_error_retries + 1):
                try:
                    self.send(message)
                except Exception as exc:
                    if attempt == self.max_error_retries:
                        failed += 1
                        _errors.report(f"send {getattr(self.send, '__qualname__', '?')}", exc)
                        break
                    time.sleep(min(delay, self.max_delay))
                    delay *= 2
                else:
                    self.sent += 1
                    break
        self.failed += failed
        return failed

    def flush(self) -> None:
        """Nothing is buffered."""

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"<SendWriter {getattr(self.send, '__qualname__', self.send)!r}>"
