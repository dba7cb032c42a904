"""LogLevel, the LOG_LEVEL_* constants and level checking."""

from __future__ import annotations

import logging

import pytest

import kakashi
from kakashi.core import pipeline, records
from kakashi.core.records import LogLevel, level_name, to_level


class TestLogLevel:
    def test_values_match_stdlib(self) -> None:
        """The levels are the stdlib's numbers, so they mix with logging.INFO and ints."""
        assert (10, 20, 30, 40, 50) == tuple(LogLevel)
        assert logging.WARNING == LogLevel.WARNING
        assert LogLevel.INFO < 25 < LogLevel.WARNING

    def test_importable_from_every_documented_home(self) -> None:
        """LogLevel is the same class from kakashi, core.records and core.pipeline."""
        assert kakashi.LogLevel is records.LogLevel is pipeline.LogLevel

    @pytest.mark.parametrize(
        ("name", "expected"),
        [
            ("info", LogLevel.INFO),
            ("INFO", LogLevel.INFO),
            ("Warning", LogLevel.WARNING),
            ("warn", LogLevel.WARNING),
            ("FATAL", LogLevel.CRITICAL),
            (" debug ", LogLevel.DEBUG),
        ],
    )
    def test_from_name_any_case_and_aliases(self, name: str, expected: LogLevel) -> None:
        """from_name accepts any case and the aliases WARN and FATAL."""
        assert expected is LogLevel.from_name(name)

    def test_from_name_unknown(self) -> None:
        """An unknown name raises ValueError listing the valid names."""
        with pytest.raises(ValueError, match=r"unknown level name 'verbose'.*DEBUG"):
            LogLevel.from_name("verbose")

    def test_constants(self) -> None:
        """LOG_LEVEL_* constants are plain ints equal to the levels."""
        assert [10, 20, 30, 40, 50] == [
            kakashi.LOG_LEVEL_DEBUG,
            kakashi.LOG_LEVEL_INFO,
            kakashi.LOG_LEVEL_WARNING,
            kakashi.LOG_LEVEL_ERROR,
            kakashi.LOG_LEVEL_CRITICAL,
        ]

    def test_level_names(self) -> None:
        """Standard levels print by name; others as LEVELn."""
        assert ("INFO", "LEVEL25") == (level_name(20), level_name(25))


class TestToLevel:
    def test_accepts_levels_ints_and_names(self) -> None:
        """Configuration takes a LogLevel, an int or a name."""
        assert (20, 25, 40) == (to_level(LogLevel.INFO), to_level(25), to_level("error"))

    @pytest.mark.parametrize(
        ("value", "error", "message"),
        [
            ("loud", ValueError, "min_level: unknown level name 'loud'"),
            (-1, ValueError, "min_level must be between 0 and 100"),
            (3.5, TypeError, "min_level must be a level"),
            (True, TypeError, "min_level must be a level .* not a bool"),
        ],
    )
    def test_rejects_with_the_parameter_name(
        self, value: object, error: type[Exception], message: str
    ) -> None:
        """Bad levels fail at configuration time with a message naming the parameter."""
        with pytest.raises(error, match=message):
            to_level(value, "min_level")
