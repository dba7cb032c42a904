"""Formatters: the JSON schema, text without forged lines, logfmt, console colours."""

from __future__ import annotations

import datetime
import decimal
import io
import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest

import kakashi
from kakashi.cli.view import Query, view
from kakashi.formatters import (
    LEVEL_COLOURS,
    RESET,
    ConsoleFormatter,
    colour_wanted,
    escape,
    render_event,
    render_value,
)
from tests.conftest import Implementation

TIME_NS = 1_795_798_641_123_456_789  # 2026-11-27T16:57:21.123456789Z
#: Unicode's Bidi_Control characters.
BIDI = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]


def record(impl: Implementation, msg: object = "hello", **attributes: Any) -> Any:
    return impl.capture.Record(TIME_NS, attributes.pop("level", 20), "app", msg, **attributes)


class TestJson:
    def test_schema_and_key_order(self, impl: Implementation) -> None:
        """timestamp, level, logger, message, then extra, bound and call fields."""
        bound = impl.capture.Bound({"request_id": "r1"})
        rec = record(impl, fields={"n": 1}, bound=bound, extra={"service": "api"})

        assert (
            b'{"timestamp":"2026-11-27T16:57:21.123456Z","level":"INFO","logger":"app",'
            b'"message":"hello","service":"api","request_id":"r1","n":1}'
        ) == impl.format.format_json(rec)

    @pytest.mark.parametrize(
        ("time_ns", "expected"),
        [
            (0, "1970-01-01T00:00:00.000000Z"),
            (999, "1970-01-01T00:00:00.000000Z"),
            (1_000, "1970-01-01T00:00:00.000001Z"),
            (951_782_400_000_000_000, "2000-02-29T00:00:00.000000Z"),
            (2**63 - 1, "2262-04-11T23:47:16.854775Z"),  # the int64 limit of time_ns
        ],
    )
    def test_timestamps(self, impl: Implementation, time_ns: int, expected: str) -> None:
        """Timestamps are RFC 3339 UTC with microseconds (truncated, not rounded)."""
        assert expected == impl.format.render_timestamp(time_ns)

    def test_unserialisable_values_are_marked(self, impl: Implementation) -> None:
        """Values orjson cannot take become "!repr:..."; common types convert cleanly."""
        import decimal
        import pathlib

        class Thing:
            def __repr__(self) -> str:
                return "Thing()"

        fields = {
            "thing": Thing(),
            "price": decimal.Decimal("1.10"),
            "path": pathlib.PurePosixPath("/tmp/x"),
            "tags": {"b", "a"},
            "raw": b"\xffok",
            "err": ValueError("nope"),
        }
        event = json.loads(impl.format.format_json(record(impl, fields=fields)))

        assert {
            "thing": "!repr:Thing()",
            "price": "1.10",
            "path": "/tmp/x",
            "tags": ["a", "b"],
            "raw": "\ufffdok",
            "err": "ValueError: nope",
        } == {key: event[key] for key in fields}

    def test_failing_repr_is_still_safe(self, impl: Implementation) -> None:
        """Even an object whose repr raises is written, marked."""

        class Hostile:
            def __repr__(self) -> str:
                raise RuntimeError

        event = json.loads(impl.format.format_json(record(impl, fields={"h": Hostile()})))

        assert event["h"].startswith("!repr:<")

    def test_surrogates_and_big_ints(self, impl: Implementation) -> None:
        """Lone surrogates become U+FFFD; ints beyond 64 bits are written as text."""
        fields = {"s\udc80": "x\ud800y", "big": 2**64}
        event = json.loads(impl.format.format_json(record(impl, "m\udfff", fields=fields)))

        assert ("m\ufffd", "x\ufffdy", str(2**64)) == (
            event["message"],
            event["s\ufffd"],
            event["big"],
        )

    def test_keys_in_every_role_and_shape(self, impl: Implementation) -> None:
        """The same key object is renamed as a call field and kept as an enricher's field
        ("thread" is reserved but not a core key), whichever record comes first; long,
        escaped, non-ASCII and unencodable keys; and more keys than any cache holds."""
        thread = "thread"
        long_key = "k" * 200
        odd = ['q"uote', "back\\slash", "new\nline", "ctl\x01", "é", "日本", "s\udc80"]
        many = [f"key{i}" for i in range(600)]
        records = [
            record(impl, fields={thread: 1}),
            record(impl, extra={thread: "main"}),
            record(impl, fields={thread: 2}),
            record(impl, fields={"level": 3, "message": 4}),
            record(impl, fields={long_key: 5}),
            record(impl, fields={long_key: 6, "level": 7}),
            record(impl, fields={key: i for i, key in enumerate(odd)}),
            record(impl, fields={key: i for i, key in enumerate(many)}),
            record(impl, fields={key: i for i, key in enumerate(many)}),
            record(impl, fields={thread: 8}),
        ]
        events = [json.loads(impl.format.format_json(r)) for r in records]

        assert events[0]["field.thread"] == 1 and "thread" not in events[0]
        assert events[1]["thread"] == "main"
        assert events[2]["field.thread"] == 2
        assert events[3]["field.level"] == 3 and events[3]["level"] == "INFO"
        assert events[3]["field.message"] == 4 and events[3]["message"] == "hello"
        assert events[4][long_key] == 5
        assert events[5][long_key] == 6 and events[5]["field.level"] == 7
        assert [events[6][key.replace("\udc80", "\ufffd")] for key in odd] == list(range(7))
        assert (
            [events[7][key] for key in many] == list(range(600)) == [events[8][key] for key in many]
        )
        assert events[9]["field.thread"] == 8
        if not impl.pure:  # byte for byte what the pure twin writes
            from kakashi._speedups import _format_py

            assert [impl.format.format_json(r) for r in records] == [
                _format_py.format_json(r) for r in records
            ]

    def test_exception_structure(self, impl: Implementation) -> None:
        """exception is {type, message, traceback}; non-builtin types are module-qualified."""
        import json as json_module

        try:
            json_module.loads("{")
        except json_module.JSONDecodeError as exc:
            info = (type(exc), exc, exc.__traceback__)
        event = json.loads(impl.format.format_json(record(impl, exc_info=info)))

        assert "json.decoder.JSONDecodeError" == event["exception"]["type"]
        assert event["exception"]["message"].startswith("Expecting property name")
        assert "Traceback (most recent call last)" in event["exception"]["traceback"]


