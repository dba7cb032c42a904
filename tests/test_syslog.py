"""kakashi.writers.syslog.SyslogWriter: RFC 5424 messages, checked byte for byte and as a
real rsyslog (Debian packages ``rsyslog`` and ``rsyslog-gnutls``) stores them.

The rsyslog fixture runs ``rsyslogd -n`` in the foreground with a configuration written
into ``tmp_path``: UDP, TCP and TLS inputs on free loopback ports, rsyslog's own
structured-data parser (mmpstrucdata), and an omfile action that writes every message's
parts, its raw text and the parsed structured data as one JSON line.
"""

from __future__ import annotations

import dataclasses
import glob
import io
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kakashi import _errors
from kakashi.writers.delivery import DeliveryError
from kakashi.writers.syslog import OVERFLOW_PARAM, SyslogWriter, param_name, param_value, severity

from .conftest import HeldPort, Keeper, free_ports, keeping_pipeline

RSYSLOGD = shutil.which("rsyslogd") or next(
    (p for p in ("/usr/sbin/rsyslogd", "/sbin/rsyslogd") if os.path.exists(p)), None
)
#: rsyslog's TLS driver (Debian package rsyslog-gnutls)
GTLS = bool(
    glob.glob("/usr/lib/*/rsyslog/lmnsd_gtls.so") + glob.glob("/usr/lib/rsyslog/lmnsd_gtls.so")
)
APP = "kakashi-test"
MARK = "...[truncated]"
STAMP = "2026-11-27T18:06:00.123456Z"


# -- the message, byte for byte -------------------------------------------------------------


def _writer(**options: Any) -> SyslogWriter:
    settings: dict[str, Any] = {"hostname": "web-1", "app_name": "shop", "procid": "42"}
    settings.update(options)
    return SyslogWriter("127.0.0.1", 9, "udp", **settings)


def test_a_record_becomes_one_rfc5424_message() -> None:
    """PRI from facility and level, the record's timestamp, the header fields, one SD
    element with the fields escaped, then BOM and the message."""
    line = orjson.dumps(
        {
            "timestamp": STAMP,
            "level": "WARNING",
            "logger": "app.db",
            "message": "slow\nquery é",
            "sql": 'SELECT "a"] \\ 1',
            "ms": 250,
            "params": {"id": 7, "tags": ["a", "b"]},
            "user id": None,
        }
    )
    expected = (
        b"<12>1 2026-11-27T18:06:00.123456Z web-1 shop 42 - "
        b'[kakashi@32473 level="WARNING" logger="app.db" sql="SELECT \\"a\\"\\] \\\\ 1" '
        b'ms="250" params="{\\"id\\":7,\\"tags\\":[\\"a\\",\\"b\\"\\]}" user%20id="null"] '
        b"\xef\xbb\xbf" + "slow\nquery é".encode()
    )
    assert expected == _writer().encode(line)
    assert expected.replace(b"\xef\xbb\xbf", b"").replace(b"<12>", b"<180>").replace(
        b" - [", b" audit [", 1
    ) == _writer(bom=False, facility="local6", msgid="audit").encode(line)


def test_severities() -> None:
    """Levels map to RFC 5424 severities; custom levels by their number."""
    names = ["DEBUG", "INFO", "LEVEL25", "WARNING", "ERROR", "CRITICAL", "LEVEL5", "LEVEL60"]
    assert [7, 6, 5, 4, 3, 2, 7, 2] == [severity(name) for name in names]
    assert [6, 6, 4] == [severity("whatever"), severity(None), severity(35)]


def test_param_names_are_kept_or_escaped_so_they_can_be_read_back() -> None:
    """Valid names stay; others are %-escaped (reversible with unquote); names that
    cannot fit 32 bytes have none."""
    for key in ("user_id", "a.b", "user id", 'q"=]', "50%", "né", "x" * 32):
        name = param_name(key)
        assert name is not None and len(name) <= 32
        assert all(33 <= ord(c) <= 126 and c not in '=]" ' for c in name)
        assert key == urllib.parse.unquote(name)
    assert "user_id" == param_name("user_id")
    assert "user%20id" == param_name("user id")
    assert [None, None, None] == [param_name(""), param_name("x" * 33), param_name("é" * 11)]


def test_param_values_escape_quote_backslash_and_bracket() -> None:
    """RFC 5424 6.3.3: '"', '\\' and ']' are escaped; other values are compact JSON."""
    assert 'a\\"b\\\\c\\]d[' == param_value('a"b\\c]d[')
    assert ["1.5", "true", "null", '[1,{\\"k\\":\\"v\\"}\\]'] == [
        param_value(v) for v in (1.5, True, None, [1, {"k": "v"}])
    ]


