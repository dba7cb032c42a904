"""The stdlib bridge's two twins (``_bridge_c`` and ``_bridge_py``) make the same records."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from kakashi import _speedups
from kakashi.integrations.logging import KakashiHandler
from tests.conftest import Implementation


class Shouting:
    """A message object whose str() is its own."""

    def __str__(self) -> str:
        return "LOUD %s"


class BracesRecord(logging.LogRecord):
    """A record factory's class that renders with str.format."""

    def getMessage(self) -> str:
        return str(self.msg).format(*self.args)


def _exc_info() -> Any:
    try:
        raise ValueError("boom")
    except ValueError:
        return sys.exc_info()


def _log_records() -> list[logging.LogRecord]:
    made = []
    for name, level, msg, args, exc, extra, stack in [
        ("orders", 20, "order %s filled", (7,), None, {"side": "buy", "book": {"a": [1]}}, None),
        ("orders", 30, "no arguments", (), None, None, None),
        ("orders", 20, "%(a)s and %(b)s", ({"a": 1, "b": "two"},), None, None, None),
        ("orders", 20, "too few %s %s", (1,), None, None, None),
        ("orders", 20, Shouting(), ("x",), None, None, None),
        ("uvicorn.access", 20, '%s - "%s %s HTTP/%s" %d',
         ("127.0.0.1:5000", "GET", "/a?b=1", "1.1", 200), None, None, None),
        ("uvicorn.access", 20, "%s", ("not an access record",), None, None, None),
        ("gunicorn.access", 20, "%(h)s", ({"h": "10.0.0.1", "m": "POST", "U": "/p", "q": "x=1",
                                          "s": "201", "B": 12, "D": 1500, "a": "curl",
                                          "H": "HTTP/1.1"},), None, None, None),
        ("custom", 5, "low", (), None, None, None),
        ("custom", 150, "high", (), None, None, None),
        ("custom", -3, "negative", (), None, None, None),
        ("custom", 10**20, "huge", (), None, None, None),
        ("errors", 40, "failed", (), _exc_info(), None, None),
        ("errors", 40, "stack", (), None, None, "Stack (most recent call last):\n  here"),
    ]:  # fmt: skip
        logger = logging.getLogger(name)
        record = logger.makeRecord(name, level, "/src/app/orders.py", 12, msg, args, exc,
                                   "fill", extra, stack)  # fmt: skip
        made.append(record)
    braces = BracesRecord("orders", 20, "/src/app/orders.py", 3, "order {} filled", (9,), None)
    made.append(braces)
    return made


def _view(record: Any) -> dict[str, Any]:
    """Everything a Kakashi record carries, comparable across the twins."""
    exc = record.exc_info
    return {
        "time_ns": record.time_ns,
        "level": record.level,
        "logger": record.logger,
        "message": record.message,
        "fields": record.fields,
        "source": record.source,
        "thread_id": record.thread_id,
        "thread_name": record.thread_name,
        "exc_info": exc[:2] if exc else exc,
        "stack_info": record.stack_info,
        "extra": record.extra,
        "bound": record.bound,
        "context": record.context,
    }


@pytest.fixture
def twins() -> Iterator[tuple[Any, Any]]:
    """The compiled and the pure bridge module, both knowing KakashiHandler."""
    try:
        compiled = Implementation(pure=False).load().module("bridge")
    except ImportError:
        pytest.skip("the compiled extension is not built here")
    pure = Implementation(pure=True).module("bridge")
    before = pure._handler_class
    pure.set_handler_class(KakashiHandler)
    compiled.set_handler_class(KakashiHandler)
    yield compiled, pure
    pure.set_handler_class(before)
    _speedups.set_handler_class(KakashiHandler)


@pytest.mark.c_extension
@pytest.mark.parametrize("index", range(len(_log_records())))
def test_to_record_is_the_same_in_both_twins(twins: tuple[Any, Any], index: int) -> None:
    """Every shape of LogRecord becomes the same Kakashi record in either twin."""
    compiled, pure = twins
    record = _log_records()[index]

    assert _view(pure.to_record(record)) == _view(compiled.to_record(record))


@pytest.mark.c_extension
@pytest.mark.parametrize(
    ("name", "level", "msg", "args", "extra"),
    [
        ("orders", 20, "order %s filled", (7,), {"side": "buy", "book": {"a": [1]}}),
        ("orders", 20, "%(a)s", ({"a": 1},), None),
        ("orders", 20, "%s", ({},), None),
        ("orders", 20, "bad %d", ("x",), None),
        ("uvicorn.access", 20, '%s - "%s %s HTTP/%s" %d',
         ("[::1]:80", "GET", "/", "2", 404), None),
        ("custom", 10**20, "huge", (), None),
        ("custom", -1, "negative", (), {}),
    ],
)  # fmt: skip
def test_direct_record_is_the_same_in_both_twins(
    twins: tuple[Any, Any], name: str, level: int, msg: str, args: Any, extra: Any
) -> None:
    """A lean logger's call becomes the same Kakashi record in either twin (but for the
    time, read at each call)."""
    compiled, pure = twins
    call = (name, level, msg, args, extra, "/src/app/orders.py", "fill", 12)

    made = [_view(twin.direct_record(*call)) for twin in (pure, compiled)]
    for view in made:
        view.pop("time_ns")

    assert made[0] == made[1]


@pytest.mark.c_extension
def test_direct_handlers_are_the_same_in_both_twins(twins: tuple[Any, Any]) -> None:
    """Both twins find the same handlers (or none) for the same hierarchy."""
    compiled, pure = twins
    parent = logging.getLogger("twins.direct")
    child = logging.getLogger("twins.direct.child")
    first, second = KakashiHandler(), KakashiHandler(level=logging.WARNING)
    parent.handlers[:] = [first, second]
    parent.propagate = False  # the root has pytest's handlers
    child.handlers[:] = [first]
    try:
        found = [(twin.direct_handlers(child, 20), twin.direct_handlers(child, 30))
                 for twin in (pure, compiled)]  # fmt: skip
        child.propagate = False
        alone = [twin.direct_handlers(child, 30) for twin in (pure, compiled)]
        parent.handlers.append(logging.NullHandler())
        child.propagate = True
        mixed = [twin.direct_handlers(child, 30) for twin in (pure, compiled)]
    finally:
        parent.handlers.clear()
        child.handlers.clear()
        parent.propagate = child.propagate = True

    assert [([first, first], [first, first, second])] * 2 == found
    assert [[first], [first]] == alone
    assert [None, None] == mixed
