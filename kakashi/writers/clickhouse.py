"""Ship JSON lines to ClickHouse over its HTTP interface (``kakashi[http]``).

:class:`ClickHouseWriter` turns each batch into one ``INSERT INTO db.table FORMAT
JSONEachRow`` request (the statement in the URL's ``query`` parameter, the rows in the
body, separated by commas, gzip-compressed), or, with ``insert_format="TabSeparated"``,
one ``INSERT INTO db.table (columns...) FORMAT TabSeparated`` (half the bytes, less of
the server's CPU). Each JSON line becomes a row: its keys that
are columns of the table go to those columns (``timestamp``, ``level``, ``logger``,
``message`` and any field the table has a column for); the other keys go, as one JSON
object, to the ``fields`` column when the table has one.

ClickHouse takes or refuses an insert as a whole: one row it cannot parse fails the
batch. The writer then isolates the bad rows by bisecting (it sends each half again, and
the halves of a half that fails, down to single rows), delivers the rest and reports the
rejected rows as dropped under ``clickhouse_<code>`` (ClickHouse's error code), with the
server's message as the error's detail. The number of requests this takes is bounded
(``max_split_requests`` for each 200 rows of the insert).

:func:`create_table_sql` gives the recommended table (partitioned by day, ordered for
time-range queries, TTL where the server has it); :func:`create_table` runs it;
:func:`drop_expired_partitions` is the retention for servers older than TTL (19.6).

urllib3 is imported when the first writer is made, so ``import kakashi`` does not load it.
"""

from __future__ import annotations

import datetime
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import orjson

from kakashi import _errors
from kakashi._speedups import clickhouse_body, clickhouse_rows, clickhouse_tsv_rows
from kakashi.writers.delivery import DeliveryError
from kakashi.writers.http import HttpWriter

__all__ = [
    "DATA_ERROR_CODES",
    "INSERT_FORMATS",
    "ClickHouseWriter",
    "create_table",
    "create_table_sql",
    "drop_expired_partitions",
    "server_version",
]

#: ClickHouse error codes that mean "a row of this insert is malformed" (the value of a
#: key cannot be read as its column's type): the batch is bisected to find the row.
#: 6 CANNOT_PARSE_TEXT, 25 CANNOT_PARSE_ESCAPE_SEQUENCE, 26 CANNOT_PARSE_QUOTED_STRING,
#: 27 CANNOT_PARSE_INPUT_ASSERTION_FAILED, 38 CANNOT_PARSE_DATE, 41 CANNOT_PARSE_DATETIME,
#: 53 TYPE_MISMATCH, 69 ARGUMENT_OUT_OF_BOUND, 70 CANNOT_CONVERT_TYPE,
#: 72 CANNOT_PARSE_NUMBER, 117 INCORRECT_DATA, 130 CANNOT_READ_ARRAY_FROM_TEXT,
#: 131 TOO_LARGE_STRING_SIZE.
DATA_ERROR_CODES: Final = frozenset({6, 25, 26, 27, 38, 41, 53, 69, 70, 72, 117, 130, 131})

# Codes that say the request, not a row, is wrong and will stay wrong when sent again:
# 16 NO_SUCH_COLUMN_IN_TABLE, 60 UNKNOWN_TABLE, 81 UNKNOWN_DATABASE, 89 an unknown
# Content-Encoding (18.16 takes only gzip and deflate), 164 READONLY, 192 UNKNOWN_USER,
# 193 WRONG_PASSWORD, 194 REQUIRED_PASSWORD, 195 IP_ADDRESS_NOT_ALLOWED,
# 497 ACCESS_DENIED, 516 AUTHENTICATION_FAILED. ClickHouse answers some of them with a
# 500, which would otherwise be retried.
_REQUEST_ERROR_CODES: Final = frozenset({16, 60, 81, 89, 164, 192, 193, 194, 195, 497, 516})

#: Lines made into rows per call of the hot path (see ClickHouseWriter._rows).
_CHUNK: Final = 1024
#: The rows of an insert that each ``max_split_requests`` is for (the async backend's
#: default batch): a joined insert isolates its bad rows as its batches would have.
_SPLIT_ROWS: Final = 200
_CODE: Final = re.compile(r"Code: (\d+)")
_FRACTION: Final = re.compile(r"\.(\d+)")
_SETTING: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# The first release with a TTL clause, and the first with DateTime64 (and
# LowCardinality and column codecs out of their experimental phase).
_TTL_SINCE: Final = (19, 6)
_MODERN_SINCE: Final = (20, 1)


