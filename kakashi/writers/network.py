"""Writers that hand records to your code or a remote collector."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from kakashi import _errors

__all__ = ["SendWriter"]


class SendWriter:
    """Call ``send(message)`` for each formatted record, retrying failures with backoff.

    Used by :func:`kakashi.core.async_interface.get_network_logger`: under the async
    backend, ``send`` runs on a worker thread, never on the caller. A message that still
    fails after *max_retries* retries is counted as dropped (``write`` returns how many
    were), reported once on stderr, and the next message is tried.

    Args:
        send: called with each message (a ``str``, one JSON object) in order.
        max_retries: retries per message after the first attempt.
        retry_delay: the first retry's delay in seconds; doubled each time, capped at
            *max_delay*.
        max_delay: the longest single wait between retries.

    Raises:
        TypeError: *send* is not callable.
        ValueError: a negative retry count or delay.
    """

    def __init__(
        self,
        send: Callable[[str], Any],
        *,
        max_retries: int = 5,
        retry_delay: float = 0.1,
        max_delay: float = 2.0,
    ) -> None:
        if not callable(send):
            raise TypeError(f"send must be callable, got {type(send).__name__}")
        if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
            raise ValueError(f"max_retries must be an int >= 0, got {max_retries!r}")
        if retry_delay < 0 or max_delay < 0:
            raise ValueError("retry_delay and max_delay must not be negative")
        self.send = send
        self.max_retries = max_retries
        self.retry_delay = retry_delay
        self.max_delay = max_delay
        self.sent = 0
        self.failed = 0

    def write(self, batch: Sequence[bytes]) -> int:
        """Send every record of *batch*; return how many could not be sent."""
        failed = 0
        for line in batch:
            message = line.decode("utf-8", "replace")
            delay = self.retry_delay
            for attempt in range(self.max_retries + 1):
                try:
                    self.send(message)
                except Exception as exc:
                    if attempt == self.max_retries:
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
