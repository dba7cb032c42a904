"""The framework-neutral part of the web integrations (kakashi.integrations.web)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import kakashi
from kakashi.integrations.web import REDACTED, RequestLogging, drain
from kakashi.testing import capture_logs
from tests.conftest import keeping_pipeline
from tests.webapps import assert_access_fields


def _request(settings: RequestLogging, **options):  # type: ignore[no-untyped-def]
    options.setdefault("client", ("203.0.113.9", 51000))
    return settings.start("GET", "/items/7", **options)


def test_one_access_record_with_the_shared_fields() -> None:
    settings = RequestLogging()
    with capture_logs() as logs:
        request = _request(
            settings,
            query="page=2",
            headers=[("User-Agent", "curl/8"), ("Host", "x")],
            http_version="1.1",
            scheme="http",
        )
        kakashi.get_logger("app").info("inside")
        request.set_route("/items/{id}")
        request.set_status(201)
        request.add_response_body(b"hello")
        request.finish()
        request.finish()  # a second call logs nothing
        kakashi.get_logger("app").info("after")
    inside, access, after = logs
    assert request.request_id == inside["request_id"]
    assert "request_id" not in after
    assert "INFO" == access["level"]
    assert "kakashi.access" == access["logger"]
    assert "request" == access["message"]
    expected = {
        "request_id": request.request_id,
        "method": "GET",
        "path": "/items/7",
        "route": "/items/{id}",
        "query": "page=2",
        "status": 201,
        "response_size": 5,
        "client_ip": "203.0.113.9",
        "client_port": 51000,
        "user_agent": "curl/8",
        "http_version": "1.1",
        "scheme": "http",
    }
    assert_access_fields(access, expected)
    assert re.fullmatch("[0-9a-f]{32}", request.request_id)
    assert [("X-Request-ID", request.request_id)] == request.response_headers()


@pytest.mark.parametrize(
    ("status", "level"), [(200, "INFO"), (302, "INFO"), (404, "WARNING"), (503, "ERROR")]
)
def test_level_by_status(status: int, level: str) -> None:
    with capture_logs() as logs:
        _request(RequestLogging()).finish(status)
    assert level == logs[-1]["level"]


def test_levels_configurable_by_class_and_code() -> None:
    settings = RequestLogging(levels={404: "INFO", 5: "CRITICAL"})
    assert 20 == settings.level_for(404)
    assert 30 == settings.level_for(400)
    assert 50 == settings.level_for(500)


def test_request_id_not_trusted_unless_configured() -> None:
    headers = [("x-request-id", "abc-123")]
    plain = _request(RequestLogging(), headers=headers)
    plain.finish(200)
    assert "abc-123" != plain.request_id
    assert "abc-123" == plain.upstream_request_id
    trusted = _request(RequestLogging(trust_request_id=True), headers=headers)
    trusted.finish(200)
    assert "abc-123" == trusted.request_id


@pytest.mark.parametrize("hostile", ["a\r\nSet-Cookie: x=1", "x" * 129, "", "id with space"])
def test_a_hostile_request_id_is_replaced(hostile: str) -> None:
    request = _request(RequestLogging(trust_request_id=True), headers=[("X-Request-ID", hostile)])
    request.finish(200)
    assert re.fullmatch("[0-9a-f]{32}", request.request_id)
    for _name, value in request.response_headers():
        assert "\r" not in value and "\n" not in value


def test_redaction_exact_keys_only() -> None:
    settings = RequestLogging(log_headers=True)
    with capture_logs() as logs:
        request = _request(
            settings,
            query="token=abc&monkey=1&api_key=k&author=me&keyboard=q&Password=p",
            headers=[
                ("Authorization", "Bearer s3cret"),
                ("Cookie", "sid=1"),
                ("X-Api-Key", "k"),
                ("Author", "me"),
                ("Keyboard", "yes"),
            ],
        )
        request.finish(200)
    access = logs[-1]
    assert (
        f"token={REDACTED}&monkey=1&api_key={REDACTED}&author=me&keyboard=q&Password={REDACTED}"
        == access["query"]
    )
    headers = access["request_headers"]
    assert REDACTED == headers["authorization"] == headers["cookie"] == headers["x-api-key"]
    assert "me" == headers["author"]
    assert "yes" == headers["keyboard"]
    assert "s3cret" not in str(access)


def test_hostile_values_are_capped() -> None:
    settings = RequestLogging(max_value_length=64)
    with capture_logs() as logs:
        request = settings.start(
            "GET", "/" + "é" * 500, headers=[("user-agent", "\x1b[31mred\n" * 100)], client=None
        )
        request.finish(200)
    access = logs[-1]
    assert access["path"].endswith("…[+437 chars]")
    assert len(access["user_agent"]) < 100


def test_excluded_paths_exact_and_prefix() -> None:
    settings = RequestLogging(exclude_paths=["/health", "/static/*"])
    with capture_logs() as logs:
        for path in ("/health", "/static/app.js", "/healthz", "/items"):
            settings.start("GET", path).finish(200)
    assert ["/healthz", "/items"] == [entry["path"] for entry in logs]


def test_slow_request_warning() -> None:
    with capture_logs() as logs:
        _request(RequestLogging(slow_request_ms=0)).finish(200)
        _request(RequestLogging(slow_request_ms=60_000)).finish(200)
    assert ["request", "slow request", "request"] == [e["message"] for e in logs]
    assert "WARNING" == logs[1]["level"]
    assert 0.0 == logs[1]["threshold_ms"]


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.9", "1.2.3.4", "203.0.113.9"),  # not a proxy: the header is ignored
        ("10.0.0.5", "1.2.3.4", "1.2.3.4"),
        ("10.0.0.5", "6.6.6.6, 1.2.3.4, 10.0.0.7", "1.2.3.4"),  # the client may forge the left
        ("10.0.0.5", "garbage, 10.0.0.7", "10.0.0.7"),
        ("10.0.0.5", "1.2.3.4:5555", "1.2.3.4"),
        ("10.0.0.5", "[2001:db8::1]:443", "2001:db8::1"),
        ("10.0.0.5", "", "10.0.0.5"),
    ],
)
def test_forwarded_for_only_from_trusted_proxies(peer: str, forwarded: str, expected: str) -> None:
    settings = RequestLogging(trusted_proxies=["10.0.0.0/8"])
    assert expected == settings.client_ip(peer, forwarded)


def test_a_broken_enricher_never_breaks_the_request() -> None:
    def broken(request: object) -> dict[str, object]:
        raise RuntimeError("boom")

    def user(request: object) -> dict[str, object]:
        return {"user": "u1", "password": "hunter2"}

    errors = kakashi.error_counts().get("web: enricher: RuntimeError", 0)
    with capture_logs() as logs:
        _request(RequestLogging(enrichers=[broken, user])).finish(200)
    access = logs[-1]
    assert "RuntimeError: boom" == access["kakashi_enricher_error"]
    assert "u1" == access["user"]
    assert REDACTED == access["password"]
    assert errors + 1 == kakashi.error_counts()["web: enricher: RuntimeError"]


def test_an_exception_is_logged_once() -> None:
    settings = RequestLogging()
    with capture_logs() as logs:
        request = _request(settings)
        try:
            raise ValueError("bad")
        except ValueError as exc:
            request.log_exception(exc)
            request.log_exception(exc)
            second = _request(settings)
            second.log_exception(exc)  # e.g. an outer middleware sees the same exception
            second.finish()
        request.finish()
    failed = [entry for entry in logs if entry["message"] == "request failed"]
    assert 1 == len(failed)
    assert "ValueError" == failed[0]["exception"]["type"]
    assert [500, 500] == [e["status"] for e in logs if e["message"] == "request"]


def test_bodies_only_when_asked_and_capped() -> None:
    with capture_logs() as logs:
        request = _request(RequestLogging())
        request.add_request_body(b"secret body")
        request.add_response_body(b"x" * 100)
        request.finish(200)
        asked = _request(
            RequestLogging(log_request_body=True, log_response_body=True, body_limit=16)
        )
        asked.add_request_body(b"a" * 10)
        asked.add_request_body(b"b" * 10)
        asked.add_response_body(b"ok")
        asked.finish(200)
    plain, capped = logs
    assert "request_body" not in plain and "response_body" not in plain
    assert 100 == plain["response_size"]
    assert "a" * 10 + "b" * 6 == capped["request_body"]
    assert capped["request_body_truncated"] is True
    assert "ok" == capped["response_body"]
    assert "response_body_truncated" not in capped


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"request_id_header": "X Bad"}, "request_id_header"),
        ({"trusted_proxies": ["not-an-ip"]}, "trusted_proxies"),
        ({"trusted_proxies": "10.0.0.1"}, "trusted_proxies"),
        ({"levels": {7: "INFO"}}, "levels"),
        ({"levels": {404: "LOUD"}}, "levels"),
        ({"exclude_paths": ["health"]}, "exclude_paths"),
        ({"slow_request_ms": -1}, "slow_request_ms"),
        ({"slow_request_ms": float("nan")}, "slow_request_ms"),
        ({"body_limit": 0}, "body_limit"),
        ({"enrichers": [42]}, "enrichers"),
        ({"redact": "token"}, "redact"),
    ],
)
def test_bad_settings_are_refused(options: dict[str, object], message: str) -> None:
    with pytest.raises((TypeError, ValueError), match=message):
        RequestLogging(**options)  # type: ignore[arg-type]


def test_drain_writes_what_the_async_backend_holds(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    pipeline = keeping_pipeline(kakashi.file_writer(str(path)))
    log = kakashi.get_logger("drained", pipeline)
    for i in range(500):
        log.info("r", i=i)
    assert drain(5.0) is True
    assert 500 == len(path.read_text().splitlines())
    pipeline.shutdown()


def test_importing_it_loads_no_framework() -> None:
    code = (
        "import sys, kakashi.integrations.web;"
        "print(sorted(m for m in ('starlette','flask','django','fastapi') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "[]" == out.stdout.strip()


def test_a_stream_cut_short_says_so() -> None:
    """finish(disconnected=True) marks the access record; a whole response has no mark."""
    with capture_logs() as logs:
        cut = _request(RequestLogging())
        cut.set_status(200)
        cut.add_response_body(b"first chunk")
        cut.finish(disconnected=True)
        _request(RequestLogging()).finish(200)
    assert [True, None] == [entry.get("disconnected") for entry in logs]
    assert [200, 11] == [logs[0]["status"], logs[0]["response_size"]]


def test_a_response_cut_short_says_disconnected() -> None:
    """An adapter sets ``disconnected`` when the client left mid-response; the access
    record then carries ``"disconnected": true`` after the size (absent otherwise)."""
    with capture_logs() as logs:
        whole = _request(RequestLogging())
        whole.add_response_body(b"all")
        whole.finish(200)
        cut = _request(RequestLogging())
        cut.add_response_body(b"part")
        cut.disconnected = True
        cut.finish(200)
    assert "disconnected" not in logs[0]
    assert (200, 4, True) == (logs[1]["status"], logs[1]["response_size"], logs[1]["disconnected"])


def test_finish_adds_the_adapters_fields_masked_like_the_others() -> None:
    """finish(**fields) puts an adapter's fields (a websocket's close code) in the access
    record, after the shared ones (``disconnected`` stays after the size); a key in
    ``redact`` is masked there too."""
    with capture_logs() as logs:
        _request(RequestLogging()).finish(200, disconnected=True, close_code=1001, token="t0p")
    access = logs[-1]
    assert access["disconnected"] is True
    assert REDACTED == access["token"]
    assert ["close_code", "token", "levelno"] == list(access)[-3:]
    assert "client_ip" == list(access)[list(access).index("disconnected") + 1]


def test_finish_can_leave_the_request_id_bound_until_unbind() -> None:
    """With unbind=False, records logged after the access record (background work)
    still carry the request id, until unbind(); unbind twice is harmless."""
    log = kakashi.get_logger("app")
    with capture_logs() as logs:
        request = _request(RequestLogging())
        request.finish(200, unbind=False)
        log.info("background")
        request.unbind()
        request.unbind()
        log.info("after")
    access, background, after = logs
    assert request.request_id == access["request_id"] == background["request_id"]
    assert "request_id" not in after


def test_a_head_response_has_no_body_on_the_wire() -> None:
    """A HEAD response's size is 0 whatever the application wrote (the server drops it)."""
    settings = RequestLogging(log_response_body=True)
    with capture_logs() as logs:
        request = settings.start("HEAD", "/items/7")
        request.add_response_body(b"what GET would send")
        request.finish(200)
    assert (0, False) == (logs[0]["response_size"], "response_body" in logs[0])