def _quote(name: str, what: str) -> str:
    """*name* as a ClickHouse identifier in backquotes."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} must be a non-empty string, got {name!r}")
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def _error_code(detail: str) -> int | None:
    """ClickHouse's error code from the start of an error answer (``Code: 27, ...``)."""
    found = _CODE.search(detail[:100])
    return int(found.group(1)) if found else None


# How a JSON value is made fit for a column, by the column's type: as it is; for a String
# column, a value that is not a string as its JSON text; for a number column, a boolean
# as 0/1 (ClickHouse 18 reads no ``true``); for a DateTime column in a TabSeparated
# insert, the JSON formatter's timestamp as ``YYYY-MM-DD hh:mm:ssZ``. The numbers
# clickhouse_rows and clickhouse_tsv_rows take.
_AS_IS: Final = 0
_TEXT: Final = 1
_NUMBER: Final = 2
_DATETIME: Final = 3

#: The insert formats (``insert_format``).
INSERT_FORMATS: Final = ("JSONEachRow", "TabSeparated")


def _base_type(column_type: str) -> tuple[str, bool]:
    """*column_type* without its ``LowCardinality(...)`` and ``Nullable(...)``, and whether
    it was nullable."""
    base, nullable = column_type, False
    for wrapper in ("LowCardinality(", "Nullable("):
        if base.startswith(wrapper):
            base = base[len(wrapper) : -1]
            nullable = nullable or wrapper == "Nullable("
    return base, nullable


def _kind(column_type: str) -> int:
    """How values are fitted to a column of *column_type* (``_AS_IS``, ``_TEXT``...)."""
    base, _ = _base_type(column_type)
    if base == "String" or base.startswith("FixedString("):
        return _TEXT
    if base.startswith(("Int", "UInt", "Float", "Decimal")):
        return _NUMBER
    return _AS_IS


def _tsv_default(column_type: str) -> bytes | None:
    """The TabSeparated text of *column_type*'s default value, what JSONEachRow leaves a
    missing key (``None``: a type whose default, or whose values, this writer cannot
    write as TabSeparated text)."""
    base, nullable = _base_type(column_type)
    if nullable:
        return b"\\N"
    if base == "String" or base.startswith("FixedString("):
        return b""
    if base.startswith(("Int", "UInt", "Float", "Decimal")):
        return b"0"
    if base == "DateTime" or base.startswith(("DateTime(", "DateTime64(")):
        # The epoch in any time zone (best_effort reads a bare 0 as the year 2000).
        return b"1970-01-01 00:00:00Z"
    if base in ("Date", "Date32"):
        return b"1970-01-01"
    if base == "UUID":
        return b"00000000-0000-0000-0000-000000000000"
    if base.startswith("Array("):
        # A JSON array is ClickHouse's text of an array of numbers only (strings in it
        # would need single quotes): other arrays go as JSONEachRow.
        element = base[len("Array(") : -1]
        return b"[]" if element.startswith(("Int", "UInt", "Float")) else None
    if base == "IPv4":
        return b"0.0.0.0"
    if base == "IPv6":
        return b"::"
    return None


def _tsv_kind(column_type: str) -> int:
    """:func:`_kind`, but ``_DATETIME`` for a ``DateTime`` (seconds) column."""
    base, _ = _base_type(column_type)
    if base == "DateTime" or base.startswith("DateTime("):
        return _DATETIME
    return _kind(column_type)


def _microseconds(timestamp: Any) -> int:
    """The microseconds within the second of an RFC 3339 *timestamp* (0 when none)."""
    if type(timestamp) is not str:
        return 0
    if len(timestamp) == 27 and timestamp[19] == "." and timestamp[26] == "Z":  # ours
        digits = timestamp[20:26]
        if digits.isdecimal():
            return int(digits)
    found = _FRACTION.search(timestamp, 17)
    return int(found.group(1)[:6].ljust(6, "0")) if found else 0


