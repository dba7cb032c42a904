"""Writers for log stores over HTTP: Elasticsearch/OpenSearch ``_bulk``, Grafana Loki's
push API and OTLP/HTTP JSON logs (``kakashi[http]``).

Each is an ``kakashi.writers.http.HttpWriter`` (pooled kept-alive connections,
gzip bodies, timeouts, every failure classified) that encodes a batch of the pipeline's
JSON lines in its store's framing and reads its store's answer record by record:
what a store reports as taken is delivered, what it reports as worth another try is
retried, what it refuses is dropped under the store's own reason (``"http_400"``,
``"mapper_parsing_exception"``, ``"otlp_rejected"``). See :doc:`/shipping-stores`.

Lines are read with orjson. A line that is not a JSON object (another formatter's
output) is still delivered: as the message of a document, a Loki entry or an OTLP body.
The OTLP mapping is the OTLP/JSON formatter's (:mod:`kakashi.integrations.otel`).
"""

from __future__ import annotations

import base64
import collections
import itertools
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import orjson

from kakashi._locks import fork_safe_lock
from kakashi._speedups import bulk_body
from kakashi.formatters import epoch_ns
from kakashi.integrations.otel import OTLPJsonFormatter, otlp_log_record
from kakashi.writers.delivery import RETRYABLE_STATUS, DeliveryError, status_reason
from kakashi.writers.http import HttpWriter, Response

__all__ = [
    "ElasticsearchWriter",
    "LokiWriter",
    "OtlpHttpWriter",
]

# -- reading the lines ------------------------------------------------------------------


def _event(line: bytes) -> dict[str, Any] | None:
    """The JSON object *line* holds, or ``None`` (another formatter's line)."""
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return event if type(event) is dict else None


def _text(line: bytes) -> str:
    return line.decode("utf-8", "replace")


# -- what the store writers share -------------------------------------------------------

#: Outcomes remembered of the records of writes that raised (see _StoreWriter._recall):
#: the backend hands a failed batch back soon, so a few batches' worth is plenty.
_REMEMBERED: Final = 20_000
#: A request refused as too large: not its records' fault (the backend sends a joined
#: write's batches again one by one), so they are not remembered as refused.
_TOO_LARGE: Final = status_reason(413)


class _StoreRequest:
    """A batch made ready by :meth:`_StoreWriter.prepare`: the records to send
    (``lines``, at ``indices`` of the batch, with their ``keys``), those an earlier write
    counted as refused (index -> reason), the body, and whether it was sent before."""

    __slots__ = ("body", "indices", "keys", "lines", "refused", "sent")

    def __init__(
        self,
        lines: Sequence[bytes],
        indices: list[int],
        keys: list[str | None],
        refused: dict[int, str],
        body: bytes,
    ) -> None:
        self.lines = lines
        self.indices = indices
        self.keys = keys
        self.refused = refused
        self.body = body
        self.sent = False