def test_fields_without_a_name_go_into_one_json_parameter() -> None:
    """An empty or over-long field name: the field is kept, in the overflow parameter."""
    line = orjson.dumps({"timestamp": STAMP, "level": "INFO", "message": "m", "k" * 40: 1, "": 2})
    message = _writer().encode(line)
    assert b' %fields="{\\"' + b"k" * 40 + b'\\":1,\\"\\":2}"]' in message
    assert "%fields" == OVERFLOW_PARAM


def test_lines_that_are_not_json_are_sent_as_the_message() -> None:
    """A text formatter's line: an informational message stamped now, no structured data."""
    message = _writer().encode(b"plain line")
    assert message.startswith(b"<14>1 20") and message.endswith(
        b" web-1 shop 42 - - \xef\xbb\xbfplain line"
    )


def test_timestamps_keep_six_fraction_digits_at_most() -> None:
    """Nanoseconds are cut to microseconds (RFC 5424 allows six digits); offsets stay."""
    for stamp, sent in (
        ("2026-01-02T03:04:05.123456789Z", b"2026-01-02T03:04:05.123456Z"),
        ("2026-01-02T03:04:05+01:00", b"2026-01-02T03:04:05+01:00"),
    ):
        line = orjson.dumps({"timestamp": stamp, "message": "m"})
        assert _writer().encode(line).split(b" ")[1] == sent


def test_an_oversize_record_is_cut_to_fit_with_markers() -> None:
    """A record over max_message_bytes becomes one message of at most that size: the
    text and the largest values cut at character boundaries, each with the marker."""
    writer = _writer(max_message_bytes=1000)
    line = orjson.dumps(
        {"timestamp": STAMP, "level": "INFO", "message": "é" * 3000, "a": "]" * 2000, "b": "ok"}
    )
    message, truncated = writer._encode(line)
    assert truncated and len(message) <= 1000
    message.decode("utf-8")  # whole characters only
    assert message.endswith(MARK.encode())
    assert b' a="' + b"\\]" * 10 in message and b'...[truncated\\]" b="ok"]' in message
    # Structured data alone too big: the values share the room.
    many = orjson.dumps({"message": "m", **{f"k{n}": "v" * 500 for n in range(10)}})
    message, truncated = writer._encode(many)
    assert truncated and len(message) <= 1000 and message.count(b"...[truncated\\]") == 10


def _parse(message: bytes) -> tuple[int, list[bytes], dict[str, str], bytes]:
    """An RFC 5424 reader, strict where the writer must be: PRI, the six header fields,
    the structured data (names unescaped, values unescaped, ``%fields`` unpacked) and MSG.
    Raises on anything the grammar does not allow."""
    assert message.startswith(b"<")
    pri_end = message.index(b">")
    pri = int(message[1:pri_end])
    parts = message[pri_end + 1 :].split(b" ", 6)
    header, rest = parts[:6], parts[6]
    assert b"1" == header[0] and all(33 <= c <= 126 for field in header for c in field)
    fields: dict[str, str] = {}
    if rest.startswith(b"-"):
        return pri, header, fields, rest[2:]
    assert rest.startswith(b"[kakashi@32473")
    at = len(b"[kakashi@32473")
    while rest[at : at + 1] == b" ":
        eq = rest.index(b"=", at)
        name = rest[at + 1 : eq].decode("ascii")
        assert 1 <= len(name) <= 32 and not set(name) & set(' ="]')
        assert rest[eq + 1 : eq + 2] == b'"'
        at, value = eq + 2, bytearray()
        while rest[at : at + 1] != b'"':
            if rest[at : at + 1] == b"\\":
                assert rest[at + 1 : at + 2] in (b'"', b"\\", b"]"), "invalid escape"
                at += 1
            else:
                assert rest[at : at + 1] != b"]", "an unescaped ] in a value"
            value.append(rest[at])
            at += 1
        at += 1
        text = value.decode("utf-8")
        if name == OVERFLOW_PARAM and not text.endswith(MARK):  # a cut one is no JSON
            fields.update(json.loads(text))
        else:
            fields[urllib.parse.unquote(name)] = text
    assert rest[at : at + 2] == b"] " or rest[at:] == b"]"
    return pri, header, fields, rest[at + 2 :]


_KEYS = st.text(min_size=0, max_size=40)
_VALUES = st.one_of(
    st.text(max_size=60),
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    st.none(),
    st.lists(st.text(max_size=5)),
)


