"""Writers that hand records to your code or a remote collector."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from kakashi._durations import MAX_WAIT, check_seconds

__all__ = ["SendError", "SendWriter"]


class SendError(ConnectionError):
    """``send`` failed for a message: the messages before it were sent (``written``)."""

    def __init__(self, written: int, cause: BaseException) -> None:
        super().__init__(f"send failed after {written} messages: {cause!r}")
        self.written = written
        self.__cause__ = cause


class SendWriter:
    """Call ``send(message)`` for each formatted record, in order.

    Used by :func:`kakashi.core.async_interface.get_network_logger`: under the async
    backend, ``send`` runs on the writer's own delivery thread, never on the caller or a
    worker's turn. A message that fails stops the batch with :class:`SendError`, which
    says how many were sent; the backend retries the rest under its one policy
    (exponential backoff with jitter, at most *max_error_retries* retries, then a circuit
    breaker) and counts what it gives up on as dropped. The parameters are named as in
    :class:`~kakashi.core.async_backend.AsyncConfig`, with its defaults, and apply to
    this writer only.

    Args:
        send: called with each message (a ``str``, one JSON object) in order.
        max_error_retries: retries of a failed batch after the first attempt.
        error_retry_delay: the first retry's delay in seconds (doubled each time, with
            jitter), capped at *max_delay*. From 0 to one day.
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

    #: Delivered off the workers' turn, on a thread of its own (see Writer.concurrent).
    concurrent = True

    def write(self, batch: Sequence[bytes]) -> None:
        """Send every record of *batch*, in order.

        Raises:
            SendError: ``send`` raised; ``written`` messages were sent before it.
        """
        for index, line in enumerate(batch):
            try:
                self.send(line.decode("utf-8", "replace"))
            except Exception as exc:
                raise SendError(index, exc) from exc
            self.sent += 1

    def flush(self) -> None:
        """Nothing is buffered."""

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"<SendWriter {getattr(self.send, '__qualname__', self.send)!r}>"