class TestText:
    def test_layout(self) -> None:
        """timestamp LEVEL logger: message key=value, quoting values that need it."""
        rec = kakashi.Record(TIME_NS, 30, "app.db", "slow query", fields={"ms": 250, "q": "a b"})

        assert (
            '2026-11-27T16:57:21.123456Z WARNING  app.db: slow query ms=250 q="a b"'
            == kakashi.text_formatter(rec)
        )

    @pytest.mark.parametrize(
        "forgery",
        [
            "ok\n2026-11-27T00:00:00.000000Z CRITICAL root: forged",
            "ok\r2026-11-27T00:00:00.000000Z CRITICAL root: forged",
            "ok\u2028forged",
            "ok\x1b[2Kforged",
        ],
    )
    def test_no_forged_lines(self, forgery: str) -> None:
        """Control characters in message, keys, values and logger are escaped."""
        rec = kakashi.Record(TIME_NS, 20, "app" + forgery, forgery, fields={forgery: forgery})
        for formatter in (kakashi.text_formatter, kakashi.logfmt_formatter):
            out = formatter(rec)
            assert 1 == len(out.splitlines()), formatter
            assert "\x1b" not in out

    @pytest.mark.parametrize("key", ["k ey=v", 'k"ey', "k\\ey", "k=", " ", "k\u00a0ey"])
    def test_keys_cannot_forge_fields(self, key: str) -> None:
        """A key with a space, ``=``, quote or backslash is escaped like a value, so it
        reads as one key: text quotes it, logfmt writes backslash escapes."""
        rec = kakashi.Record(TIME_NS, 20, "app", "m", fields={key: "x", "after": 1})

        text = kakashi.text_formatter(rec)
        assert text.endswith(f" {render_value(key)}=x after=1"), text
        assert render_value(key).startswith('"')
        parsed = parse_logfmt(kakashi.logfmt_formatter(rec))
        assert ["timestamp", "level", "logger", "message", None, "after"] == [
            None if k not in ("timestamp", "level", "logger", "message", "after") else k
            for k in parsed
        ]
        (escaped,) = set(parsed) - {"timestamp", "level", "logger", "message", "after"}
        assert ("x", key) == (parsed[escaped], unescape(escaped))

    @pytest.mark.parametrize("code", BIDI)
    def test_bidi_controls_are_escaped(self, code: int) -> None:
        """Bidirectional controls (which make a terminal show text reordered) are written
        as visible escapes in messages, logger names, keys and values, in text, logfmt
        and ``kakashi view``."""
        mark = chr(code)
        rec = kakashi.Record(
            TIME_NS, 20, f"app{mark}", f"m{mark}x", fields={f"k{mark}": f"v{mark}w"}
        )
        event = json.loads(kakashi.default_json_formatter(rec))  # as kakashi view reads it
        for out in (kakashi.text_formatter(rec), kakashi.logfmt_formatter(rec),
                    render_event(event)):  # fmt: skip
            assert mark not in out
            assert 4 == out.count(f"\\u{code:04x}"), out

    def test_traceback_lines_are_marked(self) -> None:
        """Traceback lines are continuation lines that cannot pass for records."""
        try:
            raise ValueError("line one\n2026-11-27T00:00:00.000000Z CRITICAL root: forged")
        except ValueError as exc:
            info = (type(exc), exc, exc.__traceback__)
        out = kakashi.text_formatter(kakashi.Record(TIME_NS, 40, "app", "failed", exc_info=info))
        first, *rest = out.split("\n")

        assert first.startswith("2026-11-27T16:57:21.123456Z ERROR")
        assert rest and all(line.startswith("    | ") for line in rest)

    def test_escape(self) -> None:
        """escape leaves printable text alone and makes control characters visible."""
        assert ("plain é", "a\\nb\\tc\\x00") == (escape("plain é"), escape("a\nb\tc\x00"))


