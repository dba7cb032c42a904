"""Writers that hand records to your code or a remote collector."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

from kakashi.writers.delivery import WRITE_ERROR, DeliveryError, set_retry_policy

__all__ = ["SendError", "SendWriter", "batched"]

#: The attribute :func:`batched` sets on a ``send`` callable.
BATCHED_ATTRIBUTE = "kakashi_batched"
F = TypeVar("F", bound=Callable[..., Any])


def batched(send: F) -> F:
    """Mark *send* as taking a whole batch: a ``list`` of messages (``str``) per call.

    Use it as a decorator on the function given to
    :func:`~kakashi.core.async_interface.get_network_logger` (or :class:`SendWriter`)::

        @kakashi.batched
        def ship(messages: list[str]) -> None:
            client.bulk(messages)

    It sets the attribute ``kakashi_batched = True`` on *send* and returns it; a
    callable that takes no attributes (a bound method, a builtin) is wrapped in a
    function that has it. Such a *send* reports records it could not deliver by raising
    :class:`~kakashi.writers.delivery.DeliveryError` with indices into the list; any
    other exception means the whole batch failed (retried).

    Raises:
        TypeError: *send* is not callable.
    """
    if not callable(send):
        raise TypeError(f"send must be callable, got {type(send).__name__}")
    try:
        setattr(send, BATCHED_ATTRIBUTE, True)
    except (AttributeError, TypeError):
        original = send

        @functools.wraps(original)
        def send_batch(messages: list[str]) -> Any:
            return original(messages)

        setattr(send_batch, BATCHED_ATTRIBUTE, True)
        return cast("F", send_batch)
    return send


class SendError(ConnectionError):
    """``send`` failed for a message: the messages before it were sent (``written``).

    The exception ``send`` raised, *cause*, is ``__cause__``.
    """

    def __init__(self, written: int, cause: BaseException) -> None:
        super().__init__(f"send failed after {written} messages: {cause!r}")
        self.written = written
        self.__cause__ = cause


class SendWriter:
    """Call ``send(message)`` for each formatted record, in order, or ``send(messages)``
    once per batch when *send* is marked :func:`batched`.

    Used by :func:`kakashi.core.async_interface.get_network_logger`: under the async
    backend, ``send`` runs on the writer's own delivery thread, never on the caller or a
    worker's turn. What ``send`` raising means:

    - :class:`~kakashi.writers.delivery.DeliveryError`: honoured. For one message, a
      ``retry`` stops the batch there (that message and the rest are retried); a
      ``dropped`` one is counted as dropped under its reason and the next message is
      sent. For a batch, its indices are the list's.
    - anything else: for one message, it and the rest of the batch are retried (the
      messages before it were sent: :class:`SendError` says how many; a ``SystemExit``
      or ``KeyboardInterrupt`` is raised on unchanged, its ``written`` set); for a
      batch, the whole batch is retried.

    The backend retries under its one policy (exponential backoff with jitter, at most
    *max_error_retries* retries within its ``retry_budget`` seconds, then a circuit
    breaker) and counts what it gives up on as dropped, by reason. The parameters are
    named as in :class:`~kakashi.core.async_backend.AsyncConfig`, with its defaults, and
    apply to this writer only.

    Args:
        send: called with each message (a ``str``, one JSON object) in order, or with a
            ``list`` of them if marked :func:`batched`.
        max_error_retries: retries of a failed batch after the first attempt.
        error_retry_delay: the first retry's delay in seconds (doubled each time, with
            jitter), capped at *max_delay*. From 0 to one day.
        max_delay: the longest single wait between retries; from 0 to one day.
        retry_budget: the time bound on a batch's retries (``None``: the backend's
            ``retry_budget``); from 0 to one day.
        batched: whether *send* takes a batch; ``None`` (default): as :func:`batched`
            marked it.

    Raises:
        TypeError: *send* is not callable.
        ValueError: a negative retry count, or a delay that is NaN, infinite or out of
            range (the message names the parameter).
    """

    def __init__(
        self,
        send: Callable[..., Any],
        *,
        max_error_retries: int = 3,
        error_retry_delay: float = 0.1,
        max_delay: float = 2.0,
        retry_budget: float | None = None,
        batched: bool | None = None,
    ) -> None:
        if not callable(send):
            raise TypeError(f"send must be callable, got {type(send).__name__}")
        if batched is None:
            batched = getattr(send, BATCHED_ATTRIBUTE, False) is True
        elif not isinstance(batched, bool):
            raise TypeError(f"batched must be a bool or None, got {batched!r}")
        self.send = send
        self.batched = batched
        set_retry_policy(
            self,
            max_error_retries=max_error_retries,
            error_retry_delay=error_retry_delay,
            max_delay=max_delay,
            retry_budget=retry_budget,
        )
        self.sent = 0

    #: Delivered off the workers' turn, on a thread of its own (see Writer.concurrent).
    concurrent = True

    def write(self, batch: Sequence[bytes]) -> None:
        """Send every record of *batch*, in order (one call per batch, or per message).

        Raises:
            DeliveryError: what was not sent, and why.
            SendError: ``send`` raised something else; ``written`` messages were sent.
        """
        # One test per batch, not per message (a bound method kept in an attribute
        # instead would make the writer a reference cycle, collected late).
        if self.batched:
            self._write_batch(batch)
        else:
            self._write_each(batch)

    def _write_each(self, batch: Sequence[bytes]) -> None:
        dropped: dict[int, str] = {}
        for index, line in enumerate(batch):
            try:
                self.send(line.decode("utf-8", "replace"))
            except DeliveryError as exc:
                if exc.dropped and not exc.retry:  # this message cannot be delivered
                    dropped[index] = next(iter(exc.dropped.values()), exc.reason)
                    continue
                raise DeliveryError(
                    exc.reason,
                    retry=range(index, len(batch)),
                    dropped=dropped,
                    retry_after=exc.retry_after,
                    detail=exc.detail,
                ) from exc
            except Exception as exc:
                if dropped:  # the drops before it must be counted too
                    raise DeliveryError(
                        WRITE_ERROR,
                        retry=range(index, len(batch)),
                        dropped=dropped,
                        detail=repr(exc),
                    ) from exc
                raise SendError(index, exc) from exc
            except BaseException as exc:
                # SystemExit, KeyboardInterrupt: raised on as they are (a synchronous
                # caller may be meant to stop), saying what went out so that the backend,
                # which counts it on a lane, does not send those messages again. From the
                # first message dropped on, if any: those are tried again, never lost.
                with contextlib.suppress(Exception):
                    exc.written = min([*dropped, index])  # type: ignore[attr-defined]
                raise
            self.sent += 1
        if dropped:
            raise DeliveryError(dropped[min(dropped)], dropped=dropped)

    def _write_batch(self, batch: Sequence[bytes]) -> None:
        messages = [line.decode("utf-8", "replace") for line in batch]
        try:
            self.send(messages)
        except DeliveryError as exc:
            retry, dropped = exc.within(len(batch))
            self.sent += len(batch) - len(retry) - len(dropped)
            raise
        self.sent += len(batch)

    def flush(self) -> None:
        """Nothing is buffered."""

    def close(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"<SendWriter {getattr(self.send, '__qualname__', self.send)!r}>"
