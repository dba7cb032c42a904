"""What the web integrations share: request ids, the access record, redaction, client ips.

The ASGI middleware (Starlette, FastAPI), the Flask extension and the Django middleware
all take a :class:`RequestLogging` (the settings) and, for each request, a
:class:`RequestLog` made by :meth:`RequestLogging.start`. The adapters only translate
their framework's request and response into the calls below, so every framework logs
the same record with the same settings.

Per request:

- a request id: taken from the configured header only when ``trust_request_id`` is set
  and the value is a plain token (letters, digits and ``._:@/+=-``, at most 128
  characters), generated otherwise; echoed in the response and bound into the logging
  context as ``request_id`` for every record logged while the request runs;
- one access record (message ``"request"``, logger ``kakashi.access`` by default) with
  ``request_id``, ``method``, ``path``, ``route``, ``query``, ``status``, ``duration_ms``,
  ``response_size``, ``client_ip``, ``client_port``, ``user_agent``, ``http_version`` and
  ``scheme``, at a level chosen by the status (2xx and 3xx INFO, 4xx WARNING, 5xx ERROR,
  configurable per class or per code);
- a ``"slow request"`` warning when the request took at least ``slow_request_ms``;
- an exception that escapes the application logged once (``"request failed"``, with
  its traceback) and re-raised by the adapter.

Values from the network are capped at ``max_value_length`` characters (a cut value ends
with ``…[+N chars]``); control characters are escaped by every Kakashi formatter, so a
header cannot forge a second record. Values of the keys in ``redact`` (headers, query
parameters, the fields of ``enrichers``) are written as ``[REDACTED]``; keys are matched
exactly, ignoring case and treating ``-`` as ``_``, so ``author`` or ``monkey`` are never
masked by ``authorization`` or ``key``.
"""

from __future__ import annotations

import ipaddress
import re
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextvars import ContextVar, Token
from typing import Any, Final
from urllib.parse import unquote_plus

from kakashi import _errors
from kakashi._state import LOG_CONTEXT
from kakashi.context import ContextToken, bind_context, reset_context
from kakashi.core.records import to_level
from kakashi.typing import LoggerSource

__all__ = [
    "DEFAULT_REDACTED",
    "REDACTED",
    "RequestLog",
    "RequestLogging",
    "current_request",
    "drain",
]

#: The keys whose values are masked by default (in headers, query parameters and fields).
DEFAULT_REDACTED: frozenset[str] = frozenset(
    {
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "password",
        "passwd",
        "token",
        "access_token",
        "refresh_token",
        "secret",
        "client_secret",
        "api_key",
        "x_api_key",
    }
)
#: What a masked value is written as.
REDACTED: str = "[REDACTED]"

_TOKEN = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")
_DEFAULT_LEVELS: Final = {1: 20, 2: 20, 3: 20, 4: 30, 5: 40}
#: Most X-Forwarded-For entries looked at, from the right: more proxies than any real
#: chain has, few enough that a forged header of 100,000 entries costs nothing.
_MAX_FORWARDED_HOPS: Final = 32
#: Deepest nesting of requests searched (adapters inside adapters; 2 in practice).
_MAX_NESTING: Final = 16
#: Longer than any address a proxy writes (a bracketed IPv6 with zone and port, spaces).
_MAX_ADDRESS_LENGTH: Final = 100
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Enricher = Callable[["RequestLog"], Mapping[str, Any] | None]
#: The request being logged in this context: an adapter started inside another's
#: request (a Flask app mounted in FastAPI through a WSGI bridge, Django mounted in
#: Starlette) finds it here and lets the request through.
_CURRENT: ContextVar[RequestLog | None] = ContextVar("kakashi_web_request", default=None)


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _cap(value: str, limit: int) -> str:
    if len(value) <= limit:
        return value
    return f"{value[:limit]}…[+{len(value) - limit} chars]"


