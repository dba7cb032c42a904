"""The Flask extension: one access record per request, the request id in every record.

Usage::

    from flask import Flask
    from kakashi.integrations.flask import KakashiFlask

    app = Flask(__name__)
    KakashiFlask(app, slow_request_ms=500)   # or KakashiFlask().init_app(app) in a factory

The settings are those of :class:`~kakashi.integrations.web.RequestLogging` (given as
one object or as keywords). Per request the extension

- starts the request's log before any other ``before_request`` function runs (its id is
  then bound into the logging context, so every record logged while the request runs
  carries ``request_id``), and takes the route template from ``request.url_rule.rule``
  (Flask's own syntax, ``/items/<int:item_id>``);
- in ``after_request`` (run last, so it sees the final response) takes the status and
  adds the request id header;
- writes the access record in ``teardown_request`` for a response held in memory, and
  when the WSGI server closes the body for a streamed one (``response.is_streamed`` or
  ``direct_passthrough``): the size is then counted chunk by chunk as the server takes
  them, and a client that went away mid-stream gives ``"disconnected": true``;
- logs an exception that Flask does not handle (one that reaches Flask's
  ``handle_exception``: no ``errorhandler`` for its class) once, as ``"request failed"``
  with its traceback; the access record then has the status of the response Flask sent
  (500, or what an ``errorhandler(500)`` returned; 500 with ``PROPAGATE_EXCEPTIONS``,
  written in the teardown while the exception propagates). An exception an ``errorhandler``
  turns into a response (a 409, say) is the application's answer, not a failure: only
  the access record, with that status. Flask logs an unhandled exception itself too
  (``"Exception on /path [GET]"`` on ``app.logger``); that duplicate is dropped unless
  ``flask_exception_log=True``.

Inside a request another Kakashi adapter already logs (the Flask app mounted in FastAPI
with the ASGI middleware, through a WSGI bridge), the extension lets the request through
and only logs an exception it sees, into that request's log: one record, one id.

Flask runs a request's hooks on the thread (or greenlet) that serves it, and a WSGI
server iterates and closes the body on that same thread, so the id is unbound in the
context it was bound in; records logged from a streaming generator carry it too.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Iterator
from typing import Any, Final

from flask import Flask, Response, got_request_exception, request
from werkzeug.wsgi import ClosingIterator, FileWrapper

from kakashi import _errors
from kakashi.integrations.web import RequestLog, RequestLogging

__all__ = ["KakashiFlask"]

# Where a request's log lives: the WSGI environ is the one object that the hooks, the
# exception signal and the body the server closes later all reach.
_LOG_KEY: Final = "kakashi.request_log"
_RESPONSE_KEY: Final = "kakashi.response"
_DEFERRED_KEY: Final = "kakashi.deferred"
# Set when another adapter outside this app (the ASGI middleware around a WSGI bridge)
# logs the request: the hooks then only log an exception, into that request's log.
_OUTER_KEY: Final = "kakashi.outer"
# A request body up to this size is read into memory to log its start (an application
# reading request.data does the same); a bigger or chunked one is left alone, so an
# upload still streams to the form parser's temporary files.
_READ_BODY_LIMIT: Final = 1 << 20


def _settings(settings: RequestLogging | None, options: dict[str, Any]) -> RequestLogging:
    if settings is None:
        return RequestLogging(**options)
    if not isinstance(settings, RequestLogging):
        raise TypeError(f"settings must be a RequestLogging, got {type(settings).__name__}")
    if options:
        raise TypeError(
            "give either settings=RequestLogging(...) or keyword settings, not both "
            f"(got {sorted(options)})"
        )
    return settings


def _bodiless(environ: dict[str, Any], status: int) -> bool:
    """Whether the response carries no body (what Werkzeug's get_app_iter decides)."""
    return environ.get("REQUEST_METHOD") == "HEAD" or 100 <= status < 200 or status in (204, 304)


class _SkipLoggedExceptions(logging.Filter):
    """Drops Flask's own ``"Exception on ..."`` record of an exception already logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        info = record.exc_info
        return not (info and getattr(info[1], "_kakashi_logged", False))


class _StreamedBody:
    """A streamed response body that counts what the server takes and writes the
    access record when the server closes it (at the end, or when the client left)."""

    __slots__ = ("_body", "_ended", "_failed", "_log", "started")

    def __init__(self, body: Iterable[Any], log: RequestLog) -> None:
        self._body = body
        self._log = log
        self.started = False
        self._ended = False
        self._failed = False

    def __iter__(self) -> Iterator[Any]:
        self.started = True
        log = self._log
        try:
            for chunk in self._body:
                yield chunk
                # counted once the server asks for the next one: this one was sent
                log.add_response_body(chunk.encode() if isinstance(chunk, str) else chunk)
        except GeneratorExit:
            raise
        except Exception as exc:
            self._failed = True
            log.log_exception(exc)
            raise
        self._ended = True

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            log = self._log
            if self.started and not self._ended and not self._failed:
                log.disconnected = True
            log.finish()


class KakashiFlask:
    """Access records and request ids for a Flask application (see the module description).

    Args:
        app: the application; or call :meth:`init_app` later (application factories).
        settings: a :class:`~kakashi.integrations.web.RequestLogging`; or give its
            keyword settings instead (``KakashiFlask(app, exclude_paths=["/health"])``).
        options: those keyword settings, when *settings* is not given.
        flask_exception_log: keep Flask's own ``"Exception on ..."`` record of an
            unhandled exception (on ``app.logger``) beside the extension's
            ``"request failed"``; by default it is dropped as a duplicate.

    Raises:
        TypeError, ValueError: a setting that cannot work (see ``RequestLogging``), or
            both *settings* and keyword settings.
    """

    def __init__(
        self,
        app: Flask | None = None,
        settings: RequestLogging | None = None,
        *,
        flask_exception_log: bool = False,
        **options: Any,
    ) -> None:
        self.settings = _settings(settings, options)
        self.flask_exception_log = bool(flask_exception_log)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Register the extension's hooks on *app* (once per application).

        Raises:
            ValueError: *app* already has a Kakashi extension (two would log every
                request twice).
        """
        if "kakashi" in app.extensions:
            raise ValueError(f"the Flask app {app.name!r} already has a Kakashi extension")
        app.extensions["kakashi"] = self
        # First among the before_request functions, so that one answering early (an
        # authentication check returning 401) still gets its request logged; first in
        # the lists Flask runs in reverse, so after_request sees the final response and
        # the teardown functions of other extensions still log with the request id.
        app.before_request_funcs.setdefault(None, []).insert(0, self._before_request)
        app.after_request_funcs.setdefault(None, []).insert(0, self._after_request)
        app.teardown_request_funcs.setdefault(None, []).insert(0, self._teardown_request)
        got_request_exception.connect(self._exception, sender=app)
        # app.logger is the process-wide logging.getLogger(app.name); the filter drops
        # only records of exceptions a Kakashi extension has already logged.
        if not self.flask_exception_log and not any(
            isinstance(f, _SkipLoggedExceptions) for f in app.logger.filters
        ):
            app.logger.addFilter(_SkipLoggedExceptions())

    # Each hook: never raises into the request (an error is counted and reported).

    def _log(self) -> RequestLog:
        environ = request.environ
        log: RequestLog | None = environ.get(_LOG_KEY)
        if log is None:
            log = self.settings.enclosing(request.method, request.root_path + request.path)
            if log is not None:
                environ[_OUTER_KEY] = True
            else:
                log = self._start(environ)
            environ[_LOG_KEY] = log
        return log

    def _start(self, environ: dict[str, Any]) -> RequestLog:
        peer = environ.get("REMOTE_ADDR")
        port = environ.get("REMOTE_PORT")
        if isinstance(port, str) and port.isdigit():
            port = int(port)
        # web.py writes client_port only when it is an int: a server without one passes None
        client: Any = (peer, port if isinstance(port, int) else None) if peer else None
        protocol = str(environ.get("SERVER_PROTOCOL") or "")
        log = self.settings.start(
            request.method,
            request.root_path + request.path,
            query=environ.get("QUERY_STRING", ""),
            headers=request.headers.items(),
            client=client,
            http_version=protocol[5:] if protocol.startswith("HTTP/") else None,
            scheme=environ.get("wsgi.url_scheme"),
        )
        rule = request.url_rule
        if rule is not None:
            log.set_route(rule.rule)
        return log

    def _before_request(self) -> None:
        try:
            log = self._log()
            if request.environ.get(_OUTER_KEY):
                return
            length = request.content_length
            limit = request.max_content_length  # over it, reading would raise 413 here
            if (
                self.settings.log_request_body
                and length
                and length <= _READ_BODY_LIMIT
                and (limit is None or length <= limit)
            ):
                data = request.get_data(cache=True)
                log.add_request_body(data)
                # get_data drained request.stream; the view may read it rather than
                # request.data (a streaming parser): give it the same bytes again.
                request.stream = io.BytesIO(data)
        except Exception as exc:
            _errors.report("flask: request start", exc)

    def _after_request(self, response: Response) -> Response:
        try:
            environ = request.environ
            log = self._log()
            if environ.get(_OUTER_KEY):
                return response
            log.set_status(response.status_code)
            for name, value in log.response_headers():
                response.headers[name] = value
            environ[_RESPONSE_KEY] = response
            environ[_DEFERRED_KEY] = None
            length = response.content_length
            if (
                response.is_streamed
                and isinstance(response.response, ClosingIterator)
                and length is not None
                and length <= _READ_BODY_LIMIT
            ):
                # Flask made this response by running a WSGI callable (an HTTPException's
                # error page: 404, 405...): a small body already rendered, not a stream.
                response.make_sequence()
            if response.is_streamed or response.direct_passthrough:
                self._defer(environ, response, log)
        except Exception as exc:
            _errors.report("flask: response", exc)
        return response

    def _defer(self, environ: dict[str, Any], response: Response, log: RequestLog) -> None:
        """Write the access record when the server closes the body, counting it."""
        body = response.response
        file_wrapper = environ.get("wsgi.file_wrapper", FileWrapper)
        if response.direct_passthrough and isinstance(body, file_wrapper):
            # send_file: wrapping would stop the server from using sendfile(); the file
            # wrapper's size is the Content-Length, and its close() tells us it is done.
            close = getattr(body, "close", None)

            def closed() -> None:
                try:
                    if close is not None:
                        close()
                finally:
                    if not _bodiless(environ, response.status_code):
                        log.response_size = response.content_length or 0
                    log.finish()

            body.close = closed
            environ[_DEFERRED_KEY] = body
        else:
            environ[_DEFERRED_KEY] = response.response = _StreamedBody(body, log)

    def _exception(self, sender: Flask, exception: BaseException, **extra: Any) -> None:
        """Flask's got_request_exception: an exception no errorhandler took."""
        try:
            self._log().log_exception(exception)
        except Exception as exc:
            _errors.report("flask: exception", exc)

    def _teardown_request(self, exc: BaseException | None) -> None:
        """Flask's teardown: after the response was made, or when an exception leaves
        the app. With ``stream_with_context`` it runs when the stream ends instead
        (``GeneratorExit`` when the server closed it early)."""
        try:
            environ = request.environ
            log = self._log()
            if exc is not None and not isinstance(exc, GeneratorExit):
                log.log_exception(exc)
            if environ.get(_OUTER_KEY):
                return  # the outer adapter finishes the request
            deferred = environ.get(_DEFERRED_KEY)
            if deferred is not None and (
                exc is None
                or getattr(deferred, "started", False)
                or (isinstance(exc, Exception) and not _propagates())
            ):
                return  # the body is (being) sent: closing it writes the access record
            if exc is not None and (not isinstance(exc, Exception) or _propagates()):
                # The exception leaves the application before any response of Flask's
                # was sent: the server answers 500.
                log.finish(500)
                return
            response: Response | None = environ.get(_RESPONSE_KEY)
            if response is not None and not _bodiless(environ, response.status_code):
                for chunk in response.iter_encoded():
                    log.add_response_body(chunk)
            log.finish()
        except Exception as error:
            _errors.report("flask: request end", error)

    def __repr__(self) -> str:
        return f"<KakashiFlask {self.settings!r}>"


def _propagates() -> bool:
    """Whether Flask re-raises an unhandled exception instead of answering 500
    (``PROPAGATE_EXCEPTIONS``, by default on in testing and debug mode)."""
    from flask import current_app

    app = current_app
    propagate = app.config.get("PROPAGATE_EXCEPTIONS")
    if propagate is None:
        propagate = app.testing or app.debug
    return bool(propagate)
