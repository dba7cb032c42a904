"""ASGI middleware for Starlette, FastAPI and any other ASGI application.

:class:`KakashiMiddleware` is a pure ASGI middleware (not Starlette's
``BaseHTTPMiddleware``, which runs the application in another task: context bound
there does not come back, and it buffers streaming responses)::

    app = FastAPI()
    app.add_middleware(KakashiMiddleware, trusted_proxies=["10.0.0.0/8"])

Per HTTP request it logs what :mod:`kakashi.integrations.web` describes: a request id
bound for every record logged while the request runs (sync endpoints run in the
threadpool included) and echoed in the response, one access record when the last body
chunk has been sent (with the route template Starlette matched, ``/items/{item_id}``),
and an exception escaping the application logged once, then re-raised. A response cut
short by the client gets ``disconnected: true``. A websocket session gets one access
record too, with method ``WEBSOCKET``, status 101 once accepted (403 when closed before
that, a denial response's own status) and the ``close_code``.

At the lifespan's shutdown, once the application's own shutdown is done, the middleware
drains the logging backend (:func:`kakashi.integrations.web.drain`): uvicorn and
gunicorn's workers die by the SIGTERM they re-raise, and exit hooks never run.

The module imports no framework: it speaks ASGI's dicts.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from kakashi import _errors
from kakashi.integrations.web import RequestLog, RequestLogging, drain

__all__ = ["KakashiMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: nginx's status for a request whose client went away before any response.
CLIENT_CLOSED: Final = 499
#: The route templates of mounted applications, worked out once per route object.
_TEMPLATE_CACHE_SIZE: Final = 4096
#: Deepest nesting of mounts searched for a route's template.
_MOUNT_DEPTH: Final = 8
#: The scope key naming the request's log: a second KakashiMiddleware further in (added
#: twice, or around a mounted sub-application; Mount copies the scope with its keys)
#: passes the connection through instead of logging it again under another id.
_SCOPE_KEY: Final = "kakashi.request_log"


def _is_disconnect(exc: BaseException) -> bool:
    """Whether *exc* is how the application reports that its client went away."""
    if isinstance(exc, OSError):
        return True
    # Starlette's, without importing Starlette: it is loaded if it could be raised.
    requests = sys.modules.get("starlette.requests")
    kind = getattr(requests, "ClientDisconnect", None)
    return kind is not None and isinstance(exc, kind)


def _find_route(routes: Any, target: object, prefix: str, depth: int) -> str | None:
    """The template of *target* inside *routes*, mount paths prefixed (depth first)."""
    for candidate in routes:
        if candidate is target:
            return prefix + str(getattr(target, "path", ""))
        children = getattr(candidate, "routes", None)
        if children and depth < _MOUNT_DEPTH:
            found = _find_route(
                children, target, prefix + str(getattr(candidate, "path", "")), depth + 1
            )
            if found is not None:
                return found
    return None


class KakashiMiddleware:
    """Log every HTTP request and websocket session of an ASGI application.

    Args:
        app: the ASGI application.
        settings: a :class:`~kakashi.integrations.web.RequestLogging`; or give its
            keyword settings here instead (``trusted_proxies=...``), not both.
        drain_on_shutdown: drain the logging backend when the lifespan shuts down.
        drain_timeout: the longest the drain waits, in seconds (0 to 3600; it blocks
            the event loop, which has nothing left to do by then). Keep uvicorn's
            ``--timeout-graceful-shutdown`` plus this within the time your process
            manager allows between SIGTERM and SIGKILL.
        **options: :class:`~kakashi.integrations.web.RequestLogging`'s settings.

    Raises:
        ValueError, TypeError: a setting that cannot work, with the setting's name.
    """

    def __init__(
        self,
        app: ASGIApp,
        settings: RequestLogging | None = None,
        *,
        drain_on_shutdown: bool = True,
        drain_timeout: float = 5.0,
        **options: Any,
    ) -> None:
        if not callable(app):
            raise TypeError(f"app must be an ASGI application, got {app!r}")
        if settings is None:
            settings = RequestLogging(**options)
        elif not isinstance(settings, RequestLogging):
            raise TypeError(f"settings must be a RequestLogging, got {settings!r}")
        elif options:
            raise TypeError(
                f"give either settings= or keyword settings, not both (got {sorted(options)})"
            )
        if (
            isinstance(drain_timeout, bool)
            or not isinstance(drain_timeout, int | float)
            or math.isnan(drain_timeout)
            or not 0 <= drain_timeout <= 3600
        ):
            raise ValueError(
                f"drain_timeout must be a number of seconds from 0 to 3600, got {drain_timeout!r}"
            )
        self.app = app
        self.settings = settings
        self.drain_on_shutdown = bool(drain_on_shutdown)
        self.drain_timeout = float(drain_timeout)
        self._id_header = settings.request_id_header.lower().encode("latin-1")
        self._templates: dict[int, tuple[object, str]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection (the ASGI 3 interface)."""
        kind = scope.get("type")
        if _SCOPE_KEY in scope:
            await self.app(scope, receive, send)  # an outer KakashiMiddleware logs it
        elif kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan" and self.drain_on_shutdown:
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    # -- HTTP ---------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = self._start(scope, scope.get("method", "GET"))
        if request is None:
            await self.app(scope, receive, send)
            return
        root_path = scope.get("root_path", "")
        log_body = self.settings.log_request_body
        started = complete = disconnected = False
        trailers = False

        async def receive_logged() -> Message:
            nonlocal disconnected
            message = await receive()
            kind = message.get("type")
            if kind == "http.request":
                if log_body:
                    request.add_request_body(message.get("body", b""))
            elif kind == "http.disconnect" and not complete:
                disconnected = True
            return message

        async def send_logged(message: Message) -> None:
            nonlocal started, complete, disconnected, trailers
            kind = message.get("type")
            if kind == "http.response.start":
                try:
                    started = True
                    trailers = bool(message.get("trailers", False))
                    request.set_status(message["status"])
                    message = self._with_request_id(message, request)
                except Exception as exc:
                    _errors.report("asgi: response start", exc)
            try:
                await send(message)
            except Exception as exc:
                if _is_disconnect(exc):
                    disconnected = True
                raise
            if complete:
                return
            try:
                if kind == "http.response.body":
                    request.add_response_body(message.get("body", b""))
                    done = not message.get("more_body", False) and not trailers
                elif kind == "http.response.trailers":
                    done = not message.get("more_trailers", False)
                elif kind == "http.response.pathsend":
                    request.response_size += os.stat(message["path"]).st_size
                    done = True
                else:
                    done = False
                if done:
                    complete = True
                    request.set_route(self._route(scope, root_path))
                    # A response sent from an except block (Starlette's 500 page): the
                    # record waits until the exception is logged, so that it does not
                    # carry the exception too (ERROR records take the one being handled).
                    if sys.exc_info()[1] is None:
                        request.finish(unbind=False)
            except Exception as exc:
                _errors.report("asgi: response body", exc)

        error: BaseException | None = None
        try:
            await self.app(scope, receive_logged, send_logged)
        except BaseException as exc:
            error = exc
            if isinstance(exc, Exception) and not (disconnected and _is_disconnect(exc)):
                self._set_route(request, scope, root_path)
                request.log_exception(exc)
        # Out of the except block: the access record must not carry the exception again.
        if complete:
            request.finish(unbind=False)  # when it waited (see above); else a no-op
        else:
            self._finish_cut_short(request, scope, root_path, started, disconnected, error)
        request.unbind()
        if error is not None:
            try:
                raise error
            finally:
                del error  # no cycle through this frame's traceback

    def _finish_cut_short(
        self,
        request: RequestLog,
        scope: Scope,
        root_path: str,
        started: bool,
        disconnected: bool,
        exc: BaseException | None,
    ) -> None:
        """Finish a response that never completed (finish() logs only once)."""
        fields: dict[str, Any] = {}
        status = None  # as sent; 500 when nothing was
        if disconnected and not started:
            status = CLIENT_CLOSED
        elif not disconnected and exc is not None and not isinstance(exc, Exception):
            fields["cancelled"] = True  # the server gave up on it (shutdown timeout)
        self._set_route(request, scope, root_path)
        request.finish(status, disconnected=disconnected, unbind=False, **fields)

    # -- websockets ---------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = self._start(scope, "WEBSOCKET")
        if request is None:
            await self.app(scope, receive, send)
            return
        root_path = scope.get("root_path", "")
        accepted = disconnected = False
        close_code: int | None = None

        async def receive_logged() -> Message:
            nonlocal close_code
            message = await receive()
            if message.get("type") == "websocket.disconnect" and close_code is None:
                close_code = message.get("code", 1005)  # 1005: no code given
            return message

        async def send_logged(message: Message) -> None:
            nonlocal accepted, close_code, disconnected
            kind = message.get("type")
            try:
                if kind == "websocket.accept":
                    accepted = True
                    request.set_status(101)
                    request.set_route(self._route(scope, root_path))
                    message = self._with_request_id(message, request)
                elif kind == "websocket.http.response.start":  # a denial response
                    request.set_status(message["status"])
                    message = self._with_request_id(message, request)
                elif kind == "websocket.close" and close_code is None:
                    close_code = message.get("code", 1000)
                    if not accepted:
                        request.set_status(403)  # what the server answers the handshake
            except Exception as exc:
                _errors.report("asgi: websocket", exc)
            try:
                await send(message)
            except Exception as exc:
                if _is_disconnect(exc):
                    disconnected = True
                raise
            try:
                if kind == "websocket.send":
                    data = message.get("bytes")
                    if data is None:
                        data = (message.get("text") or "").encode()
                    request.response_size += len(data)
                elif kind == "websocket.http.response.body":
                    request.add_response_body(message.get("body", b""))
            except Exception as exc:
                _errors.report("asgi: websocket", exc)

        error: BaseException | None = None
        try:
            await self.app(scope, receive_logged, send_logged)
        except BaseException as exc:
            error = exc
            if isinstance(exc, Exception) and not (disconnected and _is_disconnect(exc)):
                self._set_route(request, scope, root_path)
                request.log_exception(exc)
        # Out of the except block: the access record must not carry the exception again.
        fields: dict[str, Any] = {}
        if close_code is not None:
            fields["close_code"] = close_code
        status = None  # as set; 500 when the application failed before answering
        if request.status is None and error is None:
            status = 403  # the application ended without accepting
        self._set_route(request, scope, root_path)
        request.finish(status, disconnected=disconnected, **fields)
        if error is not None:
            try:
                raise error
            finally:
                del error  # no cycle through this frame's traceback

    # -- lifespan -----------------------------------------------------------------------

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_drained(message: Message) -> None:
            if message.get("type") in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                self.drain()
            await send(message)

        await self.app(scope, receive, send_drained)

    def drain(self) -> bool:
        """Write out everything logged so far, within ``drain_timeout`` seconds (called
        at the lifespan's shutdown). Returns whether all of it was written. Never raises."""
        done = drain(self.drain_timeout)
        if not done:
            _errors.report("asgi: drain at shutdown", detail=f"{self.drain_timeout} s ran out")
        return done

    # -- helpers ------------------------------------------------------------------------

    def _start(self, scope: Scope, method: Any) -> RequestLog | None:
        try:
            query = scope.get("query_string", b"")
            client = scope.get("client")
            request = self.settings.start(
                str(method),
                str(scope.get("path", "")),
                query=query.decode("latin-1") if isinstance(query, bytes) else str(query),
                headers=(
                    (name.decode("latin-1"), value.decode("latin-1"))
                    for name, value in scope.get("headers", ())
                ),
                client=(str(client[0]), client[1]) if client else None,
                http_version=scope.get("http_version"),
                scheme=scope.get("scheme"),
            )
            scope[_SCOPE_KEY] = request
            return request
        except Exception as exc:
            _errors.report("asgi: request start", exc)
            return None

    def _set_route(self, request: RequestLog, scope: Scope, root_path: str) -> None:
        """Give *request* the matched route's template, if any. Never raises."""
        try:
            request.set_route(self._route(scope, root_path))
        except Exception as exc:
            _errors.report("asgi: route", exc)

    def _with_request_id(self, message: Message, request: RequestLog) -> Message:
        """A copy of *message* whose headers carry the request id (replacing one the
        application set, so the response and the logs agree)."""
        added = request.response_headers()
        if not added:
            return message
        own = self._id_header
        headers = [
            (name, value)
            for name, value in message.get("headers", ())
            if bytes(name).lower() != own
        ]
        headers.extend(
            (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in added
        )
        return {**message, "headers": headers}

    def _route(self, scope: Scope, root_path: str) -> str | None:
        """The template of the route the router matched (Starlette's routers put it in
        the scope they were given, which is this middleware's scope dict)."""
        route = scope.get("route")
        path = getattr(route, "path", None)
        if not isinstance(path, str):
            return None
        if scope.get("root_path", "") == root_path:
            return path  # not inside a mount
        cached = self._templates.get(id(route))
        if cached is not None and cached[0] is route:
            return cached[1]
        router = scope.get("router")
        template = _find_route(getattr(router, "routes", ()), route, "", 0)
        if template is None:  # not found: the mount's concrete path, then the template
            template = str(scope.get("root_path", ""))[len(root_path) :] + path
        if len(self._templates) < _TEMPLATE_CACHE_SIZE:
            self._templates[id(route)] = (route, template)  # the route kept: ids stay unique
        return template

    def __repr__(self) -> str:
        return f"<KakashiMiddleware app={self.app!r} settings={self.settings!r}>"
