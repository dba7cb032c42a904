"""Syslog to a collector (rsyslog, syslog-ng, a SIEM): RFC 5424 over UDP, TCP or TLS.

:class:`SyslogWriter` turns each JSON line of a batch into one RFC 5424 message:

- PRI from the writer's facility and the record's level (``DEBUG`` 7 debug, ``INFO`` 6
  informational, ``LEVEL21`` to ``LEVEL29`` 5 notice, ``WARNING`` 4, ``ERROR`` 3,
  ``CRITICAL`` 2), VERSION 1;
- TIMESTAMP: the record's own ``timestamp`` (RFC 3339, UTC, microseconds);
- HOSTNAME, APP-NAME, PROCID, MSGID: the writer's settings (PROCID: the process id);
- STRUCTURED-DATA: one element, ``[kakashi@32473 logger="..." level="..." key="value" ...]``,
  carrying every field of the record but the timestamp and the message;
- MSG: the message, UTF-8, after a byte order mark (RFC 5424 section 6.4).

It is sent over UDP (one datagram per record, RFC 5426), TCP with octet counting
(``LEN SP MSG``, RFC 6587 section 3.4.1) or TLS (RFC 5425; the server's certificate and
host name are verified by default), using only the standard library's ``socket`` and
``ssl``. A record above ``max_message_bytes`` is cut to fit, with a marker, and counted
in :attr:`SyslogWriter.truncated`: never split into two messages (a receiver would parse
the rest as a second, garbage record).

What was not sent is reported to the async backend as a
:class:`~kakashi.writers.delivery.DeliveryError` (see the Syslog page for what "sent"
can and cannot promise over each transport).
"""

from __future__ import annotations

import bisect
import functools
import os
import re
import select
import socket
import ssl
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, Final

import orjson

from kakashi import _errors
from kakashi._durations import MAX_WAIT, check_seconds
from kakashi._locks import fork_safe_lock
from kakashi.writers.delivery import DeliveryError, set_retry_policy

__all__ = [
    "FACILITIES",
    "PROTOCOLS",
    "SyslogWriter",
    "param_name",
    "param_value",
    "severity",
]

#: The transports :class:`SyslogWriter` speaks, with their IANA-assigned default ports.
PROTOCOLS: Final = {"udp": 514, "tcp": 514, "tls": 6514}

#: Facility names (RFC 5424 table 1, with the names syslog.conf uses) and their codes.
FACILITIES: Final = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "lpr": 6,
    "news": 7,
    "uucp": 8,
    "cron": 9,
    "authpriv": 10,
    "ftp": 11,
    "ntp": 12,
    "audit": 13,
    "alert": 14,
    "clock": 15,
    **{f"local{n}": 16 + n for n in range(8)},
}

_SEVERITIES: Final = {
    "CRITICAL": 2,
    "FATAL": 2,
    "ERROR": 3,
    "WARNING": 4,
    "WARN": 4,
    "NOTICE": 5,
    "INFO": 6,
    "DEBUG": 7,
    "TRACE": 7,
}
_INFORMATIONAL: Final = 6
_BOM: Final = b"\xef\xbb\xbf"
_NIL: Final = "-"
#: Appended where a message or a structured-data value was cut (escaped in a value).
_MARK: Final = b"...[truncated]"
_MARK_IN_VALUE: Final = b"...[truncated\\]"
#: The parameter that carries, as one JSON object, the fields whose names cannot be a
#: PARAM-NAME even escaped (empty, or longer than 32 bytes). Escaping never makes ``%``
#: followed by ``f``, so no field's own name can take it.
OVERFLOW_PARAM: Final = "%fields"
#: RFC 5426: UDP over IPv4 carries at most 65,507 bytes of payload.
_UDP_MAX: Final = 65_507
_STREAM_MAX: Final = 16 * 1024 * 1024
#: RFC 5426 section 3.2: every receiver takes 480 bytes; less cannot hold a header.
_SMALLEST: Final = 480
_TIMESTAMP = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?\d*(Z|[+-]\d\d:\d\d)")
# SD-NAME (RFC 5424 section 6.3): 1 to 32 printable US-ASCII characters but = SP ] "
_SD_NAME = re.compile(r"[!#-<>-\\^-~]{1,32}")
_SD_ID = re.compile(r"[!#-?A-\\^-~]{1,32}@[0-9]+(\.[0-9]+)*")