@settings(max_examples=100, deadline=None)
@given(message=st.text(max_size=80), fields=st.dictionaries(_KEYS, _VALUES, max_size=8))
def test_every_record_reads_back_whole(message: str, fields: dict[str, Any]) -> None:
    """Any message and fields (any names, quotes, brackets, backslashes, non-ASCII,
    control characters): the message parses under the RFC 5424 grammar and gives back
    the message and every field (non-strings as their JSON)."""
    fields = {k: v for k, v in fields.items() if k not in ("timestamp", "message")}
    line = orjson.dumps({"timestamp": STAMP, "level": "INFO", "message": message, **fields})
    _, _, stored, text = _parse(_writer(max_message_bytes=65_000).encode(line))
    assert "\ufeff" + message == text.decode("utf-8")
    expected = {"level": "INFO"} | {
        k: v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in fields.items()
    }
    overflow = {k for k in fields if param_name(k) is None}
    assert {k: v for k, v in expected.items() if k not in overflow} == {
        k: v for k, v in stored.items() if k not in overflow
    }
    assert {k: fields[k] for k in overflow} == {k: stored[k] for k in overflow}


@settings(max_examples=100, deadline=None)
@given(
    size=st.integers(min_value=480, max_value=3000),
    message=st.text(max_size=2000),
    fields=st.dictionaries(st.text(max_size=10), st.text(max_size=800), max_size=12),
)
def test_a_cut_record_still_parses(size: int, message: str, fields: dict[str, str]) -> None:
    """Whatever is cut, the result is at most the limit and still valid RFC 5424 in
    UTF-8: no cut inside a character or an escape, every cut marked."""
    fields = {k: v for k, v in fields.items() if k not in ("timestamp", "message")}
    line = orjson.dumps({"timestamp": STAMP, "message": message, **fields})
    encoded, truncated = _writer(max_message_bytes=size)._encode(line)
    assert len(encoded) <= size
    _, _, stored, text = _parse(encoded)
    if not truncated:
        assert "\ufeff" + message == text.decode("utf-8")
        return
    kept = text.decode("utf-8")
    assert kept == "\ufeff" + message or (
        kept.endswith(MARK) and message.startswith(kept[1 : -len(MARK)])
    )
    overflow = {k: v for k, v in fields.items() if param_name(k) is None}
    originals = {**fields, OVERFLOW_PARAM: orjson.dumps(overflow).decode()}
    for key, value in stored.items():
        original = originals[key]
        assert value == original or (
            value.endswith(MARK) and original.startswith(value[: -len(MARK)])
        )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"protocol": "sctp"}, "protocol must be one of"),
        ({"port": 0}, "port must be"),
        ({"facility": "local9"}, "facility must be one of"),
        ({"facility": 24}, "facility must be"),
        ({"app_name": "my app"}, "app_name must be"),
        ({"msgid": "m" * 33}, "msgid must be"),
        ({"sd_id": "kakashi"}, "sd_id must be"),
        ({"max_message_bytes": 100}, "max_message_bytes must be"),
        ({"max_message_bytes": 70_000}, "max_message_bytes must be"),
        ({"ca_certs": "/x.pem"}, "for protocol='tls' only"),
        ({"timeout": 0}, "timeout must be"),
        ({"retry_budget": -1}, "retry_budget must be"),
    ],
)
def test_bad_settings_are_refused(options: dict[str, Any], message: str) -> None:
    """Bad configuration raises at construction, naming the parameter."""
    with pytest.raises(ValueError, match=message):
        SyslogWriter("127.0.0.1", **{"port": 514, **options})


def test_importing_kakashi_does_not_load_the_syslog_writer() -> None:
    """``import kakashi`` leaves the syslog module (and ssl through it) unloaded."""
    code = "import sys, kakashi, kakashi.writers; print('kakashi.writers.syslog' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "False" == out.stdout.strip()


def test_a_server_that_never_reads_times_out_and_says_what_was_sent() -> None:
    """TCP to a server that accepts and never reads: once the kernel's buffers are full
    the send times out; the error retries exactly the records not handed over whole."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        server.bind(("127.0.0.1", 0))
        server.listen()
        writer = SyslogWriter("127.0.0.1", server.getsockname()[1], "tcp", timeout=0.5)
        line = orjson.dumps({"message": "x" * 7000})
        batch = [line] * 200
        with pytest.raises(DeliveryError) as caught:
            for _ in range(100):
                writer.write(batch)
        error = caught.value
        assert "timeout" == error.reason
        assert {} == error.dropped
        assert tuple(range(writer.sent % 200, 200)) == error.retry
        assert {"timeout": 1} == dict(writer.failures)
        writer.close()


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
def test_a_name_that_does_not_resolve_is_retryable(protocol: str) -> None:
    """A host name that does not resolve (``.invalid`` never does, RFC 6761): every
    record of the batch is to be retried, under the reason ``dns``."""
    writer = SyslogWriter("collector.invalid", 514, protocol, timeout=5)
    with pytest.raises(DeliveryError) as caught:
        writer.write([b'{"message":"a"}', b'{"message":"b"}'])
    assert ("dns", (0, 1), {}) == (caught.value.reason, caught.value.retry, caught.value.dropped)
    assert ({"dns": 1}, 0) == (dict(writer.failures), writer.sent)


def test_a_tls_server_that_never_answers_the_handshake_times_out() -> None:
    """TLS to a port that accepts and says nothing: the handshake is bounded by the
    timeout, and the batch is retryable (``timeout``), not dropped as a TLS failure."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        writer = SyslogWriter("127.0.0.1", server.getsockname()[1], "tls", timeout=0.3)
        with pytest.raises(DeliveryError) as caught:
            writer.write([b'{"message":"a"}'])
    assert ("timeout", (0,)) == (caught.value.reason, caught.value.retry)
    assert ({"timeout": 1}, 0) == (dict(writer.failures), writer.connections)