def test_forwarded_for_walks_a_bounded_number_of_hops() -> None:
    """More trusted-looking hops than the cap: the walk stops at the cap (the rest of the
    header is not an address), so a huge forged header costs nothing."""
    settings = RequestLogging(trusted_proxies=["10.0.0.0/8"])
    hops = [f"10.0.{n // 250}.{n % 250 + 1}" for n in range(1000)]
    assert hops[-32] == settings.client_ip("10.9.9.9", ",".join(hops))
    assert "198.51.100.7" == settings.client_ip("10.9.9.9", ",".join(["198.51.100.7", *hops[-31:]]))


def test_a_long_query_is_redacted_over_what_is_kept_and_marked_cut() -> None:
    """Only the kept part of a long query is parsed; it is redacted and says how much of
    the query is not shown."""
    settings = RequestLogging(max_value_length=32)
    query = "token=abc&page=2&" + "x" * 100
    kept = settings.redact_query(query)
    assert kept.startswith(f"token={REDACTED}&page=2&")
    assert "abc" not in kept
    cut = int(re.fullmatch(r".*…\[\+(\d+) chars\]", kept).group(1))  # type: ignore[union-attr]
    assert len(kept) - len(f"…[+{cut} chars]") == 32


def test_finish_in_another_context_still_unbinds_the_id_there() -> None:
    """start() in one context, finish() in a copy of it holding the id (asgiref copies a
    thread's context back to its caller): the copy ends without the id."""
    import contextvars

    settings = RequestLogging()
    bound_in = contextvars.copy_context()
    bound_in.run(kakashi.bind_context, service="shop")
    request = bound_in.run(settings.start, "GET", "/x")
    copy = bound_in.copy()
    assert request.request_id == copy.run(kakashi.get_context)["request_id"]
    with capture_logs() as logs:
        copy.run(request.finish)  # not the context start() bound in
    assert {"service": "shop"} == copy.run(kakashi.get_context)
    assert 1 == len(logs)


