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
    assert expected == {key: access[key] for key in expected}
    assert isinstance(access["duration_ms"], float)
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