def test_a_tls_server_that_hangs_up_in_the_handshake_is_retried() -> None:
    """A server that accepts and closes at once (a collector restarting): not a TLS
    verdict on the certificate but a lost connection, retryable, and not reported as TLS."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        writer = SyslogWriter("127.0.0.1", server.getsockname()[1], "tls", timeout=5)

        def hang_up() -> None:
            connection, _ = server.accept()
            connection.close()

        thread = threading.Thread(target=hang_up)
        thread.start()
        with pytest.raises(DeliveryError) as caught:
            writer.write([b'{"message":"a"}'])
        thread.join()
    assert ("connection", (0,), {}) == (
        caught.value.reason,
        caught.value.retry,
        caught.value.dropped,
    )
    assert {"connection": 1} == dict(writer.failures)
    assert not [kind for kind in _errors.error_counts() if kind.startswith("syslog writer")]


def test_connection_refused_is_retryable_and_the_next_batch_connects() -> None:
    """TCP with no one listening: ``connect``, retryable; once a server listens, the
    same writer connects and sends. The server's socket is bound from the start and only
    listens later: a bound socket that does not listen refuses connections, and no other
    process can take the port in between."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        writer = SyslogWriter("127.0.0.1", server.getsockname()[1], "tcp", timeout=5)
        with pytest.raises(DeliveryError) as caught:
            writer.write([b'{"message":"a"}'])
        assert ("connect", (0,)) == (caught.value.reason, caught.value.retry)
        server.listen()
        writer.write([b'{"message":"a"}'])
        connection, _ = server.accept()
        with connection:
            connection.settimeout(5)
            data = b""
            while not data.endswith(b"a"):
                data += connection.recv(4096)
    assert data.startswith(b"%d <14>1 " % (len(data) - len(data.split(b" ")[0]) - 1))
    assert (1, 1) == (writer.sent, writer.connections)
    writer.close()


# -- a real rsyslog -------------------------------------------------------------------------


@dataclasses.dataclass
class Certs:
    """A CA, a server certificate for ``localhost`` signed by it, and an unrelated CA."""

    ca: Path
    server: Path
    key: Path
    other_ca: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """Generated with the openssl CLI: P-256 keys, valid for two days."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    d = tmp_path_factory.mktemp("certs")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    for name in ("ca", "other"):
        _openssl(
            "req",
            "-x509",
            *ec,
            "-keyout",
            f"{d}/{name}.key",
            "-out",
            f"{d}/{name}.pem",
            "-days",
            "2",
            "-subj",
            f"/CN=kakashi test {name}",
        )
    _openssl(
        "req",
        *ec,
        "-keyout",
        f"{d}/server.key",
        "-out",
        f"{d}/server.csr",
        "-subj",
        "/CN=localhost",
    )
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{d}/server.csr",
        "-CA",
        f"{d}/ca.pem",
        "-CAkey",
        f"{d}/ca.key",
        "-CAcreateserial",
        "-out",
        f"{d}/server.pem",
        "-days",
        "2",
        "-extfile",
        f"{d}/ext.cnf",
    )
    return Certs(d / "ca.pem", d / "server.pem", d / "server.key", d / "other.pem")


_CONFIG = """\
global(workDirectory="{work}" maxMessageSize="{max_size}"
       parser.escapeControlCharactersOnReceive="off" net.enableDNS="off"
       defaultNetstreamDriverCAFile="{ca}" defaultNetstreamDriverCertFile="{cert}"
       defaultNetstreamDriverKeyFile="{key}")
