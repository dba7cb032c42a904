"""The compiled hot path and its pure-Python twin: selection and parity."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import kakashi._speedups as speedups
from tests.conftest import NO_EXTENSIONS, Implementation


class TestSelection:
    @pytest.mark.skipif(NO_EXTENSIONS, reason="KAKASHI_NO_EXTENSIONS is set")
    def test_extension_loaded_when_built(self) -> None:
        """Without KAKASHI_NO_EXTENSIONS the dispatcher hands out the compiled twin."""
        assert speedups.USING_SPEEDUPS is True
        assert speedups.Logger.__module__ == "kakashi._speedups._capture_c"
        assert speedups.format_json.__module__ == "kakashi._speedups._format_c"

    def test_no_extensions_env_gives_the_twin(self) -> None:
        """KAKASHI_NO_EXTENSIONS=1 at import time selects the pure-Python twin."""
        env = dict(os.environ, KAKASHI_NO_EXTENSIONS="1")
        code = (
            "import kakashi._speedups as s, kakashi;"
            "print(s.USING_SPEEDUPS, s.Logger.__module__, kakashi.USING_SPEEDUPS)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )

        assert "False kakashi._speedups._capture_py False" == out.stdout.strip()


class TestParity:
    def test_dispatcher_exports_every_name(self) -> None:
        """__all__ lists exactly the names the dispatcher takes from the twins."""
        names = ["NO_EXTENSIONS", "SELECTION", "USING_SPEEDUPS", "build_record"]
        names += list(speedups._CAPTURE_NAMES)

        names += [*speedups._FORMAT_NAMES, *speedups._QUEUE_NAMES]

        assert sorted(names) == sorted(speedups.__all__)

    def test_same_public_names(self, impl: Implementation) -> None:
        """Each twin exports every name the dispatcher needs."""
        for name in speedups._CAPTURE_NAMES:
            assert hasattr(impl.capture, name), name
        for name in speedups._FORMAT_NAMES:
            assert hasattr(impl.format, name), name
        for name in speedups._QUEUE_NAMES:
            assert hasattr(impl.module("queue"), name), name

    def test_same_logger_methods(self, impl: Implementation) -> None:
        """Both loggers have the same public methods."""
        expected = {
            "debug", "info", "warning", "warn", "error", "exception", "critical", "fatal",
            "log", "is_enabled_for", "isEnabledFor", "bind", "with_fields", "level",
            "bound_fields", "name",
        }  # fmt: skip
        public = {name for name in dir(impl.capture.Logger) if not name.startswith("_")}

        assert expected <= public | {"name"}

    def test_level_methods_have_signatures(self, impl: Implementation) -> None:
        """help() shows a real signature for the level methods of both twins."""
        import inspect

        signature = inspect.signature(impl.capture.Logger.info)

        assert "msg" in signature.parameters