def test_enclosing_is_the_unfinished_request_of_this_context_with_the_same_line() -> None:
    """An adapter started inside another's request finds it (same method and path, not
    finished); current_request() is that request until it is unbound."""
    from kakashi.integrations.web import current_request

    outer_settings, inner_settings = RequestLogging(), RequestLogging(logger="inner")
    assert None is current_request()
    with capture_logs():
        outer = outer_settings.start("GET", "/legacy/x")
        assert outer is current_request()
        assert outer is inner_settings.enclosing("GET", "/legacy/x")
        assert None is inner_settings.enclosing("GET", "/other")
        outer.finish(200)
    assert None is current_request()
    assert None is inner_settings.enclosing("GET", "/legacy/x")


def test_an_exception_instance_raised_by_every_request_is_logged_for_each() -> None:
    """A module-level exception instance raised by three requests: three "request failed"
    records (the mark that stops a second record is per request)."""
    shared = RuntimeError("raised again and again")
    settings = RequestLogging()
    with capture_logs() as logs:
        for _ in range(3):
            request = settings.start("GET", "/x")
            request.log_exception(shared)
            request.log_exception(shared)  # the same request: once
            request.finish()
    assert ["request failed", "request"] * 3 == [entry["message"] for entry in logs]


def test_concurrent_requests_raising_one_instance_each_log_it() -> None:
    """Two requests in flight at once (each in its own context, as asyncio tasks are)
    raising the same exception instance: each logs it; neither runs inside the other."""
    import contextvars

    shared = RuntimeError("shared")
    settings = RequestLogging()
    with capture_logs() as logs:
        first = contextvars.copy_context().run(settings.start, "GET", "/a")
        second = contextvars.copy_context().run(settings.start, "GET", "/b")
        first.log_exception(shared)
        second.log_exception(shared)
    assert ["/a", "/b"] == [entry["path"] for entry in logs]