class _Layout:
    """Where the keys of a line go for the table's columns: ``kinds`` (column ->
    how values are fitted, ``_AS_IS``...), the ``micros`` and ``fields`` columns; for a
    TabSeparated insert, its ``tsv`` columns in order (name, kind, default text), else
    ``None``; the insert's ``url``."""

    __slots__ = ("fields", "kinds", "micros", "tsv", "url")

    def __init__(
        self,
        kinds: dict[str, int],
        micros: str | None,
        fields: str | None,
        url: str,
        tsv: list[tuple[str, int, bytes]] | None = None,
    ) -> None:
        self.kinds = kinds
        self.micros = micros
        self.fields = fields
        self.url = url
        self.tsv = tsv

    def rows(
        self, batch: Sequence[bytes], first: int
    ) -> tuple[list[Any], list[int], dict[int, str]]:
        """The rows of *batch* (its lines from index *first*) for this layout."""
        if self.tsv is not None:
            return clickhouse_tsv_rows(
                batch, self.tsv, self.micros, self.fields, _microseconds, first
            )
        return clickhouse_rows(batch, self.kinds, self.micros, self.fields, _microseconds, first)

    def body(self, rows: list[Any]) -> bytes:
        """The request body of *rows* (uncompressed)."""
        return b"".join(rows) if self.tsv is not None else clickhouse_body(rows)


class _Insert:
    """A batch made ready by :meth:`ClickHouseWriter.prepare`: the ``layout`` it was made
    for (``None``: not made, the columns were not known), its ``rows``, the index in the
    batch of each, the lines that are not JSON objects (index -> ``"not_json"``) and the
    rows' compressed ``body``."""

    __slots__ = ("body", "dropped", "indices", "layout", "rows")

    def __init__(
        self,
        layout: _Layout | None,
        rows: list[Any],
        indices: list[int],
        dropped: dict[int, str],
        body: bytes,
    ) -> None:
        self.layout = layout
        self.rows = rows
        self.indices = indices
        self.dropped = dropped
        self.body = body