# A value as logged, and as text output must show it.
SHOWN = [
    (datetime.datetime(2026, 1, 1), "2026-01-01T00:00:00"),
    (datetime.date(2026, 1, 2), "2026-01-02"),
    ({"id": 7, "tags": ["a b", None]}, '{"id":7,"tags":["a b",null]}'),
    ([1, "two", 3.5, True], '[1,"two",3.5,true]'),
    ((1, 2), "[1,2]"),
    ({"s": "x\ny\u2028z\x7f"}, '{"s":"x\\ny\\u2028z\\x7f"}'),
    ("plain", "plain"),
    ("two words", '"two words"'),
    ('say "hi"', '"say \\"hi\\""'),
    ("a=b", '"a=b"'),
    ("c:\\x", '"c:\\\\x"'),
    ("line\nbreak\ttab", '"line\\nbreak\\ttab"'),
    ("", '""'),
    ("é日本", "é日本"),
    (None, "null"),
    (True, "true"),
    (False, "false"),
    (42, "42"),
    (2**70, str(2**70)),
    (1.5, "1.5"),
    (float("nan"), "null"),
    (decimal.Decimal("1.10"), "1.10"),
    (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
]


class TestValues:
    @pytest.mark.parametrize(("value", "expected"), SHOWN)
    def test_values_read_as_a_person_expects(
        self, impl: Implementation, value: Any, expected: str
    ) -> None:
        """A value captured as the logger captures it (snapshotted by this twin) is shown
        once: strings bare or quoted, snapshots decoded, dates as text, JSON inline."""
        fields = {"v": impl.capture.snapshot(value)}
        rec = impl.capture.Record(TIME_NS, 20, "app", "m", fields=fields)

        assert f"2026-11-27T16:57:21.123456Z INFO     app: m v={expected}" == render_event(
            impl.format.event_dict(rec)
        )
        assert expected == render_value(value)

    @pytest.mark.parametrize(("value", "expected"), SHOWN)
    def test_view_shows_a_json_line_as_text_formatter_shows_the_record(
        self, impl: Implementation, tmp_path: Path, value: Any, expected: str
    ) -> None:
        """``kakashi view`` of a record's JSON line is the text formatter's line for it,
        traceback included."""
        try:
            raise ValueError("bad\nvalue")
        except ValueError as exc:
            info = (type(exc), exc, exc.__traceback__)
        rec = impl.capture.Record(
            TIME_NS, 40, "app.db", "slow\nquery", fields={"v": impl.capture.snapshot(value)},
            extra={"thread": {"id": 1, "name": "main thread"}}, exc_info=info,
            source=("mod", "fn", 7),
        )  # fmt: skip
        log = tmp_path / "app.log"
        log.write_bytes(impl.format.format_json(rec) + b"\n")
        out = io.StringIO()
        view([log], Query(), out, as_json=False, follow=False)

        assert render_event(impl.format.event_dict(rec)) + "\n" == out.getvalue()

    def test_text_formatter_is_render_event(self) -> None:
        """TextFormatter and ConsoleFormatter give render_event's line for a record."""
        fields = {"when": datetime.datetime(2026, 1, 1), "d": {"k": [1]}, "s": "a b"}
        rec = kakashi.Record(TIME_NS, 30, "app", "m", fields=fields)
        event = kakashi.formatters.event_dict(rec)

        assert (
            (
                '2026-11-27T16:57:21.123456Z WARNING  app: m when=2026-01-01T00:00:00 d={"k":[1]} '
                's="a b"'
            )
            == kakashi.text_formatter(rec)
            == render_event(event)
        )
        assert render_event(event, colours=True) == ConsoleFormatter(colors=True)(rec)
        assert f"{LEVEL_COLOURS['WARNING']}WARNING {RESET}" in render_event(event, colours=True)

    def test_event_from_a_foreign_log(self) -> None:
        """An event without the core keys, or with odd types, still renders on one line."""
        event = {"msg": "hi", "level": 30, "exception": {"type": "E", "message": "m"}}

        assert "- 30       -:  msg=hi exception.type=E exception.message=m" == render_event(event)


def unescape(text: str) -> str:
    """Undo the formatters' backslash escapes (\\n, \\xNN, \\uNNNN, \\\\, \\")."""
    return re.sub(
        r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|.)",
        lambda m: (
            {"n": "\n", "r": "\r", "t": "\t"}.get(m[1])
            or (chr(int(m[1][1:], 16)) if len(m[1]) > 1 else m[1])
        ),
        text,
    )


