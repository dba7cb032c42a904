"""What a network writer tells the async backend when a batch is not (all) delivered.

A writer's ``write(batch)`` returns when every record of the batch was delivered. When
some were not, it raises :class:`DeliveryError`, which says, record by record, what
happened to the batch:

- ``retry``: the indices (into the batch, ascending) worth trying again: a connection
  refused or reset, a timeout, a 408, 425, 429, 500, 502, 503 or 504, the items a bulk
  API reports as retryable. The backend tries them again after its backoff (at least
  ``retry_after`` seconds when the server said so), within the writer's retry budget, in
  order.
- ``dropped``: index -> reason, for records no retry can help (a 400 for a malformed
  entry, a record over the server's size limit). The backend counts them as dropped
  under their reason, at once.
- every other index was delivered.

``reason`` labels the failure as a whole (``"timeout"``, ``"connect"``, ``"dns"``,
``"tls"``, ``"http_503"``...): the backend counts the records it finally gives up on
under it, so ``get_async_stats()`` says why records were lost, not only how many.

Besides those, the backend counts records a writer did not get under the reasons named
here: :data:`CIRCUIT_OPEN`, :data:`BACKLOG_FULL`, :data:`SHUTDOWN`, :data:`WRITE_ERROR`
(the writer raised something other than a :class:`DeliveryError`) and
:data:`WRITER_REJECTED` (its ``write`` returned a count of records it could not take).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

from kakashi._durations import MAX_WAIT, check_seconds

__all__ = [
    "BACKLOG_FULL",
    "CIRCUIT_OPEN",
    "DeliveryError",
    "SHUTDOWN",
    "WRITER_REJECTED",
    "WRITE_ERROR",
    "RETRYABLE_STATUS",
    "parse_retry_after",
    "set_retry_policy",
    "status_reason",
]

#: HTTP statuses worth retrying (timeouts, rate limits and server-side failures). Every
#: other 4xx says the request itself is wrong, and sending it again cannot help.
RETRYABLE_STATUS: Final = frozenset({408, 425, 429, 500, 502, 503, 504})
_MAX_RETRY_AFTER: Final = 3600.0

#: Not tried, because the writer's circuit was open (it failed batch after batch).
CIRCUIT_OPEN: Final = "circuit_open"
#: Not tried, because more than ``max_queue_size`` records waited for the writer (the
#: oldest go).
BACKLOG_FULL: Final = "backlog_full"
#: Not delivered by the shutdown's deadline (and the writer has no ``spool``).
SHUTDOWN: Final = "shutdown"
#: The writer raised something other than a DeliveryError, and retries did not help.
WRITE_ERROR: Final = "write_error"
#: The writer's ``write`` returned a count of records it could not take.
WRITER_REJECTED: Final = "writer_rejected"


class DeliveryError(ConnectionError):
    """Some records of a batch were not delivered (see the module description).

    Args:
        reason: what went wrong, as a short label counted in the stats.
        retry: indices of the records worth trying again.
        dropped: index -> reason, for records that cannot be delivered.
        retry_after: the server's wish, in seconds, before the next try (``None``: none).
        detail: a human explanation (the server's message, capped), for the error report.

    Raises:
        ValueError: an index is negative, or in both ``retry`` and ``dropped``.
    """

    def __init__(
        self,
        reason: str,
        *,
        retry: Iterable[int] = (),
        dropped: Mapping[int, str] | None = None,
        retry_after: float | None = None,
        detail: str = "",
    ) -> None:
        self.reason = str(reason) or "failed"
        self.retry: tuple[int, ...] = tuple(sorted(set(retry)))
        self.dropped: dict[int, str] = dict(dropped or {})
        if any(index < 0 for index in (*self.retry, *self.dropped)):
            raise ValueError("DeliveryError: a record index is negative")
        if not self.dropped.keys().isdisjoint(self.retry):
            raise ValueError("DeliveryError: a record cannot be both retried and dropped")
        self.retry_after = retry_after
        self.detail = detail[:500]
        super().__init__(f"{self.reason}: {self.detail}" if self.detail else self.reason)

    @classmethod
    def whole(
        cls,
        size: int,
        reason: str,
        *,
        retryable: bool,
        start: int = 0,
        retry_after: float | None = None,
        detail: str = "",
    ) -> DeliveryError:
        """The records from *start* to *size* all failed alike (a connection error, an
        HTTP status for the whole request): retried if *retryable*, else dropped under
        *reason*. *retry_after* and *detail* are as for the class."""
        indices = range(start, size)
        if retryable:
            return cls(reason, retry=indices, retry_after=retry_after, detail=detail)
        return cls(reason, dropped=dict.fromkeys(indices, reason), detail=detail)

    def within(self, size: int) -> tuple[list[int], dict[int, str]]:
        """The records of a batch of *size* this error names: ``(retry, dropped)``.

        Indices outside the batch (beyond it, or negative: a writer's mistake) are
        ignored. An error that names none of its records says that the batch was not
        delivered without saying which records: all of them are to retry (raising says
        something failed, and nothing may be counted delivered that was not).
        """
        retry = [index for index in self.retry if 0 <= index < size]
        dropped = {index: why for index, why in self.dropped.items() if 0 <= index < size}
        if not retry and not dropped:
            retry = list(range(size))
        return retry, dropped

    @property
    def written(self) -> int:
        """How many records at the start of the batch were delivered (the older
        ``written`` contract of :class:`~kakashi.typing.Writer`)."""
        failed = [*self.retry, *self.dropped]
        return min(failed) if failed else 0


def status_reason(status: int) -> str:
    """The stats label of an HTTP *status*: ``"http_503"``."""
    return f"http_{int(status)}"


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header's *value*: a number of seconds or an
    HTTP date (counted from *now*, a ``time.time()``; default: the current time).
    ``None`` when absent or unreadable; capped at an hour, never negative."""
    if not value:
        return None
    value = value.strip()
    import email.utils  # here: ``import kakashi`` loads this module, rarely this function

    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


def set_retry_policy(
    writer: Any,
    *,
    max_error_retries: int | None = None,
    error_retry_delay: float | None = None,
    max_delay: float | None = None,
    retry_budget: float | None = None,
) -> None:
    """Check a network writer's own retry settings and set them as its attributes.

    The async backend reads these attributes (a writer without one follows the
    backend's setting); ``None`` leaves an attribute unset. *max_error_retries* is an
    int >= 0; *error_retry_delay* (the first wait, doubled each time), *max_delay* (the
    longest wait) and *retry_budget* (the time bound from a batch's first try) are
    seconds from 0 to one day (see :class:`~kakashi.core.async_backend.AsyncConfig`).

    Raises:
        ValueError: a setting out of range (the message names it).
    """
    if max_error_retries is not None:
        if type(max_error_retries) is not int or max_error_retries < 0:
            raise ValueError(f"max_error_retries must be an int >= 0, got {max_error_retries!r}")
        writer.max_error_retries = max_error_retries
    for name, value in (
        ("error_retry_delay", error_retry_delay),
        ("max_delay", max_delay),
        ("retry_budget", retry_budget),
    ):
        if value is not None:
            setattr(writer, name, check_seconds(name, value, at_most=MAX_WAIT, zero=True))