class ClickHouseWriter(HttpWriter):
    """Insert each batch of JSON lines into a ClickHouse table (see the module description).

    Args:
        url: the server's HTTP interface, ``http://host:8123`` (or ``https://``).
        table: the table's name.
        database: the table's database.
        columns: the table's columns, name -> ClickHouse type (``{"user_id": "UInt64"}``);
            ``None`` (the default) asks the server (``DESCRIBE TABLE``) before the first
            insert, and again when an insert names a column the table no longer has.
        fields_column: the String column that receives, as one JSON object, the keys that
            are not columns (``None``: such keys are not stored).
        timestamp_us_column: a UInt32 column that receives the microseconds of the
            ``timestamp`` key, for tables whose ``timestamp`` is a ``DateTime`` (seconds:
            ClickHouse before 20.1 has no ``DateTime64``); used when the table has it.
        settings: ClickHouse settings sent with each insert, name -> value (added to
            ``date_time_input_format=best_effort``, which reads RFC 3339 timestamps).
        max_split_requests: the most requests spent isolating the bad rows of a batch, for
            each 200 rows of it (the async backend's batch: a lane that joins batches
            into one insert gives it the budget they would have had one by one); a part
            still failing when they are spent is dropped whole, under its reason.
        username, password: the ClickHouse user (HTTP basic authentication).
        compression: ``"gzip"`` (the default; ClickHouse 18.16 takes only gzip and
            deflate), ``"zstd"`` (recent servers) or ``None``.
        insert_format: ``"JSONEachRow"`` (the default) or ``"TabSeparated"``: the same
            rows in about half the bytes, which the server reads with about half the CPU
            (a key a line lacks, or holds ``null``, gets the type's default, ``0``, empty
            or ``NULL``, as JSONEachRow gets it on 18.16; a server that fills omitted
            JSONEachRow fields from a column's ``DEFAULT`` expression does not do so
            here). A table with a column whose text the writer cannot spell (an
            ``Enum``, a ``Map``, an array of strings...) is inserted as JSONEachRow,
            once reported.
        **options: the rest of :class:`~kakashi.writers.http.HttpWriter`'s options
            (``timeout``, ``verify``, ``max_error_retries``...).

    Raises:
        ValueError: an empty table or database name, a setting whose name is not an
            identifier or whose value is not a scalar, a bad *columns* mapping, or one of
            :class:`~kakashi.writers.http.HttpWriter`'s checks.
    """

    content_type = "application/x-ndjson"

    def __init__(
        self,
        url: str,
        table: str,
        *,
        database: str = "default",
        columns: Mapping[str, str] | None = None,
        fields_column: str | None = "fields",
        timestamp_us_column: str | None = "timestamp_us",
        settings: Mapping[str, str | int | float | bool] | None = None,
        max_split_requests: int = 64,
        username: str | None = None,
        password: str | None = None,
        compression: str | None = "gzip",
        insert_format: str = "JSONEachRow",
        **options: Any,
    ) -> None:
        super().__init__(
            url, username=username, password=password, compression=compression, **options
        )
        self.table = table
        self.database = database
        qualified = f"{_quote(database, 'database')}.{_quote(table, 'table')}"
        if type(max_split_requests) is not int or max_split_requests < 0:
            raise ValueError(f"max_split_requests must be an int >= 0, got {max_split_requests!r}")
        self.max_split_requests = max_split_requests
        query: dict[str, str] = {"date_time_input_format": "best_effort"}
        for name, value in dict(settings or {}).items():
            if not isinstance(name, str) or not _SETTING.fullmatch(name) or name == "query":
                raise ValueError(f"settings: {name!r} is not a ClickHouse setting name")
            if isinstance(value, bool):
                value = int(value)
            if not isinstance(value, (str, int, float)):
                raise ValueError(
                    f"settings: {name} must be a str, int, float or bool, got {value!r}"
                )
            query[name] = str(value)
        if insert_format not in INSERT_FORMATS:
            raise ValueError(
                f"insert_format must be one of {', '.join(INSERT_FORMATS)}, got {insert_format!r}"
            )
        self.insert_format = insert_format
        self._qualified = qualified
        self._settings = query
        base = url.rstrip("/") + "/?"
        self._base = base
        self._insert_url = self._url(f"INSERT INTO {qualified} FORMAT JSONEachRow")
        describe = {"query": f"DESCRIBE TABLE {qualified} FORMAT JSONEachRow"}
        self._describe_url = base + urllib.parse.urlencode(describe, quote_via=urllib.parse.quote)
        self.fields_column = fields_column
        self.timestamp_us_column = timestamp_us_column
        # Where each key of a line goes, decided once (see _use_columns); None until the
        # columns are known. One object, replaced whole: a batch prepared on another
        # thread sees all of it, old or new, and send knows whether it is still current.
        self._layout: _Layout | None = None
        self._discovered = False  # the columns came from the server, not from columns=
        if columns is not None:
            if not isinstance(columns, Mapping) or not all(
                isinstance(name, str) and isinstance(kind, str) for name, kind in columns.items()
            ):
                raise ValueError(
                    f"columns must map column names to ClickHouse types, got {columns!r}"
                )
            if insert_format == "TabSeparated":
                for name, kind in columns.items():
                    if _tsv_default(kind) is None:
                        raise ValueError(
                            f"columns: {name!r} ({kind}) cannot be written as TabSeparated "
                            "here: use insert_format='JSONEachRow'"
                        )
            self._use_columns(columns)
        #: Rows the server stored, and rows it refused, by reason (``clickhouse_27``).
        self.rows_delivered = 0
        self.rejected: dict[str, int] = {}
        #: The server's message for the last refused row (capped).
        self.last_rejection = ""

    def _url(self, statement: str) -> str:
        """The URL running *statement* with the writer's settings."""
        query = {"query": statement, **self._settings}
        return self._base + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)

    def _use_columns(self, columns: Mapping[str, str], computed: Iterable[str] = ()) -> None:
        """Decide, once, where each key of a line goes (*computed*: the MATERIALIZED and
        ALIAS columns, which an insert cannot name)."""
        self.columns = dict(columns)
        fields = self.fields_column if self.fields_column in self.columns else None
        micros = self.timestamp_us_column if self.timestamp_us_column in self.columns else None
        kinds = {name: _kind(kind) for name, kind in self.columns.items() if name != fields}
        tsv: list[tuple[str, int, bytes]] | None = None
        if self.insert_format == "TabSeparated":
            skipped = set(computed)
            tsv = []
            for name, kind in self.columns.items():
                if name in skipped:
                    continue
                default = _tsv_default(kind)
                if default is None:
                    _errors.report(
                        f"{self!r}: inserting as JSONEachRow, not TabSeparated",
                        detail=f"column {name!r} ({kind}) cannot be written as TabSeparated here",
                    )
                    tsv = None
                    break
                tsv.append((name, _TEXT if name == fields else _tsv_kind(kind), default))
        if tsv is None:
            self._layout = _Layout(kinds, micros, fields, self._insert_url)
            return
        listed = ", ".join(_quote(name, "column") for name, _, _ in tsv)
        url = self._url(f"INSERT INTO {self._qualified} ({listed}) FORMAT TabSeparated")
        self._layout = _Layout(kinds, micros, fields, url, tsv)

    def target(self) -> str:
        """The insert URL (statement and settings in its query string; for a TabSeparated
        insert, once the columns are known, the one naming them)."""
        layout = self._layout
        return self._insert_url if layout is None else layout.url

    def encode(self, batch: Sequence[bytes]) -> bytes:
        """The body for *batch*, in the insert format (a line that is not a JSON object
        raises ``ValueError``; :meth:`write` drops such lines instead)."""
        rows, _, dropped = self._rows(batch)
        if dropped:
            raise ValueError("a line is not a JSON object")
        return self._layout.body(rows)  # type: ignore[union-attr]

    def row(self, line: bytes) -> bytes | None:
        """The row for one JSON *line*, in the insert format (``None``: not a JSON object)."""
        rows, _, _ = self._rows((line,))
        return self._layout.body(rows) if rows else None  # type: ignore[union-attr]

    def _rows(self, batch: Sequence[bytes]) -> tuple[list[Any], list[int], dict[int, str]]:
        """The rows of *batch* (what the hot path's ``clickhouse_body`` makes a body of),
        the index in *batch* of each, and the lines that are not JSON objects (index ->
        ``"not_json"``). The compiled build copies the JSON formatter's lines into rows
        piece by piece without the GIL and parses others once, writing each row's JSON
        straight into bytes; the pure-Python one parses each line and serialises the
        batch's rows with one ``orjson.dumps``."""
        layout = self._layout
        if layout is None:
            raise RuntimeError("the table's columns are not known yet")
        return self._rows_for(batch, layout)

    @staticmethod
    def _rows_for(
        batch: Sequence[bytes], layout: _Layout
    ) -> tuple[list[Any], list[int], dict[int, str]]:
        """:meth:`_rows` for the columns *layout*."""
        if len(batch) <= _CHUNK:
            return layout.rows(batch, 0)
        rows: list[Any] = []
        indices: list[int] = []
        dropped: dict[int, str] = {}
        # A chunk at a time: lines that are not in the JSON formatter's canonical form
        # are parsed holding the GIL, and between chunks the application's threads get
        # it (10,000 such lines at once kept them waiting 30 ms; by chunks, 10 ms at
        # most). The compiled build makes canonical lines into rows without the GIL.
        for start in range(0, len(batch), _CHUNK):
            part = layout.rows(batch[start : start + _CHUNK], start)
            rows += part[0]
            indices += part[1]
            dropped.update(part[2])
        return rows, indices, dropped

    # -- the insert -------------------------------------------------------------------------

    def write(self, batch: Sequence[bytes]) -> None:
        """Insert *batch*; isolate and drop the rows ClickHouse refuses.

        Raises:
            DeliveryError: rows dropped (``clickhouse_<code>``, or ``not_json`` for a line
                that is not a JSON object), or rows to retry (the server is down, busy...).
        """
        if not batch:
            return
        self.send(batch, self.prepare(batch))

    def prepare(self, batch: Sequence[bytes]) -> _Insert:
        """The insert for *batch*: its rows (for the table's columns as known now) and
        their body; while the columns are not known yet (before the first insert asks the
        server), nothing: :meth:`send` makes them."""
        layout = self._layout
        if layout is None:
            return _Insert(None, [], [], {}, b"")
        rows, indices, dropped = self._rows_for(batch, layout)
        body = self._compress(layout.body(rows)) if rows else b""
        return _Insert(layout, rows, indices, dropped, body)

    def send(
        self,
        batch: Sequence[bytes],
        prepared: _Insert,
        meanwhile: Callable[[], object] | None = None,
    ) -> None:
        """Insert *batch*, made ready by :meth:`prepare` (*prepared*), made again here if
        the table's columns changed since; raise as :meth:`write` does. *meanwhile* goes
        with the first insert (see :meth:`~kakashi.writers.http.HttpWriter.post`)."""
        if not batch:
            return
        if self._layout is None:
            self._discover(len(batch))
        insert = prepared
        if insert.layout is not self._layout:  # prepared for columns no longer current
            insert = self.prepare(batch)
        dropped = dict(insert.dropped)  # the insert's own stays as it was (sent again)
        detail = "a line is not a JSON object (the ClickHouse writer needs the JSON formatter)"
        failure = self._insert_isolating(insert, dropped, meanwhile) if insert.rows else None
        if failure is not None:
            raise DeliveryError(
                failure.reason,
                retry=failure.retry,
                dropped=dropped,
                retry_after=failure.retry_after,
                detail=failure.detail,
            )
        if dropped:
            first = dropped[min(dropped)]
            raise DeliveryError(
                first,
                dropped=dropped,
                detail=detail if first == "not_json" else self.last_rejection,
            )

    def _insert_isolating(
        self,
        insert: _Insert,
        dropped: dict[int, str],
        meanwhile: Callable[[], object] | None = None,
    ) -> DeliveryError | None:
        """Insert the rows of *insert* (with the first request, *meanwhile*), bisecting
        around malformed ones, which go to *dropped*. Returns the error for the rows left
        to retry, or ``None``."""
        rows, indices, url = insert.rows, insert.indices, insert.layout.url  # type: ignore[union-attr]
        budget = self.max_split_requests * -(-len(rows) // _SPLIT_ROWS)
        parts = [list(range(len(rows)))]  # a stack: the next part to send is last
        while parts:
            part = parts.pop()
            if len(part) == len(rows):
                error = self._insert(url, rows, insert.body, meanwhile)
            else:
                part_rows = [rows[i] for i in part]
                body = self._compress(insert.layout.body(part_rows))  # type: ignore[union-attr]
                error = self._insert(url, part_rows, body)
            if error is None:
                continue
            code = _error_code(error.detail)
            renamed = code == 117 and "Unknown field" in error.detail  # JSONEachRow
            listed = code == 16 and insert.layout.tsv is not None  # type: ignore[union-attr]
            if self._discovered and (renamed or listed):
                # A column went away since the DESCRIBE: ask again on the next try.
                self._layout = None
                rest = [indices[i] for piece in (part, *reversed(parts)) for i in piece]
                return DeliveryError(f"clickhouse_{code}", retry=rest, detail=error.detail)
            if code in DATA_ERROR_CODES:
                label = f"clickhouse_{code}"
                if len(part) == 1 or budget < 2:
                    for i in part:
                        dropped[indices[i]] = label
                    self.rejected[label] = self.rejected.get(label, 0) + len(part)
                    self.last_rejection = error.detail
                    continue
                budget -= 2
                middle = len(part) // 2
                parts += (part[middle:], part[:middle])
                continue
            # The request, not a row: the same for this part and every part after it.
            rest = [indices[i] for piece in (part, *reversed(parts)) for i in piece]
            if code in _REQUEST_ERROR_CODES:
                label = f"clickhouse_{code}"
                dropped.update(dict.fromkeys(rest, label))
                self.rejected[label] = self.rejected.get(label, 0) + len(rest)
                self.last_rejection = error.detail
                return None
            if error.retry:
                return DeliveryError(
                    error.reason, retry=rest, retry_after=error.retry_after, detail=error.detail
                )
            dropped.update(dict.fromkeys(rest, error.reason))
            self.last_rejection = error.detail
            return None
        return None

    def _insert(
        self,
        url: str,
        rows: list[Any],
        body: bytes,
        meanwhile: Callable[[], object] | None = None,
    ) -> DeliveryError | None:
        """One INSERT request of *rows* to *url* (*body*: them, compressed); the error (for
        all of them) or ``None``."""
        try:
            self.post(body, len(rows), url=url, meanwhile=meanwhile)
        except DeliveryError as error:
            return error
        self.requests += 1
        self.bytes_sent += len(body)
        self.rows_delivered += len(rows)
        return None

    def _discover(self, size: int) -> None:
        """Learn the table's columns from the server.

        Raises:
            DeliveryError: the server could not say (for the whole batch of *size*).
        """
        try:
            answer = self.post(self._compress(b""), 1, url=self._describe_url)
        except DeliveryError as error:
            code = _error_code(error.detail)
            if code in _REQUEST_ERROR_CODES:
                label = f"clickhouse_{code}"
                self.rejected[label] = self.rejected.get(label, 0) + size
                raise DeliveryError.whole(
                    size, label, retryable=False, detail=error.detail
                ) from error
            raise DeliveryError.whole(
                size, error.reason, retryable=bool(error.retry), detail=error.detail
            ) from error
        columns = {}
        computed = []
        for line in answer.body.splitlines():
            if line.strip():
                column = orjson.loads(line)
                columns[column["name"]] = column["type"]
                if column.get("default_type") in ("MATERIALIZED", "ALIAS"):
                    computed.append(column["name"])
        self._use_columns(columns, computed)
        self._discovered = True

    def __repr__(self) -> str:
        return f"<ClickHouseWriter {self.url} {self.database}.{self.table}>"


# -- the recommended table ------------------------------------------------------------------


def create_table_sql(
    table: str,
    *,
    database: str = "default",
    columns: Mapping[str, str] | None = None,
    ttl_days: int | None = 30,
    version: tuple[int, int] | None = None,
) -> str:
    """The ``CREATE TABLE`` statement of the recommended log table.

    One row per record: ``timestamp``, ``level``, ``logger``, ``message``, then *columns*
    (fields you query often, in their own typed columns), then ``fields`` (every other key,
    as JSON). Partitioned by day (old days are dropped whole, cheaply), ordered by
    ``(level, logger, timestamp)``, rows older than *ttl_days* deleted by a TTL.

    Args:
        table, database: where.
        columns: extra columns, name -> ClickHouse type, e.g. ``{"user_id": "UInt64"}``.
        ttl_days: days a row is kept (``None``: forever).
        version: the server's ``(major, minor)``. ``None`` or 20.1 and later: the
            timestamp is a ``DateTime64(6, 'UTC')``, strings repeated in many rows are
            ``LowCardinality``, text columns are zstd-compressed. Before 20.1 (Debian's
            18.16): a ``DateTime`` (seconds) and a ``timestamp_us`` column with the
            microseconds, plain strings, and the TTL clause only from 19.6 (before, see
            :func:`drop_expired_partitions`).

    Raises:
        ValueError: an empty name, a reserved column in *columns*, *ttl_days* not a
            positive int.
    """
    qualified = f"{_quote(database, 'database')}.{_quote(table, 'table')}"
    if ttl_days is not None and (type(ttl_days) is not int or ttl_days < 1):
        raise ValueError(f"ttl_days must be an int >= 1 or None, got {ttl_days!r}")
    modern = version is None or tuple(version) >= _MODERN_SINCE
    if modern:
        definitions = [
            ("timestamp", "DateTime64(6, 'UTC') CODEC(Delta, ZSTD)"),
            ("level", "LowCardinality(String)"),
            ("logger", "LowCardinality(String)"),
            ("message", "String CODEC(ZSTD)"),
        ]
    else:
        definitions = [
            ("timestamp", "DateTime('UTC')"),
            ("timestamp_us", "UInt32"),
            ("level", "String"),
            ("logger", "String"),
            ("message", "String"),
        ]
    reserved = {name for name, _ in definitions} | {"fields"}
    for name, kind in dict(columns or {}).items():
        if name in reserved or not isinstance(kind, str) or not kind:
            raise ValueError(f"columns: {name!r} is reserved or has no type ({kind!r})")
        definitions.append((name, kind))
    definitions.append(("fields", "String CODEC(ZSTD)" if modern else "String"))
    order = "level, logger, timestamp" + ("" if modern else ", timestamp_us")
    lines = [
        f"CREATE TABLE IF NOT EXISTS {qualified}",
        "(",
        ",\n".join(f"    {_quote(name, 'column')} {kind}" for name, kind in definitions),
        ")",
        "ENGINE = MergeTree",
        "PARTITION BY toYYYYMMDD(timestamp)",
        f"ORDER BY ({order})",
    ]
    if ttl_days is not None and (version is None or tuple(version) >= _TTL_SINCE):
        lines.append(f"TTL toDateTime(timestamp) + INTERVAL {ttl_days} DAY")
    return "\n".join(lines)


def _query(
    url: str, sql: str, *, username: str | None, password: str | None, timeout: float
) -> str:
    """Run *sql* on the server at *url*; its answer as text.

    Raises:
        RuntimeError: the server refused it (its message); OSError/urllib3 errors: it
            could not be reached.
    """
    import urllib3

    headers = {}
    if username is not None or password is not None:
        headers = urllib3.util.make_headers(basic_auth=f"{username or ''}:{password or ''}")
    answer = urllib3.request(
        "POST",
        url.rstrip("/") + "/",
        body=sql.encode(),
        headers=headers,
        timeout=timeout,
        retries=False,
    )
    text = (answer.data or b"").decode("utf-8", "replace")
    if answer.status != 200:
        raise RuntimeError(
            f"ClickHouse at {url} refused {sql.split(maxsplit=1)[0]}: {text.strip()[:500]}"
        )
    return text


def server_version(
    url: str, *, username: str | None = None, password: str | None = None, timeout: float = 10.0
) -> tuple[int, int]:
    """The ``(major, minor)`` version of the ClickHouse server at *url*.

    *username*, *password* (HTTP basic authentication) and *timeout* (seconds) are as
    for :class:`ClickHouseWriter`.
    """
    text = _query(url, "SELECT version()", username=username, password=password, timeout=timeout)
    major, minor = text.strip().split(".")[:2]
    return int(major), int(minor)


def create_table(
    url: str,
    table: str,
    *,
    database: str = "default",
    columns: Mapping[str, str] | None = None,
    ttl_days: int | None = 30,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 10.0,
) -> str:
    """Create the recommended table (:func:`create_table_sql`) for the server's version,
    if it does not exist; return the statement run.

    *url* is the server's HTTP interface; *username*, *password* and *timeout* are as
    for :func:`server_version`.

    Raises:
        RuntimeError: the server refused the statement (its message).
    """
    auth = {"username": username, "password": password, "timeout": timeout}
    version = server_version(url, **auth)  # type: ignore[arg-type]
    sql = create_table_sql(
        table, database=database, columns=columns, ttl_days=ttl_days, version=version
    )
    _query(url, sql, **auth)  # type: ignore[arg-type]
    return sql


def drop_expired_partitions(
    url: str,
    table: str,
    *,
    days: int,
    database: str = "default",
    today: datetime.date | None = None,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 10.0,
) -> list[str]:
    """Drop the day partitions of the recommended table older than *days* (retention for
    servers without TTL; run it daily, from cron). Returns the partitions dropped.

    *url* is the server's HTTP interface, *database* the table's, *today* the day the
    ages count from (default: today, UTC); *username*, *password* and *timeout* are as
    for :func:`server_version`.

    Raises:
        ValueError: *days* is not an int >= 1.
        RuntimeError: the server refused a statement.
    """
    if type(days) is not int or days < 1:
        raise ValueError(f"days must be an int >= 1, got {days!r}")
    auth: dict[str, Any] = {"username": username, "password": password, "timeout": timeout}
    cutoff = (today or datetime.datetime.now(datetime.timezone.utc).date()) - datetime.timedelta(
        days=days
    )
    qualified = f"{_quote(database, 'database')}.{_quote(table, 'table')}"
    listed = _query(
        url,
        "SELECT DISTINCT partition FROM system.parts WHERE active AND database = "
        f"'{_literal(database)}' AND table = '{_literal(table)}' FORMAT TSV",
        **auth,
    )
    dropped = []
    for partition in sorted(_day_partitions(listed.split())):
        if partition < cutoff.strftime("%Y%m%d"):
            _query(url, f"ALTER TABLE {qualified} DROP PARTITION {partition}", **auth)
            dropped.append(partition)
    return dropped


def _day_partitions(names: Iterable[str]) -> Iterable[str]:
    """The names that are ``toYYYYMMDD`` partitions (eight digits)."""
    return (name for name in names if len(name) == 8 and name.isdigit())


def _literal(text: str) -> str:
    """*text* inside a single-quoted SQL string."""
    return text.replace("\\", "\\\\").replace("'", "\\'")