def _address(text: str) -> _Address | None:
    """Parse an address as proxies write it: bare, ``ip:port`` or ``[ipv6]:port``."""
    if len(text) > _MAX_ADDRESS_LENGTH:
        return None  # not an address; and not worth parsing
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class RequestLogging:
    """The settings of the web integrations (see the module description).

    Args:
        logger: the name of the logger the access records go to.
        pipeline: log through this pipeline instead of the default one.
        request_id_header: the request and response header holding the request id.
        trust_request_id: take the id from the request's header (when it is a plain
            token) instead of generating one. Set it only behind a proxy that sets or
            strips the header.
        echo_request_id: add the request id to the response.
        trusted_proxies: addresses or networks (``"10.0.0.0/8"``) of the proxies whose
            ``X-Forwarded-For`` is believed. From anyone else the header is ignored.
        levels: the access record's level by status class (``{4: "ERROR"}``) or by code
            (``{404: "INFO"}``); merged over 2xx/3xx INFO, 4xx WARNING, 5xx ERROR.
        exclude_paths: paths with no access record (health checks); an entry ending in
            ``*`` is a prefix. The request id is still set and echoed.
        slow_request_ms: log a ``"slow request"`` warning for requests that take at least
            this long; ``None`` for none.
        redact: the keys whose values are masked (see the module description).
        log_headers: add the request headers (redacted, capped) as ``request_headers``.
        log_request_body: add the first *body_limit* bytes of the request body.
        log_response_body: add the first *body_limit* bytes of the response body.
        body_limit: the cap on a logged body, in bytes.
        max_value_length: the cap on any value taken from the request, in characters.
        enrichers: callables given the :class:`RequestLog` at the end of the request,
            returning fields to add to the access record. One that raises is counted
            and marked (``kakashi_enricher_error``); the request goes on.

    Raises:
        ValueError, TypeError: a setting that cannot work, with the setting's name.
    """

    def __init__(
        self,
        *,
        logger: str = "kakashi.access",
        pipeline: LoggerSource | None = None,
        request_id_header: str = "X-Request-ID",
        trust_request_id: bool = False,
        echo_request_id: bool = True,
        trusted_proxies: Iterable[str] = (),
        levels: Mapping[int, int | str] | None = None,
        exclude_paths: Collection[str] = (),
        slow_request_ms: float | None = None,
        redact: Collection[str] = DEFAULT_REDACTED,
        log_headers: bool = False,
        log_request_body: bool = False,
        log_response_body: bool = False,
        body_limit: int = 4096,
        max_value_length: int = 2048,
        enrichers: Sequence[Enricher] = (),
    ) -> None:
        from kakashi.logger import get_logger

        if not isinstance(logger, str) or not logger:
            raise TypeError("logger must be a non-empty logger name")
        if not isinstance(request_id_header, str) or not _HEADER_NAME.fullmatch(request_id_header):
            raise ValueError(f"request_id_header is not a header name: {request_id_header!r}")
        if isinstance(trusted_proxies, str):
            raise TypeError("trusted_proxies must be a list of addresses, not one string")
        networks: list[_Network] = []
        for proxy in trusted_proxies:
            try:
                networks.append(ipaddress.ip_network(str(proxy).strip(), strict=False))
            except ValueError:
                raise ValueError(f"trusted_proxies: not an address or network: {proxy!r}") from None
        chosen = dict(_DEFAULT_LEVELS)
        for status, level in (levels or {}).items():
            if type(status) is not int or not (1 <= status <= 5 or 100 <= status <= 599):
                raise ValueError(f"levels: {status!r} is neither a status class 1-5 nor a code")
            chosen[status] = to_level(level, f"levels[{status}]")
        if isinstance(exclude_paths, str):
            raise TypeError("exclude_paths must be a list of paths, not one string")
        exact, prefixes = set(), []
        for path in exclude_paths:
            if not isinstance(path, str) or not path.startswith("/"):
                raise ValueError(f"exclude_paths: a path starts with '/': {path!r}")
            if path.endswith("*"):
                prefixes.append(path[:-1])
            else:
                exact.add(path)
        if slow_request_ms is not None and (
            isinstance(slow_request_ms, bool)
            or not isinstance(slow_request_ms, int | float)
            or not slow_request_ms >= 0
        ):
            raise ValueError(
                "slow_request_ms must be a number of milliseconds >= 0 or None, "
                f"got {slow_request_ms!r}"
            )
        if isinstance(redact, str):
            raise TypeError("redact must be a collection of keys, not one string")
        for name, value in (("body_limit", body_limit), ("max_value_length", max_value_length)):
            if type(value) is not int or value < 16:
                raise ValueError(f"{name} must be an int of at least 16, got {value!r}")
        for enricher in enrichers:
            if not callable(enricher):
                raise TypeError(f"enrichers: {enricher!r} is not callable")
        self.logger = get_logger(logger, pipeline)
        self.request_id_header = request_id_header
        self.trust_request_id = bool(trust_request_id)
        self.echo_request_id = bool(echo_request_id)
        self.trusted_proxies: tuple[_Network, ...] = tuple(networks)
        self.levels: Mapping[int, int] = chosen
        self.exclude_paths: frozenset[str] = frozenset(exact)
        self.exclude_prefixes: tuple[str, ...] = tuple(prefixes)
        self.slow_request_ms = None if slow_request_ms is None else float(slow_request_ms)
        self.redact: frozenset[str] = frozenset(_key(key) for key in redact)
        self.log_headers = bool(log_headers)
        self.log_request_body = bool(log_request_body)
        self.log_response_body = bool(log_response_body)
        self.body_limit = body_limit
        self.max_value_length = max_value_length
        self.enrichers: tuple[Enricher, ...] = tuple(enrichers)
        self._header_key = request_id_header.lower()

    def start(
        self,
        method: str,
        path: str,
        *,
        query: str = "",
        headers: Iterable[tuple[str, str]] = (),
        client: tuple[str, int] | None = None,
        http_version: str | None = None,
        scheme: str | None = None,
    ) -> RequestLog:
        """Begin logging one request: pick its request id and bind it into the context.

        *method* and *path* are the request line's, *query* the query string (without
        ``?``), *client* the peer's ``(host, port)``, *http_version* (``"1.1"``) and
        *scheme* (``"https"``) as the server gives them; *headers* are ``(name, value)``
        pairs as received (names in any case). The caller must call
        :meth:`RequestLog.finish` once, in the same context (it also
        unbinds the id). Never raises.
        """
        return RequestLog(self, method, path, query, headers, client, http_version, scheme)

    def enclosing(self, method: str, path: str) -> RequestLog | None:
        """The request this one runs inside, when another adapter already logs it: the
        request being logged in this context, not finished, with the same method and
        path. The adapter then lets the request through (one access record, one id)."""
        outer = _CURRENT.get()
        if outer is None or outer._finished:
            return None
        if outer.method != _cap(str(method), 32) or outer.path != _cap(
            str(path), self.max_value_length
        ):
            return None
        return outer

    def excluded(self, path: str) -> bool:
        """Return whether *path* gets no access record."""
        return path in self.exclude_paths or any(path.startswith(p) for p in self.exclude_prefixes)

    def level_for(self, status: int) -> int:
        """Return the access record's level for HTTP *status*."""
        level = self.levels.get(status)
        if level is None:
            level = self.levels.get(status // 100, 40)
        return level

    def redacted(self, key: str, value: str) -> str:
        """Return *value* masked when *key* is one of ``redact``, else capped."""
        if _key(key) in self.redact:
            return REDACTED
        return _cap(value, self.max_value_length)

    def redact_query(self, query: str) -> str:
        """Return the query string *query* with the values of redacted parameters masked."""
        if not query:
            return ""
        limit = self.max_value_length
        # Only the part that can be kept is looked at: a 1 MB query costs what 2 KB does.
        # A parameter cut short loses its value (never shown) or keeps its name (masked).
        head = query[:limit]
        parts = []
        for part in head.split("&"):
            name, eq, _value = part.partition("=")
            if eq and _key(unquote_plus(name)) in self.redact:
                part = f"{name}={REDACTED}"
            parts.append(part)
        text = "&".join(parts)
        dropped = len(query) - len(head) + max(0, len(text) - limit)
        return f"{text[:limit]}…[+{dropped} chars]" if dropped else text

    def client_ip(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """Return the client's address: the *peer*'s, or from *forwarded_for* (the
        ``X-Forwarded-For`` header) when the peer is a trusted proxy (the nearest address
        that is not one of them)."""
        if not forwarded_for or peer is None or not self._trusted(_address(peer)):
            return peer
        client = peer
        # rsplit: only the rightmost hops are split off; an entry past the cap is the
        # rest of the header, not an address, and ends the walk like any broken entry.
        for hop in reversed(forwarded_for.rsplit(",", _MAX_FORWARDED_HOPS)):
            address = _address(hop)
            if address is None:
                break  # a forged or broken entry: believe nothing further left
            client = str(address)
            if not self._trusted(address):
                break
        return client

    def _trusted(self, address: _Address | None) -> bool:
        return address is not None and any(address in net for net in self.trusted_proxies)

    def __repr__(self) -> str:
        return f"<RequestLogging logger={self.logger.name!r} header={self.request_id_header!r}>"


class RequestLog:
    """One request being logged; made by :meth:`RequestLogging.start`.

    It is given the *settings* that made it and the request's *method*, *path*,
    *query*, *headers*, *client* ``(host, port)``, *http_version* and *scheme*.

    Attributes:
        request_id: the id of this request (see the module description).
        method, path, query: from the request (capped, the query redacted).
        route: the route template, once the adapter knows it (:meth:`set_route`).
        status: the response status, once known.
        response_size: bytes of response body sent so far.
        disconnected: whether the response was cut short (see :meth:`finish`).
        headers: the request headers, names lowercased (values as received).
    """

    def __init__(
        self,
        settings: RequestLogging,
        method: str,
        path: str,
        query: str,
        headers: Iterable[tuple[str, str]],
        client: tuple[str, int] | None,
        http_version: str | None,
        scheme: str | None,
    ) -> None:
        self.settings = settings
        self.started = time.perf_counter_ns()
        cap = settings.max_value_length
        self.method = _cap(str(method), 32)
        self.path = _cap(str(path), cap)
        self.query = settings.redact_query(str(query or ""))
        self.headers: dict[str, str] = {}
        try:
            for name, value in headers:
                key = str(name).lower()
                old = self.headers.get(key)
                self.headers[key] = str(value) if old is None else f"{old}, {value}"
        except Exception as exc:
            _errors.report("web: request headers", exc)
        self.route: str | None = None
        self.status: int | None = None
        self.response_size = 0
        self.disconnected = False
        self.http_version = http_version
        self.scheme = scheme
        self.client = client
        self.upstream_request_id: str | None = None
        self.request_id = self._pick_id()
        self.request_body = bytearray()
        self.response_body = bytearray()
        self._exception_logged = False
        self._finished = False
        self._token: ContextToken | None = bind_context(request_id=self.request_id)
        #: The request being logged in this context when this one started (an adapter
        #: outside this one), if any.
        self.parent: RequestLog | None = _CURRENT.get()
        self._current: Token[RequestLog | None] | None = _CURRENT.set(self)

    def _pick_id(self) -> str:
        given = self.headers.get(self.settings._header_key)
        if given is not None:
            given = given.strip()
            if self.settings.trust_request_id and _TOKEN.fullmatch(given):
                return given
            self.upstream_request_id = _cap(given, 128)
        return uuid.uuid4().hex

    def response_headers(self) -> list[tuple[str, str]]:
        """The headers to add to the response (the request id, unless not echoed)."""
        if not self.settings.echo_request_id:
            return []
        return [(self.settings.request_id_header, self.request_id)]

    def set_route(self, route: str | None) -> None:
        """Record the route template the framework matched (``/items/{id}``)."""
        if route:
            self.route = _cap(str(route), self.settings.max_value_length)

    def set_status(self, status: int) -> None:
        """Record the response's status code."""
        self.status = int(status)

    def add_request_body(self, chunk: bytes) -> None:
        """Keep the start of the request body, one *chunk* at a time, when
        ``log_request_body`` is set."""
        if self.settings.log_request_body:
            room = self.settings.body_limit + 1 - len(self.request_body)
            if room > 0:
                self.request_body += chunk[:room]

    def add_response_body(self, chunk: bytes) -> None:
        """Count *chunk* into ``response_size``; keep it when ``log_response_body`` is set."""
        self.response_size += len(chunk)
        if self.settings.log_response_body:
            room = self.settings.body_limit + 1 - len(self.response_body)
            if room > 0:
                self.response_body += chunk[:room]

    @property
    def duration_ms(self) -> float:
        """Milliseconds since the request started."""
        return round((time.perf_counter_ns() - self.started) / 1e6, 3)

    def log_exception(self, exc: BaseException) -> None:
        """Log *exc* (escaping the application) once, with its traceback. Never raises."""
        # The mark is the request that logged it: an outer or inner request of this one
        # (two adapters seeing the same exception) does not log it again; a later or a
        # concurrent request raising the same instance (a module-level constant) does.
        if self._exception_logged or self._nested_with(getattr(exc, "_kakashi_logged", None)):
            return
        self._exception_logged = True
        try:
            exc._kakashi_logged = self  # type: ignore[attr-defined]
        except Exception:
            pass  # an exception without __dict__: this request still logs it once
        try:
            self.settings.logger.error(
                "request failed", exc_info=exc, **self._fields(include_status=False)
            )
        except Exception as error:
            _errors.report("web: exception record", error)

    def _nested_with(self, other: object) -> bool:
        """Whether *other* is this request, or one of them runs inside the other."""
        if not isinstance(other, RequestLog):
            return False
        for inner, outer in ((self, other), (other, self)):
            node: RequestLog | None = inner
            for _ in range(_MAX_NESTING):
                if node is None:
                    break
                if node is outer:
                    return True
                node = node.parent
        return False

    def finish(
        self,
        status: int | None = None,
        *,
        disconnected: bool = False,
        unbind: bool = True,
        **fields: Any,
    ) -> None:
        """Write the access record (and the slow warning) and unbind the request id.

        *status* defaults to the one set, or 500 when none was (the application failed
        before it answered). *disconnected* says the response was cut short (the client
        went away mid-stream); the record then carries ``"disconnected": true``. *fields*
        are added to the access record after the shared ones (a websocket's
        ``close_code``), masked like the enrichers' fields when their key is one of
        ``redact``. With *unbind* false the request id stays bound, so that work going on
        after the response (background tasks) still carries it, until :meth:`unbind`.
        Safe to call more than once: only the first call logs. Never raises.
        """
        if self._finished:
            return
        self._finished = True
        if disconnected:
            self.disconnected = True
        try:
            if status is not None:
                self.status = int(status)
            if self.status is None:
                self.status = 500
            if self.method == "HEAD":
                # What an application writes for HEAD never reaches the client: the
                # server drops it (RFC 9110 9.3.2); response_size is what was sent.
                self.response_size = 0
                self.response_body.clear()
            if not self.settings.excluded(self.path):
                self._write(fields)
        except Exception as exc:
            _errors.report("web: access record", exc)
        finally:
            if unbind:
                self.unbind()

    def unbind(self) -> None:
        """Unbind the request id bound by :meth:`RequestLogging.start` (:meth:`finish`
        does it unless told not to). Safe to call more than once; never raises."""
        token, self._token = self._token, None
        if token is not None:
            try:
                reset_context(token)
            except ValueError:
                self._unbind_elsewhere(token)
            except Exception as exc:
                _errors.report("web: unbind", exc)
        current, self._current = self._current, None
        if current is not None:
            try:
                _CURRENT.reset(current)
            except ValueError:
                if _CURRENT.get() is self:  # as for the id (see _unbind_elsewhere)
                    before = current.old_value
                    _CURRENT.set(None if before is Token.MISSING else before)

    def _unbind_elsewhere(self, token: ContextToken) -> None:
        """Unbind in a context other than the one start() bound in. asgiref's
        sync_to_async copies a thread's context back into the caller's, so a copy
        holding this request's id can outlive the request there (Django's sync
        middleware under ASGI, finishing a stream): restore what start() found."""
        try:
            current = LOG_CONTEXT.get()
            if current and current.get("request_id") == self.request_id:
                before = token.old_value
                LOG_CONTEXT.set(None if before is Token.MISSING else before)
        except Exception as exc:
            _errors.report("web: unbind", exc)

    def _fields(self, include_status: bool = True) -> dict[str, Any]:
        settings = self.settings
        fields: dict[str, Any] = {"request_id": self.request_id, "method": self.method}
        fields["path"] = self.path
        if self.route is not None:
            fields["route"] = self.route
        if self.query:
            fields["query"] = self.query
        if include_status:
            fields["status"] = self.status
            fields["duration_ms"] = self.duration_ms
            fields["response_size"] = self.response_size
            if self.disconnected:
                fields["disconnected"] = True
        if self.client is not None:
            peer, port = self.client
            ip = settings.client_ip(peer, self.headers.get("x-forwarded-for"))
            if ip is not None:
                fields["client_ip"] = _cap(str(ip), 64)
            if ip == peer and type(port) is int:
                fields["client_port"] = port
        agent = self.headers.get("user-agent")
        if agent is not None:
            fields["user_agent"] = _cap(agent, settings.max_value_length)
        if self.http_version:
            fields["http_version"] = _cap(str(self.http_version), 16)
        if self.scheme:
            fields["scheme"] = _cap(str(self.scheme), 16)
        if self.upstream_request_id is not None:
            fields["upstream_request_id"] = self.upstream_request_id
        return fields

    def _write(self, adapter_fields: Mapping[str, Any]) -> None:
        settings = self.settings
        status = self.status if self.status is not None else 500
        fields = self._fields()
        for key, value in adapter_fields.items():
            fields[key] = REDACTED if _key(key) in settings.redact else value
        if settings.log_headers:
            fields["request_headers"] = {
                name: settings.redacted(name, value) for name, value in self.headers.items()
            }
        for name, body in (
            ("request_body", self.request_body),
            ("response_body", self.response_body),
        ):
            if body:
                text = bytes(body[: settings.body_limit]).decode("utf-8", "replace")
                fields[name] = text
                if len(body) > settings.body_limit:
                    fields[f"{name}_truncated"] = True
        for enricher in settings.enrichers:
            try:
                extra = enricher(self)
                if extra:
                    for key, value in extra.items():
                        key = str(key)
                        fields[key] = REDACTED if _key(key) in settings.redact else value
            except Exception as exc:
                _errors.report("web: enricher", exc)
                fields["kakashi_enricher_error"] = f"{type(exc).__name__}: {_cap(str(exc), 200)}"
        # The access record carries no exception: the request's own is in "request
        # failed", and one being handled where finish() runs (a 500 page sent from an
        # except block, a middleware above) is not this record's.
        fields["exc_info"] = False
        logger = settings.logger
        logger.log(settings.level_for(status), "request", **fields)
        slow = settings.slow_request_ms
        if slow is not None and fields["duration_ms"] >= slow:
            logger.warning("slow request", threshold_ms=slow, **fields)

    def __repr__(self) -> str:
        return f"<RequestLog {self.method} {self.path!r} id={self.request_id}>"


def current_request() -> RequestLog | None:
    """The :class:`RequestLog` of the request being logged in this context, if any (for
    an enricher of your own, or to log into the request's records from deep code)."""
    return _CURRENT.get()


def drain(timeout: float = 5.0) -> bool:
    """Write out everything logged so far, within *timeout* seconds (server shutdown).

    Web servers stop on SIGTERM by finishing their requests and then dying by the
    signal, so the interpreter's exit hooks never run: the integrations call this at
    the server's shutdown (ASGI lifespan, gunicorn's worker hooks). Returns whether
    everything was written in time. Never raises.
    """
    from kakashi.logger import flush

    try:
        return bool(flush(timeout).complete)
    except Exception as exc:
        _errors.report("web: drain", exc)
        return False
