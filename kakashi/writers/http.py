"""The base of the writers that POST batches to a log store over HTTP (``kakashi[http]``).

:class:`HttpWriter` owns the connection pool (urllib3, connections kept alive and
reused), the request body's compression, the timeouts and the reading of the answer:
it turns every way a request can fail into a :class:`~kakashi.writers.delivery.DeliveryError`
that says which records to retry and which to drop, and why. The retrying itself is
the async backend's (one policy for every writer: backoff with jitter, ``Retry-After``
honoured, a circuit breaker). A subclass says how a batch is encoded
(:meth:`HttpWriter.encode`), where it goes (:meth:`HttpWriter.target`) and, for bulk
APIs that answer item by item, what the answer means (:meth:`HttpWriter.check`).

A write is two steps, :meth:`HttpWriter.prepare` (the CPU part: encoding, compressing)
and :meth:`HttpWriter.send` (the request and the reading of its answer), so that the
async backend can prepare the next batch while a request waits for its answer, keeping
one request at a time and the order (``prepare_ahead``).

urllib3 is imported when the first writer is made, so ``import kakashi`` does not load it.
"""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final

from kakashi._durations import MAX_WAIT, check_seconds
from kakashi.writers.delivery import (
    RETRYABLE_STATUS,
    DeliveryError,
    parse_retry_after,
    set_retry_policy,
    status_reason,
)
from kakashi.writers.file import newline_joined

__all__ = ["COMPRESSIONS", "HttpWriter", "Response"]

#: The request body encodings :class:`HttpWriter` can send.
COMPRESSIONS: Final = ("gzip", "zstd", None)
# Each compression's lowest and highest level, and the level used when none is given.
_LEVELS: Final = {"gzip": (0, 9, 1), "zstd": (1, 22, 3)}


def _cut_during_handshake(error: BaseException) -> bool:
    """Whether urllib3's SSLError *error* is the connection ending mid-handshake (an EOF,
    a reset: the server restarting or overloaded, worth retrying) rather than TLS
    refusing the peer (a certificate that does not verify, no common protocol: a
    setting to fix, which no retry can)."""
    import ssl

    transient = (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError, ConnectionError)
    seen: set[int] = set()
    pending = [error]
    while pending:
        cause = pending.pop()
        if id(cause) in seen:
            continue
        seen.add(id(cause))
        if isinstance(cause, transient):
            return True
        pending.extend(arg for arg in cause.args if isinstance(arg, BaseException))
        pending.extend(c for c in (cause.__cause__, cause.__context__) if c is not None)
    return False


def _then(body: bytes, meanwhile: Callable[[], object]) -> Iterator[bytes]:
    """*body* as the one chunk of a request body, then ``meanwhile()`` once it is sent."""
    yield body
    meanwhile()


