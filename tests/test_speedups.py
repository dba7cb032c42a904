"""The compiled hot path and its pure-Python twin: selection and parity."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import kakashi
import kakashi._speedups as speedups
from kakashi._switch import parse_switch
from tests.conftest import NO_EXTENSIONS, Implementation

PACKAGE = Path(kakashi.__file__).resolve().parent


def import_copy(tmp_path: Path, broken_modules: bool) -> subprocess.CompletedProcess[str]:
    """Import a copy of the package's Python files (and garbage compiled modules if asked)."""
    shutil.copytree(PACKAGE, tmp_path / "kakashi", ignore=shutil.ignore_patterns(
        "*.so", "*.pyd", "*.c", "*.html", "_build.json", "__pycache__"))  # fmt: skip
    if broken_modules:
        for name in ("_capture_c", "_format_c", "_queue_c", "_bridge_c"):
            (tmp_path / "kakashi/_speedups" / f"{name}.abi3.so").write_bytes(b"not a module")
    code = (
        "import kakashi, kakashi._speedups as s\n"
        "kakashi.Pipeline(writers=(kakashi.null_writer,)).get_logger('a').info('works')\n"
        "print(s.USING_SPEEDUPS, s.SELECTION, sep='|')"
    )
    env = {k: v for k, v in os.environ.items() if k != "KAKASHI_NO_EXTENSIONS"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env={**env, "PYTHONPATH": str(tmp_path)},
        capture_output=True, text=True, check=True,
    )  # fmt: skip


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
        assert "" == out.stderr

    @pytest.mark.parametrize("value", ["1", "true", "YES", " on ", "True"])
    def test_switch_on_spellings(self, value: str) -> None:
        """1, true, yes and on, in any case, turn KAKASHI_NO_EXTENSIONS on."""
        assert True is parse_switch("KAKASHI_NO_EXTENSIONS", value)

    @pytest.mark.parametrize("value", [None, "", "0", "false", "No", "OFF"])
    def test_switch_off_spellings(self, value: str | None) -> None:
        """0, false, no, off, empty or unset leave the compiled build on."""
        assert False is parse_switch("KAKASHI_NO_EXTENSIONS", value)

    def test_switch_rejects_other_values(self) -> None:
        """Any other value is an error naming the variable, the value and the spellings."""
        with pytest.raises(ValueError, match=r"KAKASHI_NO_EXTENSIONS='disable' .* 1, true"):
            parse_switch("KAKASHI_NO_EXTENSIONS", "disable")

    @pytest.mark.parametrize(("value", "notice"), [("0", ""), ("bogus", "'bogus' is not")])
    def test_off_or_unknown_value_keeps_the_compiled_build(self, value: str, notice: str) -> None:
        """KAKASHI_NO_EXTENSIONS=0 keeps the compiled build; an unknown value says so, once."""
        try:
            Implementation(pure=False).load()
        except ImportError:
            pytest.skip("the compiled extension is not built here")
        env = dict(os.environ, KAKASHI_NO_EXTENSIONS=value)
        out = subprocess.run(
            [sys.executable, "-c", "import kakashi; print(kakashi.USING_SPEEDUPS)"],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip

        assert "True" == out.stdout.strip()
        assert (1 if notice else 0) == out.stderr.count("kakashi:")
        assert notice in out.stderr

    def test_unloadable_extension_is_reported_once(self, tmp_path: Path) -> None:
        """Compiled modules that exist but do not load: pure twin, one notice on stderr."""
        result = import_copy(tmp_path, broken_modules=True)
        using, selection = result.stdout.strip().split("|")

        assert "False" == using
        assert selection.startswith("pure-Python: the compiled modules do not load")
        assert 1 == result.stderr.count("kakashi: pure-Python: the compiled modules do not load")
        assert "KAKASHI_NO_EXTENSIONS=1" in result.stderr

    def test_modules_older_than_their_sources_are_not_used(self, tmp_path: Path) -> None:
        """An in-place build not redone after its sources changed gives the twin, and says so."""
        if not (PACKAGE / "_speedups" / "_build.json").exists() or NO_EXTENSIONS:
            pytest.skip("needs a compiled build with its build record")
        shutil.copytree(PACKAGE, tmp_path / "fresh" / "kakashi",
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        shutil.copytree(PACKAGE, tmp_path / "stale" / "kakashi",
                        ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
        pxd = tmp_path / "stale" / "kakashi" / "_speedups" / "_queue_c.pxd"
        pxd.write_text(pxd.read_text() + "    cdef public long long added_since\n")
        code = "import kakashi; print(kakashi.USING_SPEEDUPS)"
        env = {k: v for k, v in os.environ.items() if k != "KAKASHI_NO_EXTENSIONS"}
        fresh, stale = (
            subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           cwd=tmp_path, env={**env, "PYTHONPATH": str(tmp_path / name)},
                           check=True)
            for name in ("fresh", "stale")
        )  # fmt: skip

        assert ("True", "") == (fresh.stdout.strip(), fresh.stderr)
        assert "False" == stale.stdout.strip()
        assert 1 == stale.stderr.count("older than their sources (_queue_c.pxd changed")

    def test_unbuilt_source_tree_is_quiet_but_explained(self, tmp_path: Path) -> None:
        """A copy that was never built runs pure, silently; SELECTION says how to build it."""
        result = import_copy(tmp_path, broken_modules=False)
        using, selection = result.stdout.strip().split("|")

        assert ("False", "") == (using, result.stderr)
        assert "not built in this copy" in selection and "pip install -e ." in selection


class TestInterpreters:
    """Kakashi runs with the GIL: the compiled modules do not claim to be safe without it."""

    @pytest.mark.c_extension
    def test_compiled_modules_do_not_declare_free_threading(self, tmp_path: Path) -> None:
        """Each .pyx, compiled as the build compiles it, asks a free-threaded CPython to
        keep the GIL (``Py_MOD_GIL_USED``): the ring, the routes and the lazy fields
        have no critical sections."""
        pytest.importorskip("Cython")
        root = PACKAGE.parent
        assert "freethreading_compatible" not in (root / "setup.py").read_text()
        for name in ("_capture_c", "_format_c", "_queue_c", "_bridge_c"):
            source = PACKAGE / "_speedups" / f"{name}.pyx"
            out = PACKAGE / "_speedups" / f"{name}.c"  # what the build made, when current
            if not out.exists() or out.stat().st_mtime < source.stat().st_mtime:
                out = tmp_path / f"{name}.c"
                subprocess.run(
                    [sys.executable, "-m", "cython", "-3", "-I", str(root), "-o", str(out),
                     str(source)],
                    check=True, capture_output=True, cwd=root,
                )  # fmt: skip
            # What the module declares unless the C compiler is told otherwise.
            declared = re.search(
                # (indented when a verbatim C block of the module comes before it)
                r"#ifdef CYTHON_FREETHREADING_COMPATIBLE\n(?:.*\n){5} *#else\n"
                r" *#define __Pyx_FREETHREADING_COMPATIBLE (\w+)",
                out.read_text(),
            )
            assert declared is not None, name
            assert ("Py_MOD_GIL_USED", name) == (declared[1], name)

    @pytest.mark.skipif(
        not hasattr(sys, "_is_gil_enabled"), reason="needs a free-threaded CPython (3.13t+)"
    )
    def test_a_free_threaded_interpreter_keeps_the_gil(self) -> None:
        """On a free-threaded CPython, importing the compiled build turns the GIL back on
        (CPython does that for a module that does not declare itself safe without it)."""
        code = "import kakashi, sys; print(kakashi._speedups.USING_SPEEDUPS, sys._is_gil_enabled())"
        env = {**os.environ, "KAKASHI_NO_EXTENSIONS": "0"}
        env.pop("PYTHON_GIL", None)
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )

        assert ["True", "True"] == result.stdout.split()


class TestParity:
    def test_dispatcher_exports_every_name(self) -> None:
        """__all__ lists exactly the names the dispatcher takes from the twins."""
        names = ["NO_EXTENSIONS", "SELECTION", "USING_SPEEDUPS", "build_record"]
        names += list(speedups._CAPTURE_NAMES)

        names += [*speedups._FORMAT_NAMES, *speedups._QUEUE_NAMES, *speedups._BRIDGE_NAMES]

        assert sorted(names) == sorted(speedups.__all__)

    def test_same_public_names(self, impl: Implementation) -> None:
        """Each twin exports every name the dispatcher needs."""
        for name in speedups._CAPTURE_NAMES:
            assert hasattr(impl.capture, name), name
        for name in speedups._FORMAT_NAMES:
            assert hasattr(impl.format, name), name
        for name in speedups._QUEUE_NAMES:
            assert hasattr(impl.module("queue"), name), name
        for name in speedups._BRIDGE_NAMES:
            assert hasattr(impl.module("bridge"), name), name

    def test_same_logger_methods(self, impl: Implementation) -> None:
        """Both loggers have the same public methods."""
        expected = {
            "debug", "info", "warning", "warn", "error", "exception", "critical", "fatal",
            "log", "is_enabled_for", "isEnabledFor", "bind", "with_fields", "level",
            "bound_fields", "name",
        }  # fmt: skip
        public = {name for name in dir(impl.capture.Logger) if not name.startswith("_")}

        assert expected <= public | {"name"}

    @pytest.mark.parametrize(
        "method", ["debug", "info", "warning", "warn", "error", "exception", "critical", "fatal"]
    )
    def test_level_methods_document_their_arguments_in_call_order(
        self, impl: Implementation, method: str
    ) -> None:
        """Each level method's docstring lists msg, *args, the controls, **fields, in order."""
        doc = getattr(impl.capture.Logger, method).__doc__
        names = ["msg:", "*args:", "exc_info:", "stack_info:", "stacklevel:", "**fields:"]
        positions = [doc.index(f"\n    {name}") for name in names]

        assert sorted(positions) == positions
        assert doc == getattr(Implementation(pure=True).capture.Logger, method).__doc__

    def test_log_documents_level_first(self, impl: Implementation) -> None:
        """log() documents *level* before the message, as it is called."""
        doc = impl.capture.Logger.log.__doc__

        assert doc.index("\n    level:") < doc.index("\n    msg:") < doc.index("\n    **fields:")

    def test_level_methods_have_signatures(self, impl: Implementation) -> None:
        """help() shows a real signature for the level methods of both twins."""
        import inspect

        signature = inspect.signature(impl.capture.Logger.info)

        assert "msg" in signature.parameters


def test_sink_run_end_finds_each_run(impl: Implementation) -> None:
    """The worker hands each run of records going to one sink to that sink at once:
    sink_run_end gives the index after the run from *start* (records of either kind, or
    any object with a ``sink``), and refuses a start outside the batch."""

    class Other:
        def __init__(self, sink: object) -> None:
            self.sink = sink

    first, second = object(), object()
    record = impl.capture.Record

    def make(sink: object) -> Any:
        return record(0, 20, "app", "message", sink=sink)

    batch = [make(first), make(first), Other(first), make(second), make(first), make(first)]
    assert 3 == impl.capture.sink_run_end(batch, 0)
    assert 3 == impl.capture.sink_run_end(batch, 1)
    assert 4 == impl.capture.sink_run_end(batch, 3)
    assert 6 == impl.capture.sink_run_end(batch, 4)
    assert 6 == impl.capture.sink_run_end(batch, 5)
    assert 1 == impl.capture.sink_run_end([make(None)], 0)
    assert 3 == impl.capture.sink_run_end(tuple(batch), 0)  # the worker's batch
    for start in (-1, 6):
        with pytest.raises(IndexError, match="outside a batch of 6"):
            impl.capture.sink_run_end(batch, start)


def test_sink_run_end_reads_a_list_as_it_was(impl: Implementation) -> None:
    """A record's ``sink`` that empties the list being read ends no run early and
    reads no freed memory: a list is read as it was when the call began."""
    first = object()

    class Clearing:
        @property
        def sink(self) -> object:
            batch.clear()
            return first

    batch: list[Any] = [Clearing(), Clearing(), Clearing()]
    assert 3 == impl.capture.sink_run_end(batch, 0)
    assert [] == batch