class _StoreWriter(HttpWriter):
    """An HttpWriter that remembers, for the records of a write that raised, which were
    delivered, which refused (and why) and the document key each was sent with.

    The async backend hands the not-delivered part of a batch back to ``write``: the
    records ``DeliveryError`` named for a retry or, with a backend that reads only
    ``written``, every record from the first that failed. Records seen before (the same
    ``bytes`` objects) are not sent again when they were delivered or refused (a
    refused one is counted once, as dropped; a request refused as too large, 413, is
    no refusal of its records), and are sent again with the same key
    when they were to be retried: so a retry never duplicates what the store already
    took, and a store that deduplicates by key (Elasticsearch ``_id``) can recognise a
    record whose earlier answer was lost. (Records are recognised by identity: every
    formatter makes a new ``bytes`` object per record.)
    """

    #: Whether each record gets a key of its own (an Elasticsearch ``_id``).
    keyed = False

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        self._memory: collections.OrderedDict[int, tuple[bytes, str | None, str | None]] = (
            collections.OrderedDict()
        )
        # Taken by the lane's threads (its preparing one too): a forked child finds it free.
        self._memory_lock = fork_safe_lock()
        self._memory_pid = os.getpid()
        self._key_prefix = ""
        self._key_counter = itertools.count()
        self._key_pid = -1
        #: Records the store took, asked to be retried, and refused (by reason).
        self.delivered = 0
        self.retryable = 0
        self.rejected_by_reason: collections.Counter[str] = collections.Counter()

    # -- what a subclass says -------------------------------------------------------------

    def encode_batch(self, lines: Sequence[bytes], keys: Sequence[str | None]) -> bytes:
        """The request body for *lines*, each with its key (``None`` when not keyed)."""
        raise NotImplementedError

    def encode(self, batch: Sequence[bytes]) -> bytes:
        """The request body for *batch* (records sent for the first time)."""
        return self.encode_batch(batch, self._new_keys(len(batch)))

    # -- the write --------------------------------------------------------------------------

    def write(self, batch: Sequence[bytes]) -> int | None:
        """Deliver *batch* in one request; records delivered or refused by an earlier
        write of this writer are not sent again (see the class description).

        Returns:
            How many records of *batch* an earlier write already counted as refused
            (``None`` when none): dropped, not retried.

        Raises:
            DeliveryError: what was not delivered and why.
        """
        if not batch:
            return None
        return self.send(batch, self.prepare(batch))

    def prepare(self, batch: Sequence[bytes]) -> _StoreRequest:
        """The request for *batch*: which of its records to send (not those an earlier
        write delivered or refused), each with its key, and the body."""
        pid = os.getpid()
        if self._memory_pid != pid:  # a forked child: nothing of the parent's
            self._memory = collections.OrderedDict()
            self._memory_pid = pid
        refused: dict[int, str] = {}
        if self._memory:
            indices: list[int] = []
            keys: list[str | None] = []
            fresh: list[int] = []  # where in keys a record sent for the first time is
            with self._memory_lock:
                for index, line in enumerate(batch):
                    entry = self._memory.pop(id(line), None)
                    if entry is None or entry[0] is not line:
                        fresh.append(len(keys))
                        indices.append(index)
                        keys.append(None)
                    elif entry[1] is None:
                        indices.append(index)
                        keys.append(entry[2])
                    elif entry[1]:
                        refused[index] = entry[1]
                    # else: delivered before, not sent again
            for position, key in zip(fresh, self._new_keys(len(fresh)), strict=True):
                keys[position] = key
            lines: Sequence[bytes] = [batch[index] for index in indices]
        else:
            indices = list(range(len(batch)))
            keys = self._new_keys(len(batch))
            lines = batch
        body = self._compress(self.encode_batch(lines, keys)) if lines else b""
        return _StoreRequest(lines, indices, keys, refused, body)

    def send(
        self,
        batch: Sequence[bytes],
        prepared: _StoreRequest,
        meanwhile: Callable[[], object] | None = None,
    ) -> int | None:
        """Deliver *batch*, made ready by :meth:`prepare` (*prepared*); return and raise
        as :meth:`write` does (*meanwhile*: see :meth:`~kakashi.writers.http.HttpWriter.post`)."""
        if not batch:
            return None
        request = prepared
        refused = request.refused
        if request.sent and self._memory:
            # Sent again (the whole batch is retried): what its failure remembered of its
            # records is in the request already, as a new prepare would have taken it.
            with self._memory_lock:
                for line in request.lines:
                    entry = self._memory.get(id(line))
                    if entry is not None and entry[0] is line:
                        del self._memory[id(line)]
        request.sent = True
        if not request.lines:
            return len(refused) or None
        indices, keys = request.indices, request.keys
        try:
            self._send(request.lines, request.body, meanwhile)
        except DeliveryError as error:
            retry = [indices[index] for index in error.retry]
            dropped = {indices[index]: reason for index, reason in error.dropped.items()}
            dropped.update(refused)
            self._remember(batch, indices, keys, retry, dropped)
            raise DeliveryError(
                error.reason,
                retry=retry,
                dropped=dropped,
                retry_after=error.retry_after,
                detail=error.detail,
            ) from error
        return len(refused) or None

    def _send(
        self, lines: Sequence[bytes], body: bytes, meanwhile: Callable[[], object] | None
    ) -> None:
        """One request of *body* for *lines*; the writer's counts follow the answer."""
        try:
            response = self.post(body, len(lines), meanwhile=meanwhile)
            self.requests += 1
            self.bytes_sent += len(body)
            self.check(lines, response)
        except DeliveryError as error:
            self.delivered += len(lines) - len(error.retry) - len(error.dropped)
            self.retryable += len(error.retry)
            self.rejected_by_reason.update(error.dropped.values())
            raise
        self.delivered += len(lines)

    def _remember(
        self,
        batch: Sequence[bytes],
        indices: Sequence[int],
        keys: Sequence[str | None],
        retry: Sequence[int],
        dropped: Mapping[int, str],
    ) -> None:
        """Note what became of each record of *batch* (a write that raised)."""
        sent_keys = dict(zip(indices, keys, strict=True))
        too_large = (i for i, why in dropped.items() if why == _TOO_LARGE and i in sent_keys)
        later = {*retry, *too_large}
        with self._memory_lock:
            memory = self._memory
            for index, line in enumerate(batch):
                if len(line) < 2:
                    # CPython shares one bytes object per value this short: not a
                    # record's own, so not recognisable (sent again if handed back).
                    continue
                if index in later:
                    memory[id(line)] = (line, None, sent_keys[index])
                else:
                    memory[id(line)] = (line, dropped.get(index, ""), None)
            while len(memory) > _REMEMBERED:  # the backend gave up on the oldest
                memory.popitem(last=False)

    def _new_keys(self, count: int) -> list[str | None]:
        """Keys for *count* records sent for the first time (``None`` when not keyed)."""
        if not self.keyed:
            return [None] * count
        pid = os.getpid()
        if self._key_pid != pid:  # a forked child draws its own prefix
            # 72 random bits: two processes' keys never meet.
            self._key_prefix = base64.urlsafe_b64encode(os.urandom(9)).decode("ascii")
            self._key_counter = itertools.count()
            self._key_pid = pid
        # The numbers taken at once (islice on a count runs in C: no other thread takes
        # one in between), each formatted by C code too.
        numbers = itertools.islice(self._key_counter, count)
        return list(map((self._key_prefix.replace("%", "%%") + "%x").__mod__, numbers))

    def delivery_stats(self) -> dict[str, int]:
        """This writer's own counts: requests answered, records the store took
        (``delivered``), asked to retry (``retryable``, each try counted) and refused
        (``rejected``; by reason in :attr:`rejected_by_reason`)."""
        return {
            "requests": self.requests,
            "delivered": self.delivered,
            "retryable": self.retryable,
            "rejected": sum(self.rejected_by_reason.values()),
        }