def severity(level: object) -> int:
    """The RFC 5424 severity of a record's *level* (a name such as ``"WARNING"`` or
    ``"LEVEL25"``, or a number): 7 debug up to 2 critical; 6 (informational) when the
    level is unknown."""
    if isinstance(level, str):
        name = level.upper()
        known = _SEVERITIES.get(name)
        if known is not None:
            return known
        if not name.startswith("LEVEL") or not name[5:].isdigit():
            return _INFORMATIONAL
        level = int(name[5:])
    if isinstance(level, bool) or not isinstance(level, (int, float)):
        return _INFORMATIONAL
    if level < 20:
        return 7
    if level == 20:
        return 6
    if level < 30:
        return 5
    if level < 40:
        return 4
    return 3 if level < 50 else 2


@functools.lru_cache(maxsize=4096)
def param_name(key: str) -> str | None:
    """The PARAM-NAME for a field named *key*, or ``None`` when it has none.

    A name that is already valid (printable US-ASCII but ``=``, space, ``]`` and ``"``,
    at most 32 bytes) and has no ``%`` is kept. Otherwise every byte of its UTF-8 that is
    not allowed, and ``%`` itself, is written ``%XX`` (``user id`` -> ``user%20id``), which
    a reader can undo with ``urllib.parse.unquote``. A name that is empty or longer
    than 32 bytes even so has no PARAM-NAME: its field goes into :data:`OVERFLOW_PARAM`.
    """
    if "%" not in key and _SD_NAME.fullmatch(key):
        return key
    escaped = "".join(
        chr(byte) if 33 <= byte <= 126 and byte not in b'=]"%' else f"%{byte:02X}"
        for byte in key.encode("utf-8", "surrogatepass")
    )
    return escaped if 0 < len(escaped) <= 32 else None


def param_value(value: object) -> str:
    """A field's value as PARAM-VALUE text: a string as it is, anything else as its
    compact JSON (``250``, ``true``, ``null``, ``{"id":7}``), then ``"``, ``\\`` and ``]``
    escaped with a backslash (RFC 5424 section 6.3.3)."""
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _printable(text: str, limit: int, what: str, *, strict: bool) -> str:
    """*text* as a header field: printable US-ASCII, at most *limit* bytes. Strict (a
    setting): a ValueError; otherwise (the machine's host name) other bytes become ``_``."""
    if strict:
        if not re.fullmatch(rf"[!-~]{{1,{limit}}}", text):
            raise ValueError(
                f"{what} must be 1 to {limit} printable US-ASCII characters without "
                f"spaces, got {text!r}"
            )
        return text
    cleaned = "".join(c if "!" <= c <= "~" else "_" for c in text)[:limit]
    return cleaned or _NIL


def _cut(data: bytes, size: int, *, escaped: bool) -> bytes:
    """The first *size* bytes of *data* or fewer: never the start of a UTF-8 sequence
    without its end, nor (in an *escaped* value) a backslash without what it escapes."""
    if size <= 0:
        return b""
    while 0 < size < len(data) and data[size] & 0xC0 == 0x80:
        size -= 1
    head = data[:size]
    if escaped:
        slashes = len(head) - len(head.rstrip(b"\\"))
        if slashes % 2:
            head = head[:-1]
    return head