module(load="imudp")
module(load="imtcp")
module(load="mmpstrucdata")
template(name="parts" type="list" option.jsonf="on") {{
  property(outname="pri" name="pri" format="jsonf")
  property(outname="timestamp" name="timereported" dateFormat="rfc3339" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="sd" name="structured-data" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
  property(outname="raw" name="rawmsg" format="jsonf")
  property(outname="parsed" name="$!" format="jsonf")
}}
ruleset(name="store") {{
  action(type="mmpstrucdata" sd_name.lowercase="off")
  action(type="omfile" file="{output}" template="parts")
}}
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="store")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="store")
input(type="imtcp" address="127.0.0.1" port="{tls}" ruleset="store"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
"""


class Rsyslog:
    """One rsyslogd in the foreground, its files under *directory*. Its TCP and TLS ports
    are held (:class:`HeldPort`; rsyslogd binds with ``SO_REUSEADDR`` beside the hold)
    until :meth:`close`, so no other process takes them while it is stopped for a
    restart. The UDP port is only probed: a second UDP socket bound to it could take
    the datagrams meant for rsyslogd."""

    def __init__(self, directory: Path, certs: Certs, max_size: int = 8192) -> None:
        self.directory = directory
        self.output = directory / "stored.jsonl"
        self.holds = [HeldPort(), HeldPort()]
        tcp, tls = (held.port for held in self.holds)
        self.ports = {"udp": free_ports(1, socket.SOCK_DGRAM)[0], "tcp": tcp, "tls": tls}
        (directory / "work").mkdir()
        self.config = directory / "rsyslog.conf"
        self.config.write_text(
            _CONFIG.format(
                work=directory / "work",
                max_size=max_size,
                ca=certs.ca,
                cert=certs.server,
                key=certs.key,
                output=self.output,
                **self.ports,
            )
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        """Start rsyslogd and wait (bounded) until every input takes messages."""
        self.starts += 1
        log = open(self.directory / f"rsyslogd-{self.starts}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                RSYSLOGD or "rsyslogd",
                "-n",
                "-f",
                str(self.config),
                "-i",
                str(self.directory / "rsyslogd.pid"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        # Only detects a daemon that never comes up: on a loaded machine (the soak runs
        # three suites like this one at once) a start took 23 s and one passed 30 s.
        deadline = time.monotonic() + 120
        probe = f"probe-{self.starts}"
        ready = {"udp probe stored": False, "tcp accepts": False, "tls accepts": False}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"rsyslogd exited: {self.log()}")
                udp.sendto(
                    f"<14>1 - - probe - {probe} -".encode(), ("127.0.0.1", self.ports["udp"])
                )
                ready["udp probe stored"] = any(r["msgid"] == probe for r in self._read())
                ready["tcp accepts"] = self._accepts(self.ports["tcp"])
                ready["tls accepts"] = self._accepts(self.ports["tls"], tls=True)
                if all(ready.values()):
                    return
                time.sleep(0.05)
        raise RuntimeError(f"rsyslogd did not start in 120 s ({ready}): {self.log()}")

    @staticmethod
    def _accepts(port: int, tls: bool = False) -> bool:
        """Whether *port* takes a connection (and a TLS handshake, ended cleanly)."""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as raw:
                if tls:
                    context = ssl.create_default_context()
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                    with context.wrap_socket(raw) as secured:
                        try:
                            secured.unwrap()  # close_notify: rsyslog logs no error
                        except OSError:
                            pass
        except OSError:
            return False
        return True

    def stop(self) -> None:
        """SIGTERM, and wait for it to exit (SIGKILL after 10 s)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def close(self) -> None:
        """Stop it for good and let its ports go."""
        self.stop()
        for held in self.holds:
            held.close()

    def log(self) -> str:
        """What rsyslogd printed, every run."""
        return "".join(p.read_text(errors="replace") for p in sorted(self.directory.glob("*.log")))

    def _read(self) -> list[dict[str, Any]]:
        if not self.output.exists():
            return []
        data = self.output.read_bytes()
        return [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines()]

    def messages(self, count: int, app: str = APP) -> list[dict[str, Any]]:
        """The stored messages of *app*, once there are *count* (waits up to 20 s; a
        half-second more when they are there, to see any extra one)."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = [r for r in self._read() if r["app"] == app]
            if len(found) >= count:
                time.sleep(0.5)
                break
            time.sleep(0.05)
        return [r for r in self._read() if r["app"] == app]


@pytest.fixture
def rsyslog(tmp_path: Path, certs: Certs) -> Iterator[Rsyslog]:
    """A running rsyslogd with UDP, TCP and TLS inputs; stopped after the test."""
    if RSYSLOGD is None:
        pytest.skip("rsyslogd is not installed (apt-get install rsyslog rsyslog-gnutls)")
    if not GTLS:
        pytest.skip("rsyslog's TLS driver is not installed (apt-get install rsyslog-gnutls)")
    server = Rsyslog(tmp_path, certs, max_size=4096)
    try:
        server.start()
        yield server
    finally:
        server.close()


def _fields(stored: dict[str, Any]) -> dict[str, Any]:
    """The fields as rsyslog parsed the structured data, names unescaped, the overflow
    parameter unpacked."""
    parsed = json.loads(stored["parsed"])["rfc5424-sd"]["kakashi@32473"]
    fields: dict[str, Any] = {}
    for name, value in parsed.items():
        if name == OVERFLOW_PARAM:
            fields.update(json.loads(value))
        else:
            fields[urllib.parse.unquote(name)] = value
    return fields


def _same_fields(line: dict[str, Any], fields: dict[str, Any]) -> bool:
    expected = {k: v for k, v in line.items() if k not in ("timestamp", "message")}
    if expected.keys() != fields.keys():
        return False
    return all(
        fields[k] == v if isinstance(v, str) or k == OVERFLOW_PARAM else json.loads(fields[k]) == v
        for k, v in expected.items()
    )


def _writer_stats(pipeline: Any, writer: Any) -> dict[str, Any]:
    return next(s for s in pipeline.backend.get_stats()["writers"] if s["writer"] == repr(writer))


TRICKY = [
    ("plain ascii", {}),
    ("non-ASCII: héllo wörld ✓ 日本語 🎉", {"who": "Zoë", "emoji": "🎉"}),
    ("two\nlines\r\nand a tab\t", {"sql": 'SELECT "x" FROM t WHERE a = \'b]\' AND c = "\\"'}),
    ('brackets ] [ and quotes " and \\ backslashes', {"path": 'C:\\dir\\]x"', "q": '"]'}),
    ("nested", {"params": {"id": 7, "tags": ["a", "b"]}, "n": 3, "ok": True, "none": None}),
    ("odd names", {"user id": 1, "a=b": "c", "é": "e", "k" * 40: "long", "50%": "half"}),
]


@pytest.mark.parametrize("protocol", ["udp", "tcp", "tls"])
def test_every_record_arrives_intact(rsyslog: Rsyslog, certs: Certs, protocol: str) -> None:
    """Through the async backend to rsyslog: message text (non-ASCII, newlines), PRI,
    timestamp and header as sent, and every field recoverable from the structured data
    as rsyslog itself parsed it."""
    options = {"ca_certs": certs.ca} if protocol == "tls" else {}
    host = "localhost" if protocol == "tls" else "127.0.0.1"
    writer = SyslogWriter(
        host,
        rsyslog.ports[protocol],
        protocol,
        app_name=APP,
        hostname="web-1",
        msgid="m1",
        **options,
    )
    keeper = Keeper()
    pipeline = keeping_pipeline(writer, keeper)
    logger = pipeline.get_logger("app.shop")
    for index, (message, fields) in enumerate(TRICKY):
        level = ("info", "warning", "error")[index % 3]
        getattr(logger, level)(message, **fields)
    assert pipeline.backend.flush(10).complete
    stored = rsyslog.messages(len(TRICKY))
    assert len(TRICKY) == len(stored) == writer.sent
    for line, record in zip(keeper.lines, stored, strict=True):
        assert "\ufeff" + line["message"] == record["msg"]
        assert str(8 + {"INFO": 6, "WARNING": 4, "ERROR": 3}[line["level"]]) == record["pri"]
        assert line["timestamp"].replace("Z", "") == record["timestamp"][:26]
        assert ("web-1", APP, str(os.getpid()), "m1") == (
            record["hostname"],
            record["app"],
            record["procid"],
            record["msgid"],
        )
        assert _same_fields(line, _fields(record)), (line, record)
    stats = _writer_stats(pipeline, writer)
    assert (len(TRICKY), 0) == (stats["records"], stats["dropped"])
    assert (len(TRICKY), 0) == (stats["delivery"]["sent"], stats["delivery"]["truncated"])
    pipeline.backend.shutdown(5)


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
def test_an_oversize_record_is_stored_cut_with_its_marker_and_counted(
    rsyslog: Rsyslog, protocol: str
) -> None:
    """rsyslog's maxMessageSize is 4096; the writer's limit, 4000, is below it: a 20 kB
    record is stored once, cut to 4000 bytes with the marker, and counted; the records
    around it are whole and no garbage record follows."""
    writer = SyslogWriter(
        "127.0.0.1", rsyslog.ports[protocol], protocol, app_name=APP, max_message_bytes=4000
    )
    keeper = Keeper()
    pipeline = keeping_pipeline(writer, keeper)
    logger = pipeline.get_logger("big")
    logger.info("before")
    logger.info("ü" * 10_000, blob="]" * 3000)
    logger.info("after")
    assert pipeline.backend.flush(10).complete
    before, big, after = rsyslog.messages(3)
    assert ["\ufeffbefore", "\ufeffafter"] == [before["msg"], after["msg"]]
    assert len(big["raw"].encode()) <= 4000
    assert big["msg"].startswith("\ufeffüü") and big["msg"].endswith(MARK)
    assert _fields(big)["blob"].endswith(MARK) and _fields(big)["blob"].startswith("]]]")
    assert (1, 3) == (writer.truncated, writer.sent)
    assert 1 == _writer_stats(pipeline, writer)["delivery"]["truncated"]  # in get_async_stats
    assert 3 == len(rsyslog.messages(3))
    pipeline.backend.shutdown(5)


@pytest.mark.parametrize("protocol", ["tcp", "tls"])
def test_a_restart_is_followed_by_a_reconnection_and_nothing_goes_uncounted(
    rsyslog: Rsyslog, certs: Certs, protocol: str
) -> None:
    """rsyslog stops with the writer's connection open: the writer sees the connection
    closed before its next batch; while rsyslog is down, records are counted as dropped
    (reason ``connect``); once it is back, a new connection delivers. Logged = stored +
    dropped."""
    options = {"ca_certs": certs.ca} if protocol == "tls" else {}
    host = "localhost" if protocol == "tls" else "127.0.0.1"
    writer = SyslogWriter(
        host, rsyslog.ports[protocol], protocol, app_name=APP, max_error_retries=0, **options
    )
    pipeline = keeping_pipeline(writer)
    logger = pipeline.get_logger("restart")
    for n in range(50):
        logger.info("first", n=n)
    assert pipeline.backend.flush(10).complete
    assert 50 == len(rsyslog.messages(50))
    rsyslog.stop()
    logger.info("while down")
    pipeline.backend.flush(10)
    rsyslog.start()
    for n in range(50):
        logger.info("second", n=n)
    assert pipeline.backend.flush(10).complete
    stored = rsyslog.messages(101)
    logged = [r for r in stored if _fields(r)["logger"] == "restart"]
    (notice,) = (r for r in stored if _fields(r)["logger"] == "kakashi")
    stats = _writer_stats(pipeline, writer)
    assert [f"\ufeff{w}" for w in ["first"] * 50 + ["second"] * 50] == [r["msg"] for r in logged]
    assert "1" == _fields(notice)["dropped"]  # the backend's notice of the loss, sent too
    assert (101, 1) == (stats["records"], stats["dropped"])
    assert 101 == len(logged) + stats["dropped"]
    assert (2, {"connect": 1}) == (writer.connections, dict(writer.failures))
    assert {"connect": 1} == stats["dropped_by_reason"]
    assert {"connect": 1} == pipeline.backend.get_stats()["write_error_by_reason"]
    assert {"sent": 101, "truncated": 0, "connections": 2, "failed:connect": 1} == {
        k: v for k, v in stats["delivery"].items() if k != "bytes_sent"
    }
    pipeline.backend.shutdown(5)


def test_records_logged_while_rsyslog_is_down_are_delivered_by_a_retry(rsyslog: Rsyslog) -> None:
    """With retries to spare, a batch that found rsyslog down is delivered once it is
    back (the retry opens a new connection): stored, not dropped."""
    writer = SyslogWriter(
        "127.0.0.1",
        rsyslog.ports["tcp"],
        "tcp",
        app_name=APP,
        max_error_retries=1000,
        error_retry_delay=0.05,
        max_delay=0.2,
    )
    pipeline = keeping_pipeline(writer)
    logger = pipeline.get_logger("retry")
    logger.info("up")
    assert pipeline.backend.flush(10).complete
    # Stored before the stop: a record rsyslogd has not read from its socket when it is
    # stopped is lost with the connection (TCP syslog has no acknowledgement).
    assert ["\ufeffup"] == [r["msg"] for r in rsyslog.messages(1)]
    rsyslog.stop()
    logger.info("down", n=1)
    deadline = time.monotonic() + 20
    while not writer.failures["connect"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert writer.failures["connect"] >= 1
    rsyslog.start()
    assert pipeline.backend.flush(20).complete
    assert ["\ufeffup", "\ufeffdown"] == [r["msg"] for r in rsyslog.messages(2)]
    stats = _writer_stats(pipeline, writer)
    assert (2, 0, 2) == (stats["records"], stats["dropped"], writer.connections)
    pipeline.backend.shutdown(5)


@pytest.mark.parametrize("case", ["unknown CA", "wrong host name"])
def test_a_certificate_that_does_not_verify_is_refused_counted_and_reported_once(
    rsyslog: Rsyslog, certs: Certs, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TLS with verification on (the default): a server certificate from another CA, or
    one that does not name the host, is refused; nothing reaches rsyslog, every record is
    counted as dropped at once (one handshake per batch, no retry), and the failure is
    reported once (and counted each time)."""
    report = io.StringIO()
    monkeypatch.setattr(_errors, "stream", report)
    if case == "unknown CA":
        host, ca = "localhost", certs.other_ca
    else:
        host, ca = "127.0.0.1", certs.ca  # the certificate names localhost only
    writer = SyslogWriter(
        host, rsyslog.ports["tls"], "tls", app_name=APP, ca_certs=ca
    )  # the default retries: a TLS verdict is not retried anyway
    pipeline = keeping_pipeline(writer)
    logger = pipeline.get_logger("tls")
    for batch in range(3):
        for n in range(5):
            logger.info("secret", batch=batch, n=n)
        pipeline.backend.flush(10)
    stats = _writer_stats(pipeline, writer)
    totals = pipeline.backend.get_stats()
    assert (15, 0, 15) == (
        totals["messages_enqueued"],
        totals["messages_written"],
        totals["messages_dropped"],
    )
    # the 15 records, and the loss notices the second and third batches carried
    assert (0, 17) == (stats["records"], stats["dropped"])
    assert {"tls": 17} == stats["dropped_by_reason"]
    assert {"tls": 15} == totals["write_error_by_reason"]
    assert 3 == stats["delivery"]["failed:tls"]
    assert ({"tls": 3}, 0, 0) == (dict(writer.failures), writer.sent, writer.connections)
    kind = f"syslog writer tls://{host}:{rsyslog.ports['tls']}: SSLCertVerificationError"
    assert 3 == _errors.error_counts()[kind]
    assert 1 == report.getvalue().count("syslog writer tls://")
    assert "certificate verify failed" in report.getvalue()
    assert [] == rsyslog.messages(0)
    pipeline.backend.shutdown(5)


def test_verify_false_accepts_a_self_signed_server(rsyslog: Rsyslog) -> None:
    """``verify=False`` (tests only) connects without checking the certificate."""
    writer = SyslogWriter("127.0.0.1", rsyslog.ports["tls"], "tls", app_name=APP, verify=False)
    writer.write([orjson.dumps({"timestamp": STAMP, "level": "INFO", "message": "hi"})])
    assert ["\ufeffhi"] == [r["msg"] for r in rsyslog.messages(1)]
    writer.close()


def test_a_forked_child_opens_its_own_connection(rsyslog: Rsyslog) -> None:
    """After fork the child does not write into the parent's connection: it connects
    itself, and its messages carry its own PROCID."""
    writer = SyslogWriter("127.0.0.1", rsyslog.ports["tcp"], "tcp", app_name=APP)
    writer.write([orjson.dumps({"message": "parent"})])
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            writer.write([orjson.dumps({"message": "child"})])
            code = 0 if writer.connections == 2 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert 0 == os.waitstatus_to_exitcode(status)
    writer.write([orjson.dumps({"message": "parent again"})])
    stored = {r["msg"]: r["procid"] for r in rsyslog.messages(3)}
    assert {
        "\ufeffparent": str(os.getpid()),
        "\ufeffchild": str(pid),
        "\ufeffparent again": str(os.getpid()),
    } == stored
    assert 1 == writer.connections
    writer.close()


def test_udp_sends_one_datagram_per_record(rsyslog: Rsyslog) -> None:
    """UDP: each record its own datagram, newlines inside a message kept."""
    writer = SyslogWriter("127.0.0.1", rsyslog.ports["udp"], "udp", app_name=APP, bom=False)
    writer.write([orjson.dumps({"message": f"line {n}\nsecond"}) for n in range(20)])
    assert [f"line {n}\nsecond" for n in range(20)] == [r["msg"] for r in rsyslog.messages(20)]
    assert 20 == writer.sent
    writer.close()


def test_a_closed_tls_writer_says_goodbye_and_connects_again(rsyslog: Rsyslog) -> None:
    """Closing a TLS writer ends the connection cleanly (close_notify), and a closed
    writer connects again when written to."""
    writer = SyslogWriter(
        "localhost", rsyslog.ports["tls"], "tls", app_name=APP, ca_certs=None, verify=False
    )
    writer.write([orjson.dumps({"message": "one"})])
    writer.close()
    writer.write([orjson.dumps({"message": "two"})])
    writer.close()
    assert ["\ufeffone", "\ufefftwo"] == [r["msg"] for r in rsyslog.messages(2)]
    assert 2 == writer.connections
    assert "non-properly terminated" not in rsyslog.log()
    assert not [t for t in threading.enumerate() if t.name.startswith("kakashi-")]