def _endpoint(url: str, path: str) -> str:
    """*url* with *path* appended, unless it ends with it already."""
    base = url.split("?", 1)[0].rstrip("/")
    if base.endswith(path):
        return url
    return base + path + (url[len(url.split("?", 1)[0]) :])


# -- Elasticsearch / OpenSearch -----------------------------------------------------------

#: strftime directives an index pattern may use: none finer than an hour, so one name
#: serves every record of an hour (and is computed once per hour).
_INDEX_DIRECTIVES: Final = frozenset("YymdHjGVu%")
_INDEX_FORBIDDEN: Final = frozenset('\\/*?"<>| ,#:')
_OP_TYPES: Final = ("create", "index")
_TIMESTAMP_KEY: Final = b'{"timestamp":'
_NEXT_TIMESTAMP: Final = b"\n" + _TIMESTAMP_KEY
# The JSON formatter's timestamp (UTC, microseconds) at the start of a line: its second.
# Searched for after each newline of the joined lines (a literal start: a fast search).
_STAMP_SECONDS: Final = re.compile(rb'\n\{"timestamp":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.\d{6}Z"')
# A bulk answer that starts by saying there were no errors (Elasticsearch writes
# "errors" first once filter_path drops "took"): read no further (10,000 items parsed
# for nothing cost more than encoding the request).
_NO_ERRORS: Final = re.compile(rb'\s*\{\s*"errors"\s*:\s*false\s*[,}]')


def _check_index(name: str, shown: str) -> None:
    if (
        not name
        or name != name.lower()
        or name[0] in "-_+"
        or name in (".", "..")
        or not _INDEX_FORBIDDEN.isdisjoint(name)
        or len(name.encode()) > 255
    ):
        raise ValueError(
            f"index must give a lowercase Elasticsearch index name without spaces or any "
            f'of \\ / * ? " < > | , # : and not starting with - _ +, got {shown!r}'
        )