class SyslogWriter:
    """Send each record as an RFC 5424 message to a syslog collector (see the module
    description for the message's parts).

    Args:
        host: the collector's name or address.
        port: its port (default: 514 for UDP and TCP, 6514 for TLS).
        protocol: ``"udp"``, ``"tcp"`` (octet counting, RFC 6587) or ``"tls"`` (RFC 5425).
        app_name: APP-NAME (default: the program's file name); up to 48 characters.
        hostname: HOSTNAME (default: this machine's name); up to 255 characters.
        facility: a name of :data:`FACILITIES` or a code from 0 to 23 (default ``"user"``).
        procid: PROCID (default: the process id, read again in a forked child).
        msgid: MSGID (default: none, ``-``); up to 32 characters.
        sd_id: the structured-data element's SD-ID: a name, ``@``, and a private
            enterprise number. The default uses 32473, the number IANA reserves for
            documentation (RFC 5612); an organisation with its own number should use it.
        bom: write a byte order mark before MSG, as RFC 5424 asks of UTF-8 messages.
            rsyslog keeps it as the first character of ``%msg%``; ``False`` leaves it out.
        max_message_bytes: the largest message sent (without the TCP octet count); larger
            records are cut to fit, with a marker, and counted in :attr:`truncated`. Keep it
            at most the collector's limit (rsyslog's ``maxMessageSize``, 8 KiB by
            default). From 480; for UDP at most 65,507.
        ca_certs: a CA bundle to verify the server against instead of the system's (TLS).
        certfile, keyfile: this client's certificate and key, for servers that ask (TLS).
        verify: check the server's certificate and that it names *host* (TLS; on by
            default, ``False`` is for tests against self-signed servers only).
        timeout: seconds a connection, a TLS handshake or a send may take.
        max_error_retries, error_retry_delay, max_delay, retry_budget: this writer's
            retry policy (see :class:`~kakashi.core.async_backend.AsyncConfig`); ``None``
            takes the backend's.

    Raises:
        ValueError: an unknown protocol or facility, a header field or SD-ID that RFC 5424
            does not allow, a size or timeout out of range, TLS files given for another
            protocol (each names the parameter).
        OSError: a TLS file cannot be read (``ssl.SSLError`` if it is not a certificate).
    """

    #: Delivered off the workers' turn, on a thread of its own.
    concurrent = True

    def __init__(
        self,
        host: str,
        port: int | None = None,
        protocol: str = "udp",
        *,
        app_name: str | None = None,
        hostname: str | None = None,
        facility: str | int = "user",
        procid: str | None = None,
        msgid: str | None = None,
        sd_id: str = "kakashi@32473",
        bom: bool = True,
        max_message_bytes: int = 8192,
        ca_certs: str | os.PathLike[str] | None = None,
        certfile: str | os.PathLike[str] | None = None,
        keyfile: str | os.PathLike[str] | None = None,
        verify: bool = True,
        timeout: float = 10.0,
        max_error_retries: int | None = None,
        error_retry_delay: float | None = None,
        max_delay: float | None = None,
        retry_budget: float | None = None,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a non-empty str, got {host!r}")
        if port is None:
            port = PROTOCOLS[protocol]
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"port must be an int from 1 to 65535, got {port!r}")
        if isinstance(facility, str):
            if facility not in FACILITIES:
                raise ValueError(
                    f"facility must be one of {', '.join(FACILITIES)} or 0 to 23, got {facility!r}"
                )
            facility = FACILITIES[facility]
        elif isinstance(facility, bool) or not isinstance(facility, int) or not 0 <= facility <= 23:
            raise ValueError(f"facility must be a facility name or 0 to 23, got {facility!r}")
        if not _SD_ID.fullmatch(sd_id) or len(sd_id) > 32:
            raise ValueError(
                "sd_id must be name@enterprise-number, at most 32 printable US-ASCII "
                f"characters without '=', ' ', ']' or '\"', got {sd_id!r}"
            )
        largest = _UDP_MAX if protocol == "udp" else _STREAM_MAX
        if (
            isinstance(max_message_bytes, bool)
            or not isinstance(max_message_bytes, int)
            or not _SMALLEST <= max_message_bytes <= largest
        ):
            raise ValueError(
                f"max_message_bytes must be an int from {_SMALLEST} to {largest} for "
                f"{protocol}, got {max_message_bytes!r}"
            )
        if protocol != "tls" and any(f is not None for f in (ca_certs, certfile, keyfile)):
            raise ValueError("ca_certs, certfile and keyfile are for protocol='tls' only")
        if keyfile is not None and certfile is None:
            raise ValueError("keyfile needs certfile")
        self.timeout = check_seconds("timeout", timeout, at_most=MAX_WAIT)
        set_retry_policy(
            self,
            max_error_retries=max_error_retries,
            error_retry_delay=error_retry_delay,
            max_delay=max_delay,
            retry_budget=retry_budget,
        )

        if app_name is None:
            program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
            app_name = _printable(program or "python", 48, "app_name", strict=False)
        self.app_name = _printable(app_name, 48, "app_name", strict=True)
        if hostname is None:
            self.hostname = _printable(socket.gethostname(), 255, "hostname", strict=False)
        else:
            self.hostname = _printable(hostname, 255, "hostname", strict=True)
        self.procid = None if procid is None else _printable(procid, 128, "procid", strict=True)
        self.msgid = _NIL if msgid is None else _printable(msgid, 32, "msgid", strict=True)
        self.host = host
        self.port = port
        self.protocol = protocol
        self.facility = facility
        self.sd_id = sd_id
        self.bom = bool(bom)
        self.max_message_bytes = max_message_bytes
        self._context: ssl.SSLContext | None = None
        if protocol == "tls":
            context = ssl.create_default_context(
                cafile=None if ca_certs is None else os.fspath(ca_certs)
            )
            if not verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if certfile is not None:
                context.load_cert_chain(
                    os.fspath(certfile), None if keyfile is None else os.fspath(keyfile)
                )
            self._context = context
        # The header after the timestamp, made again for each process (its PROCID).
        self._middle = b""
        self._middle_pid = -1
        self._prefix = b"[" + sd_id.encode()
        # The longest header this writer makes (a seven-digit PROCID) must leave room.
        head = len(f"<191>1 {'0' * 32} {self._header().decode()}") + 7
        if max_message_bytes < head + 1 + len(_BOM) + 2 * len(_MARK):
            raise ValueError(
                f"max_message_bytes must leave room after the header ({head} bytes with "
                f"these settings), got {max_message_bytes!r}"
            )
        # Fork-safe: a child forked while a worker was sending starts with it released.
        self._lock = fork_safe_lock()
        self._socket: socket.socket | None = None
        self._socket_pid = -1
        self._address: Any = None
        #: Records handed whole to the operating system.
        self.sent = 0
        #: Bytes of those records, TCP framing included.
        self.bytes_sent = 0
        #: Records cut to fit ``max_message_bytes``.
        self.truncated = 0
        #: TCP or TLS connections opened, the first one included (more means reconnects).
        self.connections = 0
        #: Failed sends and connections, by reason (``"connect"``, ``"tls"``...).
        self.failures: dict[str, int] = Counter()

    # -- the message ----------------------------------------------------------------------

    def encode(self, line: bytes) -> bytes:
        """The RFC 5424 message for one formatted record (a JSON line; any other line is
        sent as the MSG of an informational message stamped now)."""
        return self._encode(line)[0]

    def _encode(self, line: bytes) -> tuple[bytes, bool]:
        """The message for *line*, and whether it was cut to fit."""
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            text = line.decode("utf-8", "replace").encode()
            return self._assemble(_INFORMATIONAL, None, [], text)
        stamp = record.pop("timestamp", None)
        message = record.pop("message", "")
        if type(message) is not str:
            message = orjson.dumps(message).decode()
        params: list[tuple[str, str]] = []
        overflow: dict[str, Any] | None = None
        for key, value in record.items():
            name = param_name(key)
            if name is None:
                if overflow is None:
                    overflow = {}
                overflow[key] = value
                continue
            # param_value, inlined: most values need no escape and are strings already.
            shown = value if type(value) is str else orjson.dumps(value).decode()
            if "\\" in shown or '"' in shown or "]" in shown:
                shown = shown.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")
            params.append((name, shown))
        if overflow:
            params.append((OVERFLOW_PARAM, param_value(overflow)))
        stamp_bytes = stamp.encode() if type(stamp) is str else None
        text = message.encode("utf-8", "replace")
        return self._assemble(severity(record.get("level")), stamp_bytes, params, text)

    def _assemble(
        self, level: int, stamp: bytes | None, params: list[tuple[str, str]], text: bytes
    ) -> tuple[bytes, bool]:
        head = b"<%d>1 %s %s" % (self.facility * 8 + level, _timestamp(stamp), self._header())
        if params:
            joined = "".join([f' {name}="{value}"' for name, value in params])
            sd = b"%s%s]" % (self._prefix, joined.encode("utf-8", "replace"))
        else:
            sd = b"-"
        bom = _BOM if self.bom else b""
        size = len(head) + len(sd) + 1 + len(bom) + len(text)
        if size <= self.max_message_bytes:
            return b"%s%s %s%s" % (head, sd, bom, text), False
        # Too large: cut, never split. The message text keeps up to half the room (more
        # when the structured data needs less), the structured data the rest, its
        # longest values cut first; leftover room goes back to the text.
        room = self.max_message_bytes - len(head) - 1 - len(bom)
        share = max(room // 2, room - len(sd))
        if len(sd) > room - min(share, len(text)):
            names = [f" {name}=".encode() for name, _ in params]
            values = [value.encode("utf-8", "replace") for _, value in params]
            sd = self._shrink(names, values, room - min(share, len(text)))
        keep = room - len(sd)
        if len(text) > keep:
            text = _cut(text, keep - len(_MARK), escaped=False) + _MARK
        return b"%s%s %s%s" % (head, sd, bom, text), True

    def _structured_data(self, names: list[bytes], values: list[bytes]) -> bytes:
        if not names:
            return b"-"
        parts = [self._prefix]
        for name, value in zip(names, values, strict=True):
            parts += (name, b'"', value, b'"')
        parts.append(b"]")
        return b"".join(parts)

    def _shrink(self, names: list[bytes], values: list[bytes], room: int) -> bytes:
        """The structured data in at most *room* bytes: every value longer than a cap cut
        to it (with the marker), the largest cap that fits; if even the shortest values
        do not fit, the last parameters left out."""
        fixed = len(self._prefix) + 1 + sum(len(name) + 2 for name in names)
        cap_low, cap_high = len(_MARK_IN_VALUE), max(len(value) for value in values)
        if fixed + sum(min(len(v), cap_low) for v in values) > room:
            while names and fixed + sum(min(len(v), cap_low) for v in values) > room:
                fixed -= len(names.pop()) + 2
                values.pop()
            if not names:
                return b"-"
        while cap_low < cap_high:  # the largest cap whose values fit
            cap = (cap_low + cap_high + 1) // 2
            if fixed + sum(min(len(v), cap) for v in values) <= room:
                cap_low = cap
            else:
                cap_high = cap - 1
        cut = [
            v
            if len(v) <= cap_low
            else _cut(v, cap_low - len(_MARK_IN_VALUE), escaped=True) + _MARK_IN_VALUE
            for v in values
        ]
        return self._structured_data(names, cut)

    def _header(self) -> bytes:
        """HOSTNAME APP-NAME PROCID MSGID, and the space before STRUCTURED-DATA."""
        pid = os.getpid()
        if self._middle_pid != pid:
            procid = self.procid or str(pid)
            self._middle = f"{self.hostname} {self.app_name} {procid} {self.msgid} ".encode()
            self._middle_pid = pid
        return self._middle

    # -- sending --------------------------------------------------------------------------

    def write(self, batch: Sequence[bytes]) -> None:
        """Send every record of *batch*, in order (UDP: a datagram each; TCP and TLS:
        octet-counted frames on one connection, opened or reopened as needed).

        Raises:
            DeliveryError: the records from the first that was not sent on: retryable
                (``"dns"``, ``"connect"``, ``"timeout"``, ``"connection"``), or dropped
                when the server's certificate does not verify (``"tls"``).
        """
        if not batch:
            return
        messages = []
        cut = 0
        for line in batch:
            message, truncated = self._encode(line)
            messages.append(message)
            cut += truncated
        with self._lock:
            self.truncated += cut
            if self.protocol == "udp":
                self._send_datagrams(messages)
            else:
                self._send_frames(messages)

    def _fail(self, size: int, start: int, reason: str, exc: BaseException) -> DeliveryError:
        self.failures[reason] += 1
        return DeliveryError.whole(size, reason, retryable=True, start=start, detail=repr(exc))

    def _send_datagrams(self, messages: list[bytes]) -> None:
        sock = self._datagram_socket(len(messages))
        for index, message in enumerate(messages):
            try:
                sock.sendto(message, self._address)
            except OSError as exc:
                self._discard()  # the address is looked up again for the next try
                raise self._fail(len(messages), index, _reason(exc), exc) from exc
            self.sent += 1
            self.bytes_sent += len(message)

    def _send_frames(self, messages: list[bytes]) -> None:
        frames = [b"%d %s" % (len(message), message) for message in messages]
        ends = []
        total = 0
        for frame in frames:
            total += len(frame)
            ends.append(total)
        data = memoryview(b"".join(frames))
        sock = self._stream_socket(len(messages))
        done = 0
        try:
            while done < total:
                done += sock.send(data[done:])
        except OSError as exc:
            # Frames the kernel took whole count as sent; the frame it took part of is
            # sent again, whole, on the next connection (the server drops a frame that a
            # closed connection cut short).
            self._discard()
            whole = bisect.bisect_right(ends, done)
            self.sent += whole
            self.bytes_sent += ends[whole - 1] if whole else 0
            raise self._fail(len(messages), whole, _reason(exc), exc) from exc
        self.sent += len(messages)
        self.bytes_sent += total

    def _datagram_socket(self, size: int) -> socket.socket:
        if self._socket is not None and self._socket_pid == os.getpid():
            return self._socket
        self._forget_inherited()
        try:
            family, kind, proto, _, address = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_DGRAM
            )[0]
        except OSError as exc:
            raise self._fail(size, 0, "dns", exc) from exc
        sock = socket.socket(family, kind, proto)
        sock.settimeout(self.timeout)
        self._socket, self._socket_pid, self._address = sock, os.getpid(), address
        return sock

    def _stream_socket(self, size: int) -> socket.socket:
        sock = self._socket
        if sock is not None and self._socket_pid == os.getpid():
            if _alive(sock, self.timeout):
                return sock
            self._discard()  # the server closed it (a restart): a new connection
        self._forget_inherited()
        try:
            raw = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except socket.gaierror as exc:
            raise self._fail(size, 0, "dns", exc) from exc
        except OSError as exc:
            raise self._fail(size, 0, _reason(exc, "connect"), exc) from exc
        if self._context is not None:
            try:
                raw = self._context.wrap_socket(raw, server_hostname=self.host)
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ssl.SSLSyscallError) as exc:
                raw.close()  # the server went away during the handshake: try again
                raise self._fail(size, 0, "connection", exc) from exc
            except ssl.SSLError as exc:
                raw.close()
                # A certificate that does not verify, or a handshake the server refuses:
                # not worth retrying, neither starts to work by itself.
                self.failures["tls"] += 1
                _errors.report(
                    f"syslog writer tls://{self.host}:{self.port}",
                    exc,
                    detail="the TLS handshake failed; records are dropped (reason 'tls')",
                )
                raise DeliveryError.whole(size, "tls", retryable=False, detail=repr(exc)) from exc
            except OSError as exc:  # reset, or the timeout
                raw.close()
                raise self._fail(size, 0, _reason(exc, "connection"), exc) from exc
        self.connections += 1
        self._socket, self._socket_pid = raw, os.getpid()
        return raw

    def _forget_inherited(self) -> None:
        """A forked child leaves its parent's socket to the parent (closing its own copy
        of the descriptor ends nothing) and opens its own."""
        if self._socket is not None and self._socket_pid != os.getpid():
            try:
                self._socket.close()
            except OSError:
                pass
            self._socket = None

    def _discard(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def delivery_stats(self) -> dict[str, int]:
        """This writer's own counts, shown under ``delivery`` in the async backend's
        per-writer stats: ``sent``, ``bytes_sent``, ``truncated``, ``connections``, and
        each failure by reason as ``failed:<reason>`` (``failed:connect``...)."""
        # No lock: a send stuck until its timeout must not hold up a look at the stats.
        stats = {
            "sent": self.sent,
            "bytes_sent": self.bytes_sent,
            "truncated": self.truncated,
            "connections": self.connections,
        }
        stats.update({f"failed:{reason}": n for reason, n in list(self.failures.items())})
        return stats

    def flush(self) -> None:
        """Nothing is buffered: every record is handed to the operating system at once."""

    def close(self) -> None:
        """Close the connection (TLS: with a close_notify, within the timeout)."""
        with self._lock:
            sock = self._socket
            if (
                isinstance(sock, ssl.SSLSocket)
                and self._socket_pid == os.getpid()
                and _alive(sock, self.timeout)
            ):
                try:
                    sock.settimeout(min(self.timeout, 1.0))
                    sock.unwrap()
                except (OSError, ValueError):
                    pass
            self._discard()

    def __repr__(self) -> str:
        return f"<SyslogWriter {self.protocol}://{self.host}:{self.port}>"


def _timestamp(stamp: bytes | None) -> bytes:
    """TIMESTAMP: the record's RFC 3339 stamp (fractions beyond microseconds dropped, as
    RFC 5424 allows six digits), or now in UTC when the line has none we can use."""
    if stamp is not None:
        match = _TIMESTAMP.fullmatch(stamp)
        if match is not None:
            if match.end(1) == match.start(2):
                return stamp
            return stamp[: match.end(1) if match.group(1) else 19] + match.group(2)
    now = time.time()
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
    ).encode()


def _reason(exc: BaseException, default: str = "connection") -> str:
    """The stats label of a socket error."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connect"
    if isinstance(exc, socket.gaierror):
        return "dns"
    return default


def _alive(sock: socket.socket, timeout: float) -> bool:
    """Whether the server has not closed *sock*. A syslog server never sends, so a socket
    that polls readable has reached its end (or, over TLS, holds a session ticket, which
    reading takes without returning data)."""
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
        if not poller.poll(0):
            return True
        sock.setblocking(False)
        try:
            if isinstance(sock, ssl.SSLSocket):
                return sock.recv(1) != b""
            return sock.recv(1, socket.MSG_PEEK) != b""
        finally:
            sock.settimeout(timeout)
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
        return True
    except (OSError, ValueError):
        return False