def parse_logfmt(line: str) -> dict[str, str]:
    """A strict logfmt parser: key=value or key="escaped value", space separated."""
    pairs: dict[str, str] = {}
    pattern = re.compile(r'([^\s="]+)=(?:"((?:[^"\\]|\\.)*)"|([^\s"]*))(?:\s|$)')
    position = 0
    while position < len(line):
        match = pattern.match(line, position)
        assert match, f"unparseable at {position}: {line[position:]!r}"
        key, quoted, bare = match.groups()
        pairs[key] = unescape(quoted) if quoted is not None else bare
        position = match.end()
    return pairs


class TestLogfmt:
    def test_round_trip(self) -> None:
        """logfmt output re-parses to the logged values."""
        fields = {"path": "/a b", "quote": 'say "hi"', "back": "c:\\x", "n": 3, "none": None}
        rec = kakashi.Record(TIME_NS, 20, "app", "multi\nline", fields=fields)
        parsed = parse_logfmt(kakashi.logfmt_formatter(rec))

        assert {
            "timestamp": "2026-11-27T16:57:21.123456Z",
            "level": "info",
            "logger": "app",
            "message": "multi\nline",
            "path": "/a b",
            "quote": 'say "hi"',
            "back": "c:\\x",
            "n": "3",
            "none": "null",
        } == parsed

    def test_snapshots_are_decoded(self, impl: Implementation) -> None:
        """A date is its ISO text, unquoted; a dict is its JSON, quoted (logfmt's rules)."""
        fields = {
            "when": impl.capture.snapshot(datetime.datetime(2026, 1, 1)),
            "d": impl.capture.snapshot({"a": "b c"}),
        }
        rec = kakashi.Record(TIME_NS, 20, "app", "m", fields=fields)
        line = kakashi.logfmt_formatter(rec)

        assert " when=2026-01-01T00:00:00 " in line
        assert {"when": "2026-01-01T00:00:00", "d": '{"a":"b c"}'}.items() <= (
            parse_logfmt(line).items()
        )

    def test_nested_values_are_flattened(self) -> None:
        """thread, source and exception become dotted keys."""
        rec = kakashi.Record(TIME_NS, 20, "app", "m", source=("mod", "fn", 7))

        assert {"source.module": "mod", "source.function": "fn", "source.line": "7"}.items() <= (
            parse_logfmt(kakashi.logfmt_formatter(rec)).items()
        )


class TestConsole:
    def test_colours_follow_the_environment(self, monkeypatch: Any) -> None:
        """NO_COLOR turns colour off, FORCE_COLOR on; otherwise only for a terminal."""

        class Tty(io.StringIO):
            def isatty(self) -> bool:
                return True

        monkeypatch.delenv("NO_COLOR", raising=False)
        monkeypatch.delenv("FORCE_COLOR", raising=False)
        assert (False, True) == (colour_wanted(io.StringIO()), colour_wanted(Tty()))
        monkeypatch.setenv("NO_COLOR", "1")
        assert False is colour_wanted(Tty())
        monkeypatch.delenv("NO_COLOR")
        monkeypatch.setenv("FORCE_COLOR", "1")
        assert True is colour_wanted(io.StringIO())

    def test_coloured_level(self) -> None:
        """With colours on, the level is wrapped in ANSI codes and reset."""
        rec = kakashi.Record(TIME_NS, 40, "app", "boom")
        coloured = ConsoleFormatter(colors=True)(rec)
        plain = ConsoleFormatter(colors=False)(rec)

        assert "\x1b[31mERROR   \x1b[0m app: boom" in coloured
        assert "\x1b" not in plain