class ElasticsearchWriter(_StoreWriter):
    """Index each batch with one ``_bulk`` request (Elasticsearch 7+, OpenSearch 1+).

    The body is NDJSON: per record an action line (``{"create": {"_index": ..., "_id":
    ...}}``; ``create`` is what data streams take) and the record's JSON line, its
    ``timestamp`` key renamed *timestamp_field* (``@timestamp`` by default: what data
    streams and ECS expect). The answer is read item by item: an item taken (2xx) is
    delivered; items answered 408, 425, 429, 500, 502, 503 or 504 are retried; a
    ``create`` refused with 409 because its
    ``_id`` exists already is delivered (an earlier request took it and its answer was
    lost); any other refusal (``mapper_parsing_exception``...) drops the record under the
    error's type.

    Args:
        url: the cluster's URL (``http://es:9200``); ``/_bulk`` is appended.
        index: the index or data stream name; strftime directives down to the hour
            (``"logs-%Y.%m.%d"``) name it from each record's timestamp, in UTC.
        op_type: ``"create"`` (default; required by data streams) or ``"index"``.
        document_ids: give each record an ``_id`` of its own (a random per-process prefix
            and a counter), kept across the retries of that record: a retry after a
            lost answer is then refused as a duplicate instead of indexed twice. Not a
            hash of the line: two identical lines logged in the same microsecond are two
            records. ``False`` lets the cluster pick ids (slightly faster indexing; a
            retry after a timeout may then index a record twice).
        timestamp_field: the key the record's ``timestamp`` is sent as; ``None`` sends
            lines unchanged.
        pipeline: an ingest pipeline to run the documents through.
        **options: ``kakashi.writers.http.HttpWriter``'s (``headers``,
            ``compression``, ``timeout``, ``username``/``password``...).

    Raises:
        ValueError: an index name Elasticsearch refuses, a directive finer than an hour,
            an unknown *op_type* (each names the parameter), or a bad HttpWriter option.
    """

    def __init__(
        self,
        url: str,
        index: str = "logs-kakashi",
        *,
        op_type: str = "create",
        document_ids: bool = True,
        timestamp_field: str | None = "@timestamp",
        pipeline: str | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(index, str):
            raise TypeError(f"index must be a str, got {type(index).__name__}")
        directives = set(re.findall(r"%(.)", index))
        if not directives <= _INDEX_DIRECTIVES:
            raise ValueError(
                f"index may use only the strftime directives %Y %y %m %d %H %j %G %V %u "
                f"(an index spans an hour at least), got {index!r}"
            )
        sample = time.strftime(index, time.gmtime(0)) if directives else index
        _check_index(sample, index)
        if op_type not in _OP_TYPES:
            raise ValueError(f"op_type must be one of {_OP_TYPES}, got {op_type!r}")
        if timestamp_field is not None and (
            not isinstance(timestamp_field, str) or not timestamp_field
        ):
            raise ValueError(f"timestamp_field must be a non-empty str, got {timestamp_field!r}")
        super().__init__(url, **options)
        self.index = index
        self.op_type = op_type
        self.keyed = bool(document_ids)
        self.timestamp_field = timestamp_field
        query = "filter_path=errors,items.*.status,items.*.error"
        if pipeline is not None:
            query += "&pipeline=" + _quote(pipeline)
        self._target = _endpoint(url, "/_bulk")
        self._target += ("&" if "?" in self._target else "?") + query
        self._patterned = bool(directives)
        self._names: dict[int, bytes] = {}  # hour -> the index's action prefix
        self._second_prefixes: dict[bytes, bytes] = {}  # b"YYYY-MM-DDTHH:MM:SS" -> prefix
        self._action = b'{"' + op_type.encode() + b'":{"_index":'
        self._static = self._action + orjson.dumps(index)
        if timestamp_field is not None:
            self._renamed = b"{" + orjson.dumps(timestamp_field) + b":"
            self._field_key = orjson.dumps(timestamp_field) + b":"

    def target(self) -> str:
        """``<url>/_bulk`` with a ``filter_path`` that keeps the answer small."""
        return self._target

    def encode_batch(self, lines: Sequence[bytes], keys: Sequence[str | None]) -> bytes:
        """An action line and a document line per record (NDJSON, newline-terminated)."""
        if not lines:
            return b""
        keyed = keys[0] is not None
        if keyed or not self.keyed:  # every key a str, or none (an unkeyed writer)
            body = self._one_prefix(lines, keys if keyed else None)
            if body is None and self._patterned:
                body = self._by_second(lines, keys, keyed)
            if body is not None:
                return body
        return self._encode_each(lines, keys)

    def _by_second(
        self, lines: Sequence[bytes], keys: Sequence[str | None], keyed: bool
    ) -> bytes | None:
        """The body when every line is the JSON formatter's and they go to several
        indices (a batch across the end of an hour): the whole batch framed at once, each
        record's action looked up by its second; else ``None``."""
        count = len(lines)
        joined = b"\n".join(lines)
        field = self.timestamp_field
        if (
            joined.count(b"\n") != count - 1
            or not lines[0].startswith(_TIMESTAMP_KEY)
            or joined.count(_NEXT_TIMESTAMP) != count - 1
            or (field is not None and self._field_key in joined)
            or (None in keys if keyed else any(key is not None for key in keys))
        ):
            return None
        first = _STAMP_SECONDS.match(b"\n" + lines[0][:42])
        seconds = [first.group(1)] if first else []
        seconds += _STAMP_SECONDS.findall(joined)  # the other lines' (after a newline)
        if len(seconds) != count:  # a timestamp not in the formatter's UTC form
            return None
        known = self._second_prefixes
        prefixes = [known.get(second) or self._second_prefix(second) for second in seconds]
        if field is None:
            head, documents = b"", lines
        else:
            # Each document is its line with the timestamp key renamed: a splice. Splitting
            # the joined lines at each line's start gives them without their first key.
            head = self._renamed
            documents = joined[len(_TIMESTAMP_KEY) :].split(_NEXT_TIMESTAMP)
        # One template, filled in by one % (in C): per record its action's start, its key
        # and its document.
        action = b'%b,"_id":"%b"}}\n' if keyed else b"%b}}\n"
        per_record = action + head.replace(b"%", b"%%") + b"%b\n"
        columns: list[Sequence[Any]] = [prefixes, documents]
        if keyed:  # the keys encoded at once (no key holds a newline)
            columns.insert(1, "\n".join(keys).encode("ascii").split(b"\n"))  # type: ignore[arg-type]
        values: list[Any] = [None] * (count * len(columns))
        for offset, column in enumerate(columns):
            values[offset :: len(columns)] = column
        return (per_record * count) % tuple(values)

    def _one_prefix(
        self, lines: Sequence[bytes], keys: Sequence[str | None] | None
    ) -> bytes | None:
        """The body when every line is the JSON formatter's and all go to one index (an
        index name without directives, or a batch within one hour: most batches), framed
        by the hot path's ``bulk_body`` (compiled: without the GIL); else ``None``."""
        first = lines[0]
        if type(first) is not bytes:
            return None
        prefix = self._static
        hour = None
        if self._patterned:
            stamp = _STAMP_SECONDS.match(b"\n" + first[:42])
            if stamp is None:
                return None
            second = stamp.group(1)
            hour = second[:13]  # YYYY-MM-DDTHH
            prefix = self._second_prefixes.get(second) or self._second_prefix(second)
        if self.timestamp_field is None:
            return bulk_body(lines, keys, prefix, hour, b"", 0, None)
        renamed, skip, field_key = self._renamed, len(_TIMESTAMP_KEY), self._field_key
        return bulk_body(lines, keys, prefix, hour, renamed, skip, field_key)

    def _encode_each(self, lines: Sequence[bytes], keys: Sequence[str | None]) -> bytes:
        """:meth:`encode_batch` record by record (lines of any shape)."""
        parts: list[bytes] = []
        append = parts.append
        for line, key in zip(lines, keys, strict=True):
            document, seconds = self._document(line)
            prefix = self._prefix(seconds) if self._patterned else self._static
            if key is None:
                append(prefix + b"}}")
            else:
                append(prefix + b',"_id":"' + key.encode("ascii") + b'"}}')
            append(document)
        parts.append(b"")
        return b"\n".join(parts)

    def _second_prefix(self, second: bytes) -> bytes:
        """The action's start for a record logged in *second* (``YYYY-MM-DDTHH:MM:SS``,
        UTC); remembered."""
        stamp = epoch_ns(second.decode("ascii") + ".000000Z")
        prefix = self._prefix(None if stamp is None else stamp // 1_000_000_000)
        if stamp is not None:
            if len(self._second_prefixes) >= 4096:
                self._second_prefixes.clear()
            self._second_prefixes[second] = prefix
        return prefix

    def _document(self, line: bytes) -> tuple[bytes, int | None]:
        """The document for *line*, and its timestamp in seconds when the index needs it."""
        field = self.timestamp_field
        if (
            line.startswith(_TIMESTAMP_KEY)
            and (field is None or self._field_key not in line)
            and b"\n" not in line
        ):
            # The JSON formatter's line: the timestamp is its first key, so renaming it is
            # a splice (no parse), and the index's date is read from its text.
            seconds = None
            if self._patterned:
                end = line.find(b'"', 14)
                stamp = epoch_ns(line[14:end].decode("ascii", "replace")) if end > 0 else None
                seconds = None if stamp is None else stamp // 1_000_000_000
            if field is None:
                return line, seconds
            return self._renamed + line[len(_TIMESTAMP_KEY) :], seconds
        event = _event(line)
        if event is None:
            event = {"message": _text(line)}
        stamp = epoch_ns(event.get("timestamp"))
        if field is not None:
            when = event.pop("timestamp", None)
            if when is None:
                when = _rfc3339(time.time_ns())
            if field in event:  # the record's time wins; the field keeps its value aside
                event["field." + field] = event.pop(field)
            event = {field: when, **event}
        seconds = None if stamp is None else stamp // 1_000_000_000
        return orjson.dumps(event), seconds

    def _prefix(self, seconds: int | None) -> bytes:
        hour = (time.time_ns() // 1_000_000_000 if seconds is None else seconds) // 3600
        prefix = self._names.get(hour)
        if prefix is None:
            name = time.strftime(self.index, time.gmtime(hour * 3600))
            prefix = self._action + orjson.dumps(name)
            if len(self._names) > 64:  # hours long past: forgotten
                self._names.clear()
            self._names[hour] = prefix
        return prefix

    def check(self, batch: Sequence[bytes], response: Response) -> None:
        """Read the bulk answer item by item (see the class description)."""
        if _NO_ERRORS.match(response.body):
            return
        try:
            answer = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            answer = None
        if type(answer) is dict and answer.get("errors") is False:
            return
        items = answer.get("items") if type(answer) is dict else None
        if type(items) is not list or len(items) != len(batch):
            # What was indexed is unknown: everything is retried (the _ids, when kept,
            # make the records indexed already come back as duplicates).
            raise DeliveryError.whole(
                len(batch), "bad_bulk_answer", retryable=True, detail=response.text()
            )
        retry: list[int] = []
        dropped: dict[int, str] = {}
        first = ""
        for index, item in enumerate(items):
            result = next(iter(item.values()), None) if type(item) is dict and item else None
            status = result.get("status") if type(result) is dict else None
            if type(status) is not int:
                retry.append(index)
                first = first or "bad_bulk_answer"
                continue
            if 200 <= status < 300 or (status == 409 and self.keyed and self.op_type == "create"):
                continue
            if status in RETRYABLE_STATUS:
                retry.append(index)
                first = first or status_reason(status)
                continue
            error = result.get("error") if type(result) is dict else None
            kind = error.get("type") if type(error) is dict else None
            reason = kind if type(kind) is str and kind else status_reason(status)
            dropped[index] = reason
            first = first or reason
        if retry or dropped:
            raise DeliveryError(first, retry=retry, dropped=dropped, detail=response.text())


def _quote(text: str) -> str:
    import urllib.parse

    return urllib.parse.quote(text, safe="")


def _rfc3339(ns: int) -> str:
    seconds, fraction = divmod(ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{fraction // 1000:06d}Z"


# -- Grafana Loki -------------------------------------------------------------------------

_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _check_label(name: object, where: str) -> str:
    if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name) or name.startswith("__"):
        raise ValueError(
            f"{where} must be Loki label names ([A-Za-z_][A-Za-z0-9_]*, not starting "
            f"with __), got {name!r}"
        )
    return name


class LokiWriter(_StoreWriter):
    """Push each batch to Grafana Loki (``/loki/api/v1/push``, JSON, gzip).

    The batch is grouped into streams by label set: the static *labels* plus, per
    record, the values of its *label_keys* (``level``, ``logger``). Each entry is the
    record's timestamp in nanoseconds (a decimal string) and its whole JSON line; the
    entries of a stream are sent in timestamp order. Loki refuses a push it cannot take
    (entries older than it accepts, out of order on an old Loki, a line too long) with a
    400 for the whole request: not retried, counted as dropped (``"http_400"``); Loki may
    have kept the other entries of that request, which are then counted as dropped too.

    Labels index the streams: keep their values few (a level, a logger, a service);
    a request id, a user or a path as a label makes a stream per value and slows Loki
    down. Fields stay in the line, where LogQL's ``| json`` reads them.

    Args:
        url: Loki's URL (``http://loki:3100``); ``/loki/api/v1/push`` is appended.
        labels: the labels of every stream (default ``{"job": "kakashi"}``).
        label_keys: record keys whose values become labels of the same name (a record
            without one, or whose value is not a str, number or bool, leaves it out).
        tenant_id: sent as ``X-Scope-OrgID`` (Loki with multi-tenancy).
        **options: ``kakashi.writers.http.HttpWriter``'s.

    Raises:
        ValueError: a label name Loki refuses, empty *labels*, or a bad HttpWriter
            option.
    """

    content_type = "application/json"

    def __init__(
        self,
        url: str,
        *,
        labels: Mapping[str, str] | None = None,
        label_keys: Iterable[str] = ("level", "logger"),
        tenant_id: str | None = None,
        **options: Any,
    ) -> None:
        static = {"job": "kakashi"} if labels is None else dict(labels)
        if not static:
            raise ValueError("labels must not be empty: Loki needs a label on every stream")
        for name, value in static.items():
            _check_label(name, "labels")
            if not isinstance(value, str) or not value:
                raise ValueError(f"labels values must be non-empty str, got {name}={value!r}")
        if isinstance(label_keys, str):
            raise TypeError("label_keys must be a sequence of keys, not one str")
        keys = tuple(_check_label(key, "label_keys") for key in label_keys)
        headers = dict(options.pop("headers", None) or {})
        if tenant_id is not None:
            if not isinstance(tenant_id, str) or not tenant_id:
                raise ValueError(f"tenant_id must be a non-empty str, got {tenant_id!r}")
            headers["X-Scope-OrgID"] = tenant_id
        super().__init__(url, headers=headers, **options)
        self.labels = static
        self.label_keys = keys
        self._target = _endpoint(url, "/loki/api/v1/push")

    def target(self) -> str:
        """``<url>/loki/api/v1/push``."""
        return self._target

    def encode_batch(self, lines: Sequence[bytes], keys: Sequence[str | None]) -> bytes:
        """``{"streams": [{"stream": labels, "values": [[ns, line], ...]}, ...]}``."""
        streams: dict[tuple[tuple[str, str], ...], list[tuple[int, str]]] = {}
        label_keys = self.label_keys
        now = time.time_ns()
        for line in lines:
            event = _event(line) if line[:1] == b"{" else None
            stamp = None
            found: tuple[tuple[str, str], ...] = ()
            if event is not None:
                stamp = epoch_ns(event.get("timestamp"))
                if label_keys:
                    values = ((key, _label_value(event.get(key))) for key in label_keys)
                    found = tuple((key, value) for key, value in values if value)
            entries = streams.get(found)
            if entries is None:
                entries = streams[found] = []
            entries.append((now if stamp is None else stamp, _text(line)))
        body = []
        for found, entries in streams.items():
            entries.sort(key=_first)  # stable: equal times keep the order logged
            stream = dict(self.labels)
            stream.update(found)
            body.append(
                {
                    "stream": stream,
                    "values": [[str(stamp), text] for stamp, text in entries],
                }
            )
        return orjson.dumps({"streams": body})


def _first(entry: tuple[int, str]) -> int:
    return entry[0]


def _label_value(value: object) -> str:
    """A label's value: str, numbers and bools as text; anything else left out ("")."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return ""


# -- OTLP/HTTP JSON -----------------------------------------------------------------------

#: OTLP/HTTP's retryable statuses (the specification's list: no other 5xx).
_OTLP_RETRYABLE: Final = frozenset({429, 502, 503, 504})
_OTLP_DOCUMENT: Final = b'{"resourceLogs":'


class OtlpHttpWriter(_StoreWriter):
    """Export each batch as one OTLP/HTTP JSON ``ExportLogsServiceRequest``.

    The mapping is :class:`~kakashi.integrations.otel.OTLPJsonFormatter`'s, one and the
    same: each JSON line becomes the ``LogRecord`` that formatter writes for the record
    the line came from (see :func:`~kakashi.integrations.otel.otlp_log_record`, and
    what a JSON line cannot hold), in the scope named after its logger, under one
    resource (*resource* plus ``service.name``). A line that already is an OTLP/JSON
    document (the pipeline's formatter is ``OTLPJsonFormatter``) has its records merged
    into the request as they are, the exact form; a line that is not JSON is sent as a
    record whose body is the line.

    The answer: a 2xx with ``partialSuccess.rejectedLogRecords`` *n* counts *n*
    records as dropped (``"otlp_rejected"``; OTLP does not say which, so the last *n*
    sent are counted; the collector's ``errorMessage`` is reported); 429, 502, 503 and
    504 are retried after the ``Retry-After`` the server sends, as OTLP/HTTP specifies;
    any other status drops the request's records.

    Args:
        url: the logs endpoint (``http://collector:4318/v1/logs``); a URL with no path
            gets ``/v1/logs``.
        resource: resource attributes (``service.version``, ``deployment.environment``...),
            as :class:`~kakashi.integrations.otel.OTLPJsonFormatter` takes them.
        service_name: the resource's ``service.name`` (default ``"unknown_service"``).
        **options: ``kakashi.writers.http.HttpWriter``'s (``headers`` carries
            authentication).

    Raises:
        TypeError: *service_name* is not a non-empty str, or *resource* is not a mapping
            with str keys and values str, bool, int, float, or lists or mappings of them.
        ValueError: a bad HttpWriter option.
    """

    content_type = "application/json"
    retryable_status = _OTLP_RETRYABLE

    def __init__(
        self,
        url: str,
        *,
        resource: Mapping[str, Any] | None = None,
        service_name: str | None = None,
        **options: Any,
    ) -> None:
        # The resource is checked (and encoded) as the OTLP/JSON formatter checks it.
        self._otlp = OTLPJsonFormatter(service_name, resource)
        super().__init__(url, **options)
        self.resource = self._otlp.resource
        path = url.split("?", 1)[0].split("://", 1)[1].partition("/")[2]
        self._target = url if path.strip("/") else _endpoint(url, "/v1/logs")

    def target(self) -> str:
        """The logs endpoint."""
        return self._target

    def encode_batch(self, lines: Sequence[bytes], keys: Sequence[str | None]) -> bytes:
        """One ``ExportLogsServiceRequest`` for *lines* (see the class description)."""
        observed = time.time_ns()
        log_records: list[tuple[str, dict[str, Any]]] = []
        foreign: list[Any] = []  # resourceLogs of lines that were OTLP documents already
        for line in lines:
            event = _event(line)
            if event is None:  # not JSON: the line is the body
                log_records.append(("", otlp_log_record({"message": _text(line)}, observed)))
            elif line.startswith(_OTLP_DOCUMENT) and type(event.get("resourceLogs")) is list:
                foreign.extend(event["resourceLogs"])
            else:
                logger = event.get("logger")
                scope = logger if type(logger) is str else ""
                log_records.append((scope, otlp_log_record(event, observed)))
        resource_logs = self._otlp.assemble(log_records)["resourceLogs"] if log_records else []
        if foreign:
            resource_logs = _merged(resource_logs + foreign)
        return orjson.dumps({"resourceLogs": resource_logs})

    def check(self, batch: Sequence[bytes], response: Response) -> None:
        """Count ``partialSuccess.rejectedLogRecords`` as dropped (see the class)."""
        if not response.body.strip():
            return
        try:
            answer = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            return  # taken (2xx); a body that is not JSON says nothing more
        partial = answer.get("partialSuccess") if type(answer) is dict else None
        if type(partial) is not dict:
            return
        rejected = partial.get("rejectedLogRecords", 0)
        try:
            count = min(len(batch), max(0, int(rejected)))
        except (TypeError, ValueError):
            count = 0
        message = partial.get("errorMessage")
        message = message if type(message) is str else ""
        if not count:
            if message:  # a warning from the collector: everything was taken
                from kakashi import _errors

                _errors.report(f"writer {self!r} collector", detail=message[:500])
            return
        dropped = dict.fromkeys(range(len(batch) - count, len(batch)), "otlp_rejected")
        raise DeliveryError("otlp_rejected", dropped=dropped, detail=message)


def _merged(resource_logs: list[Any]) -> list[Any]:
    """*resource_logs* with the entries of equal resources and scopes joined."""
    if len(resource_logs) < 2:
        return resource_logs
    resources: dict[bytes, tuple[Any, dict[bytes, tuple[Any, list[Any]]]]] = {}
    for entry in resource_logs:
        if type(entry) is not dict:
            continue
        resource = entry.get("resource", {})
        _, scopes = resources.setdefault(orjson.dumps(resource), (resource, {}))
        for scope_logs in entry.get("scopeLogs") or ():
            if type(scope_logs) is not dict:
                continue
            scope = scope_logs.get("scope", {})
            _, records = scopes.setdefault(orjson.dumps(scope), (scope, []))
            records.extend(scope_logs.get("logRecords") or ())
    return [
        {
            "resource": resource,
            "scopeLogs": [
                {"scope": scope, "logRecords": records} for scope, records in scopes.values()
            ],
        }
        for resource, scopes in resources.values()
    ]