class Response:
    """What a server answered: ``status``, ``headers`` (names lowercased) and ``body``."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.status = status
        self.headers = {name.lower(): value for name, value in headers.items()}
        self.body = body

    def text(self, limit: int = 500) -> str:
        """The start of the body as text, at most *limit* characters, for error reports."""
        return self.body[:limit].decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"<Response {self.status} {len(self.body)} bytes>"


class HttpWriter:
    """POST each batch, encoded by :meth:`encode`, to *url* (see the module description).

    Args:
        url: ``http://`` or ``https://`` URL of the endpoint.
        headers: extra request headers (authentication, tenant ids).
        compression: ``"gzip"``, ``"zstd"`` or ``None``; sent as ``Content-Encoding``.
        compression_level: the compressor's level (``None``: gzip 1, zstd 3). Log lines
            repeat themselves: gzip's fastest level makes bodies about as small as its
            default (6) in less than half the time (see the shipping benchmark).
        timeout: seconds to wait for the answer once the request is sent.
        connect_timeout: seconds to wait for a connection (default: *timeout*).
        verify: check the server's TLS certificate (on by default; ``False`` is for tests
            against self-signed servers only).
        ca_certs: a CA bundle file to verify against instead of the system's.
        username, password: HTTP basic authentication.
        max_error_retries, error_retry_delay, max_delay, retry_budget: this writer's
            retry policy (see :class:`~kakashi.core.async_backend.AsyncConfig`); ``None``
            takes the backend's.
        pool_size: connections kept per host.
        max_batch_records: when the collector falls behind and several batches wait for
            it, up to this many records of them go in one request (fewer, larger
            requests: a store pays per request, ClickHouse a new part per insert); 0
            sends each batch as the workers formatted it.
        max_in_flight: how many requests may be on their way at once (each on a thread
            of the writer's lane). More than 1 overlaps encoding one request with the
            server's work on another, but gives up the order guarantee for this writer:
            its batches may arrive in any order. For stores that order records by their
            own timestamps (ClickHouse, Elasticsearch) and do not mind.
        prepare_ahead: with one request at a time, encode and compress the next batch
            between sending a request and reading its answer (on the lane's thread,
            while the server works), so that it is ready to go when the answer is in:
            the order is kept, and the encoding no longer adds to the server's time.
            ``False`` prepares each batch in its turn, after the answer before (no
            batch's body held in memory ahead of its turn; each answer read as soon
            as it comes).

    Raises:
        ValueError: a URL that is not http(s), an unknown compression, a timeout out of
            range (each names the parameter).
        TypeError: *prepare_ahead* is not a bool.
        ImportError: urllib3 is not installed (``pip install kakashi[http]``).
    """

    #: Delivered off the workers' turn, on a thread of its own.
    concurrent = True
    #: The request's Content-Type.
    content_type = "application/x-ndjson"
    #: The statuses retried; every other non-2xx status drops the request's records.
    retryable_status: frozenset[int] = RETRYABLE_STATUS

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        compression: str | None = "gzip",
        compression_level: int | None = None,
        timeout: float = 10.0,
        connect_timeout: float | None = None,
        verify: bool = True,
        ca_certs: str | None = None,
        username: str | None = None,
        password: str | None = None,
        max_error_retries: int | None = None,
        error_retry_delay: float | None = None,
        max_delay: float | None = None,
        retry_budget: float | None = None,
        pool_size: int = 4,
        max_batch_records: int = 10_000,
        max_in_flight: int = 1,
        prepare_ahead: bool = True,
    ) -> None:
        try:
            import urllib3
        except ImportError as exc:  # pragma: no cover - the test extra installs it
            raise ImportError(
                f"{type(self).__name__} needs urllib3: pip install 'kakashi[http]'"
            ) from exc
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"url must be an http:// or https:// URL, got {url!r}")
        if compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {COMPRESSIONS}, got {compression!r}")
        if compression is None:
            if compression_level is not None:
                raise ValueError("compression_level is for a compression, and it is None")
        else:
            low, high, default = _LEVELS[compression]
            if compression_level is None:
                compression_level = default
            if type(compression_level) is not int or not low <= compression_level <= high:
                raise ValueError(
                    f"compression_level must be an int from {low} to {high} for "
                    f"compression={compression!r}, got {compression_level!r}"
                )
        timeout = check_seconds("timeout", timeout, at_most=MAX_WAIT)
        connect = timeout if connect_timeout is None else connect_timeout
        connect = check_seconds("connect_timeout", connect, at_most=MAX_WAIT)
        if type(pool_size) is not int or pool_size < 1:
            raise ValueError(f"pool_size must be an int >= 1, got {pool_size!r}")
        if type(max_batch_records) is not int or max_batch_records < 0:
            raise ValueError(f"max_batch_records must be an int >= 0, got {max_batch_records!r}")
        if type(max_in_flight) is not int or max_in_flight < 1:
            raise ValueError(f"max_in_flight must be an int >= 1, got {max_in_flight!r}")
        if not isinstance(prepare_ahead, bool):
            raise TypeError(f"prepare_ahead must be True or False, got {prepare_ahead!r}")
        #: The next batch is prepared while a request is in flight (see the class).
        self.prepare_ahead = prepare_ahead
        #: The most records one request may carry when waiting batches are joined.
        self.max_batch_records = max_batch_records
        #: The most requests on their way at once.
        self.max_in_flight = max_in_flight
        set_retry_policy(
            self,
            max_error_retries=max_error_retries,
            error_retry_delay=error_retry_delay,
            max_delay=max_delay,
            retry_budget=retry_budget,
        )
        self.url = url
        self.compression = compression
        self.compression_level: int = compression_level or 0
        self.timeout = urllib3.Timeout(connect=connect, read=timeout)
        self.headers = {"Content-Type": self.content_type, **dict(headers or {})}
        if compression is not None:
            self.headers["Content-Encoding"] = compression
        if username is not None or password is not None:
            auth = urllib3.util.make_headers(basic_auth=f"{username or ''}:{password or ''}")
            self.headers.update(auth)
        self._pool_options: dict[str, Any] = {
            "maxsize": pool_size,
            "retries": False,
            "timeout": self.timeout,
            "cert_reqs": "CERT_REQUIRED" if verify else "CERT_NONE",
        }
        if ca_certs is not None:
            self._pool_options["ca_certs"] = os.fspath(ca_certs)
        self._urllib3 = urllib3
        self._lock = threading.Lock()
        self._pid = -1
        self._pool: Any = None
        #: Requests answered 2xx, and the bytes sent in them (after compression).
        self.requests = 0
        self.bytes_sent = 0

    # -- what a subclass says -------------------------------------------------------------

    def encode(self, batch: Sequence[bytes]) -> bytes:
        """The request body for *batch* (here: the lines, one per line, as NDJSON)."""
        return newline_joined(batch)

    def target(self) -> str:
        """The URL each batch is POSTed to (here: *url*)."""
        return self.url

    def check(self, batch: Sequence[bytes], response: Response) -> None:
        """Read a 2xx *response* to *batch*; raise
        :class:`~kakashi.writers.delivery.DeliveryError` for the records it reports as not
        taken (bulk APIs answer item by item). Here: all taken."""

    # -- the request ------------------------------------------------------------------------

    def write(self, batch: Sequence[bytes]) -> int | None:
        """Deliver *batch* in one request: ``send(batch, prepare(batch))``.

        Raises:
            DeliveryError: what was not delivered and why (see the module description).
        """
        if not batch:
            return None
        return self.send(batch, self.prepare(batch))

    def prepare(self, batch: Sequence[bytes]) -> Any:
        """The request for *batch*, made ready to :meth:`send`: the CPU part of a write
        (encoding, compressing), which the async backend does for the next batch while
        this one's request waits for its answer (see *prepare_ahead*). Here the body's
        bytes; a subclass may return an object of its own, which only its :meth:`send`
        reads."""
        return self._compress(self.encode(batch))

    def send(
        self,
        batch: Sequence[bytes],
        prepared: Any,
        meanwhile: Callable[[], object] | None = None,
    ) -> int | None:
        """Deliver *batch*, made ready by :meth:`prepare` (*prepared*), in one request;
        return and raise as :meth:`write` does. *prepared* may be sent again, when the
        whole of *batch* is retried. *meanwhile* is called once the request is sent,
        before its answer is read (if the request gets that far; see :meth:`post`).

        Raises:
            DeliveryError: what was not delivered and why (see the module description).
        """
        if not batch:
            return None
        body: bytes = prepared
        response = self.post(body, len(batch), meanwhile=meanwhile)
        self.requests += 1
        self.bytes_sent += len(body)
        self.check(batch, response)
        return None

    def post(
        self,
        body: bytes,
        size: int,
        url: str | None = None,
        meanwhile: Callable[[], object] | None = None,
    ) -> Response:
        """POST *body* (for *size* records) to *url* (default: the writer's) and return
        the 2xx answer. *meanwhile* (which must not raise) is called once the whole body
        is sent, before the answer is read: the async backend prepares the next request
        there, on this thread, while the server works on this one. It is not called when
        the request fails before that.

        Raises:
            DeliveryError: the request failed, or the server answered with another status.
        """
        urllib3 = self._urllib3
        errors = urllib3.exceptions
        headers = self.headers
        payload: bytes | Iterator[bytes] = body
        if meanwhile is not None:
            # urllib3 sends an iterable body chunk by chunk and asks for the next after
            # sending each: after the only one, the request is on its way, unanswered.
            headers = {**headers, "Content-Length": str(len(body))}
            payload = _then(body, meanwhile)
        try:
            answer = self._connections().request(
                "POST", url or self.target(), body=payload, headers=headers
            )
        except errors.NameResolutionError as exc:
            raise DeliveryError.whole(size, "dns", retryable=True, detail=str(exc)) from exc
        except errors.SSLError as exc:
            if _cut_during_handshake(exc):  # a restarting server, not a refused certificate
                raise DeliveryError.whole(
                    size, "connection", retryable=True, detail=str(exc)
                ) from exc
            raise DeliveryError.whole(size, "tls", retryable=False, detail=str(exc)) from exc
        # before ConnectTimeoutError, its base class in urllib3 2
        except errors.NewConnectionError as exc:
            raise DeliveryError.whole(size, "connect", retryable=True, detail=str(exc)) from exc
        except errors.ConnectTimeoutError as exc:
            raise DeliveryError.whole(size, "timeout", retryable=True, detail=str(exc)) from exc
        except errors.ReadTimeoutError as exc:
            # The server may have taken it: a retry can deliver it twice (at least once).
            raise DeliveryError.whole(size, "timeout", retryable=True, detail=str(exc)) from exc
        except (errors.ProtocolError, errors.MaxRetryError) as exc:
            raise DeliveryError.whole(size, "connection", retryable=True, detail=str(exc)) from exc
        except (errors.HTTPError, OSError) as exc:
            raise DeliveryError.whole(size, "http_client", retryable=True, detail=str(exc)) from exc
        response = Response(answer.status, answer.headers, answer.data or b"")
        if 200 <= response.status < 300:
            return response
        reason = status_reason(response.status)
        if response.status in self.retryable_status:
            wait = parse_retry_after(response.headers.get("retry-after"))
            raise DeliveryError.whole(
                size, reason, retryable=True, retry_after=wait, detail=response.text()
            )
        raise DeliveryError.whole(size, reason, retryable=False, detail=response.text())

    def _connections(self) -> Any:
        # A forked child must not share the parent's sockets: it opens its own.
        pid = os.getpid()
        if self._pid != pid:
            with self._lock:
                if self._pid != pid:
                    self._pool = self._urllib3.PoolManager(num_pools=4, **self._pool_options)
                    self._pid = pid
        return self._pool

    def _compress(self, body: bytes) -> bytes:
        """*body* as the request sends it. zlib and zstandard let other threads run
        while they compress (the workers and the application are not held up)."""
        if self.compression == "gzip":
            # gzip framing (wbits 31) with no timestamp, as gzip.compress(mtime=0).
            compressor = zlib.compressobj(self.compression_level, zlib.DEFLATED, 31)
            return compressor.compress(body) + compressor.flush()
        if self.compression == "zstd":
            import zstandard

            # A compressor per request: one is not safe on two threads at once.
            return bytes(zstandard.ZstdCompressor(level=self.compression_level).compress(body))
        return body

    def flush(self) -> None:
        """Nothing is buffered: each batch is one request."""

    def close(self) -> None:
        """Close the kept connections."""
        pool, self._pool = self._pool, None
        self._pid = -1
        if pool is not None:
            pool.clear()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"
