"""Rotated-file names: one parser for the writer and the reader, neighbours kept apart."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from kakashi.cli.view import Query, view
from kakashi.writers import RotatingFileWriter
from kakashi.writers.naming import (
    LogSet,
    log_sets,
    next_timestamped_name,
    parse,
    rotated_files,
    timestamped_name,
)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("app.log.1", ("app.log", 1, None, 0, "")),
        ("app.log.12.zst", ("app.log", 12, None, 0, ".zst")),
        ("app.log.3.gz", ("app.log", 3, None, 0, ".gz")),
        ("app.log.zst.2", ("app.log", 2, None, 0, "")),  # from a .zst active file
        ("app.2026-11-27.log", ("app.log", None, "2026-11-27", 0, "")),
        ("app.2026-11-27T16.log.zst", ("app.log", None, "2026-11-27T16", 0, ".zst")),
        ("app.2026-11-27T16-59-00.3.log", ("app.log", None, "2026-11-27T16-59-00", 3, "")),
        ("app.2026-11-27.access.log", ("app.access.log", None, "2026-11-27", 0, "")),
        ("app.access.log.1.gz", ("app.access.log", 1, None, 0, ".gz")),
        ("app.2026-11-27.1", ("app", None, "2026-11-27", 1, "")),
        ("app.2026-11-27.log.1", ("app.2026-11-27.log", 1, None, 0, "")),
        ("svc[1].log.10", ("svc[1].log", 10, None, 0, "")),
        ("my app.2026-11-27.log", ("my app.log", None, "2026-11-27", 0, "")),
    ],
)
def test_rotated_names_parse_to_one_log(name: str, expected: tuple[object, ...]) -> None:
    """Each rotated name says which log it belongs to, its number or stamp, its compression."""
    parsed = parse(name)

    assert parsed is not None
    assert expected == (
        parsed.log,
        parsed.number,
        parsed.stamp,
        parsed.counter,
        parsed.compression,
    )


@pytest.mark.parametrize(
    "name",
    ["app.log", "app.log.zst", "app.log.lock", "app.log.1.zst.partial", "app.1.log", "notes.txt"],
)
def test_other_names_are_not_rotated_files(name: str) -> None:
    """Active files, locks and compressions in progress are not rotated files."""
    assert None is parse(name)


def test_order_is_numeric_and_oldest_first(tmp_path: Path) -> None:
    """.10 is older than .2; counters order numerically; stamps come before numbers."""
    names = [
        "app.log.1",
        "app.log.2.zst",
        "app.log.10.zst",
        "app.2026-11-26.log.gz",
        "app.2026-11-27.log",
        "app.2026-11-27.2.log",
        "app.2026-11-27.10.log",
        "app.log",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")

    assert [
        "app.2026-11-26.log.gz",
        "app.2026-11-27.log",
        "app.2026-11-27.2.log",
        "app.2026-11-27.10.log",
        "app.log.10.zst",
        "app.log.2.zst",
        "app.log.1",
    ] == [path.name for path in rotated_files(tmp_path, "app.log")]


def test_neighbours_sharing_a_prefix_stay_apart(tmp_path: Path) -> None:
    """app.log's files never include app.access.log's, numbered or timestamped."""
    names = [
        "app.log",
        "app.log.1",
        "app.2026-11-27.log.zst",
        "app.access.log",
        "app.access.log.1",
        "app.2026-11-27.access.log.zst",
        "app.log.lock",
        "app.log.2.zst.partial",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")

    assert ["app.2026-11-27.log.zst", "app.log.1"] == [
        path.name for path in rotated_files(tmp_path, "app.log")
    ]
    assert ["app.2026-11-27.access.log.zst", "app.access.log.1"] == [
        path.name for path in rotated_files(tmp_path, "app.access.log")
    ]


def test_reader_leaves_a_neighbour_out(tmp_path: Path) -> None:
    """kakashi view app.log reads app.log's set only, not app.access.log's rotated files."""
    files = {
        "app.2026-11-26.log": "a1",
        "app.log.1": "a2",
        "app.log": "a3",
        "app.2026-11-26.access.log": "x1",
        "app.access.log.1": "x2",
        "app.access.log": "x3",
    }
    for name, message in files.items():
        (tmp_path / name).write_text(json.dumps({"message": message}) + "\n")
    out = io.StringIO()
    view([tmp_path / "app.log"], Query(), out, as_json=True, follow=False)

    assert ["a1", "a2", "a3"] == [
        json.loads(line)["message"] for line in out.getvalue().splitlines()
    ]


def test_names_are_literal(tmp_path: Path) -> None:
    """Glob characters in a name are just characters."""
    (tmp_path / "svc[1].log.1").write_bytes(b"")
    (tmp_path / "svc1.log.1").write_bytes(b"")

    assert ["svc[1].log.1"] == [path.name for path in rotated_files(tmp_path, "svc[1].log")]


def test_next_timestamped_name_counts_taken_names() -> None:
    """A stamp already used (compressed or not) gets the counter after the highest taken,
    even when a lower one was freed by retention."""
    taken = ["app.2026-11-27.log.zst", "app.2026-11-27.1.log", "app.2026-11-27.access.log"]

    assert "app.2026-11-27.2.log" == next_timestamped_name("app.log", "2026-11-27", taken)
    assert "app.2026-11-27.2.log" == next_timestamped_name("app.log", "2026-11-27", taken[1:])
    assert "app.2026-11-28.log" == next_timestamped_name("app.log", "2026-11-28", taken)
    assert "app.2026-11-27.access.log" == timestamped_name("app.access.log", "2026-11-27")
    assert "app.2026-11-27.1.access.log" == next_timestamped_name(
        "app.access.log", "2026-11-27", taken
    )


def test_log_sets_of_a_directory(tmp_path: Path) -> None:
    """Every log in a directory, with a log whose active file is gone; locks, compressions
    in progress, dot-files and directories left out."""
    for name in [
        "app.log",
        "app.log.2.zst",
        "app.log.1.zst",
        "app.log.lock",
        "app.log.3.zst.partial",
        "app.access.log.1.gz",
        ".hidden.log",
        "notes.txt",
    ]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "archive").mkdir()

    assert [
        LogSet(tmp_path / "app.access.log", [tmp_path / "app.access.log.1.gz"], []),
        LogSet(
            tmp_path / "app.log",
            [tmp_path / "app.log.2.zst", tmp_path / "app.log.1.zst"],
            [tmp_path / "app.log"],
        ),
        LogSet(tmp_path / "notes.txt", [], [tmp_path / "notes.txt"]),
    ] == log_sets(tmp_path)


@pytest.mark.parametrize("naming", ["numbered", "timestamped"])
def test_retention_spares_a_neighbour_sharing_a_prefix(tmp_path: Path, naming: str) -> None:
    """backup_count on app.log deletes none of app.access.log's rotated files."""
    neighbours = ["app.access.log.1", "app.access.log.2.zst", "app.2026-11-27.access.log.gz"]
    for name in neighbours:
        (tmp_path / name).write_bytes(b"neighbour\n")
    writer = RotatingFileWriter(
        tmp_path / "app.log", max_bytes=20, backup_count=1, naming=naming, compression=None
    )
    for n in range(6):
        writer.write([f"record-{n:012d}".encode()])  # one record per file: five rotations
    assert writer.wait_for_compression(30)
    writer.close()

    assert [b"neighbour\n"] * 3 == [(tmp_path / name).read_bytes() for name in neighbours]
    assert [[b"record-000000000004"]] == [
        path.read_bytes().splitlines() for path in writer.rotated_files()
    ]


def test_timestamped_names_with_glob_characters(tmp_path: Path) -> None:
    """Rotating svc[1].log twice within one stamp gives a counter (a glob would not see the
    first file and overwrite it), and view reads the set back in order."""
    path = tmp_path / "svc[1].log"
    writer = RotatingFileWriter(
        path, max_bytes=20, naming="timestamped", compression=None, clock=lambda: 1.8e9
    )
    for n in range(3):
        writer.write([json.dumps({"message": f"m{n}", "pad": "x" * 10}).encode()])
    writer.close()
    out = io.StringIO()
    view([path], Query(), out, as_json=True, follow=False)

    assert ["svc[1].2027-01-15T08-00-00.log", "svc[1].2027-01-15T08-00-00.1.log"] == [
        file.name for file in rotated_files(tmp_path, path.name)
    ]
    assert ["m0", "m1", "m2"] == [
        json.loads(line)["message"] for line in out.getvalue().splitlines()
    ]
