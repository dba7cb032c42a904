"""The documentation's example files (``docs/examples/``) and the README's quickstart, run
the way the pages say to use them: Django's settings through Django, the gunicorn
configuration files through gunicorn, the ASGI application under uvicorn and gunicorn's
uvicorn worker, the pytest example through pytest. Each runs in a fresh process, in a
copy of the examples' folder, writing its logs there; the test reads them back.

The examples that fit in a page are ``testcode`` blocks, run by the doctest build
(``ci/test.sh``); :func:`test_every_python_example_of_the_docs_runs` checks that no page
shows Python any other way.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import HeldPort

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A copy of docs/examples, to run in and to log into (``logs/``)."""
    copy = tmp_path / "site"
    shutil.copytree(EXAMPLES, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def environment(site: Path, **extra: str) -> dict[str, str]:
    """The environment of an example's process: the examples and kakashi importable."""
    env = dict(os.environ, LOG_DIR=str(site / "logs"), **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), env.get("PYTHONPATH", "")])
    env.pop("DJANGO_SETTINGS_MODULE", None)
    return env


def logged(site: Path) -> list[dict[str, Any]]:
    """Every record the example wrote to logs/app.log."""
    path = site / "logs" / "app.log"
    return [json.loads(line) for line in path.read_text().splitlines()]


def get(port: int, path: str) -> tuple[int, dict[str, str], bytes]:
    """One GET on its own connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        response = connection.getresponse()
        return response.status, dict(response.headers), response.read()
    finally:
        connection.close()


@contextmanager
def serving(command: list[str], site: Path, port: int, **env: str) -> Iterator[Any]:
    """Start a server as the page says, wait until it answers, and stop it with SIGTERM
    (as a process manager does) when the block ends; yields the process, whose stderr
    is in ``site/server.err``."""
    errors = site / "server.err"
    with errors.open("wb") as stderr:
        server = subprocess.Popen(
            command,
            cwd=site,
            env=environment(site, **env),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, errors.read_text()
            assert time.monotonic() < deadline, errors.read_text()
            try:
                get(port, "/ready-probe")
                break
            except OSError:
                time.sleep(0.1)
        yield server
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def access_records(records: list[dict[str, Any]], path: str) -> list[dict[str, Any]]:
    """The access records of requests to *path*."""
    return [r for r in records if r["logger"] == "kakashi.access" and r.get("path") == path]


# -- Django (docs/django.md) -----------------------------------------------------------

DJANGO_CLIENT = """
import logging
import os

os.environ["DJANGO_SETTINGS_MODULE"] = "django_settings"
import django

django.setup()
from django.test import Client

from kakashi.core.async_interface import shutdown_async_backend

client = Client(raise_request_exception=False)
client.get("/items/7/")
client.get("/health/")
client.get("/boom/")
client.get("/nowhere/")
client.get("/items/8/", REMOTE_ADDR="10.1.2.3", HTTP_X_FORWARDED_FOR="203.0.113.9")
client.get("/items/9/", REMOTE_ADDR="192.0.2.1", HTTP_X_FORWARDED_FOR="203.0.113.9")
logging.getLogger("django.server").info('"GET /items/7/ HTTP/1.1" 200 6')
shutdown_async_backend(timeout=10)
"""


def test_the_django_settings_through_django(site: Path) -> None:
    """docs/examples/django_settings.py (the middleware, ``KAKASHI``, ``LOGGING`` and the
    async backend), applied by Django in a fresh process: one access record per request
    but the excluded health check, the view's records and the application's stdlib
    records in the same file, X-Forwarded-For believed from a trusted proxy only, and
    runserver's access lines and ``django.request``'s twins of the access records gone.
    Nothing on stderr."""
    out = subprocess.run(
        [sys.executable, "-c", DJANGO_CLIENT],
        cwd=site,
        env=environment(site),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (0, "") == (out.returncode, out.stderr)
    records = logged(site)
    assert [
        ("shop", "showing item", None),
        ("payments", "card declined", None),
        ("kakashi.access", "request", 200),
        ("kakashi.access", "request failed", None),
        ("kakashi.access", "request", 500),
        ("kakashi.access", "request", 404),
        ("shop", "showing item", None),
        ("payments", "card declined", None),
        ("kakashi.access", "request", 200),
        ("shop", "showing item", None),
        ("payments", "card declined", None),
        ("kakashi.access", "request", 200),
    ] == [(r["logger"], r["message"], r.get("status")) for r in records]
    assert [] == access_records(records, "/health/")
    assert ["203.0.113.9"] == [r["client_ip"] for r in access_records(records, "/items/8/")]
    assert ["192.0.2.1"] == [r["client_ip"] for r in access_records(records, "/items/9/")]
    assert {"shop"} == {r["service"] for r in records}


def test_the_django_asgi_module_under_uvicorn_drains_at_sigterm(site: Path) -> None:
    """docs/examples/django_asgi.py under a real uvicorn, stopped with SIGTERM right
    after the responses: the lifespan shutdown that ``drain_at_shutdown`` answers puts
    every request's records on disk before the process dies by the signal."""
    with HeldPort() as held:
        command = [sys.executable, "-m", "uvicorn", "django_asgi:application"]
        command += ["--port", str(held.port), "--no-access-log"]
        with serving(command, site, held.port) as server:
            statuses = [get(held.port, f"/items/{pk}/")[0] for pk in range(1, 6)]
    assert [200] * 5 == statuses
    # uvicorn re-raises SIGTERM after its shutdown: no interpreter-exit hook runs.
    assert -signal.SIGTERM == server.returncode, (site / "server.err").read_text()
    records = logged(site)
    assert [f"/items/{pk}/" for pk in range(1, 6)] == [
        r["path"] for r in records if r["logger"] == "kakashi.access" and r["status"] == 200
    ]
    assert 5 == sum(r["message"] == "showing item" for r in records)


def test_django_under_gunicorn_with_the_documented_worker_exit(site: Path) -> None:
    """docs/examples/django_gunicorn_conf.py: gunicorn serving the site, its
    ``worker_exit`` draining the backend; every response has its access record on disk
    after SIGTERM."""
    pytest.importorskip("gunicorn")
    with HeldPort() as held:
        command = [sys.executable, "-m", "gunicorn", "-c", "django_gunicorn_conf.py"]
        command += ["-b", f"127.0.0.1:{held.port}", "-w", "1"]
        with serving(command, site, held.port) as server:
            answers = [get(held.port, f"/items/{pk}/") for pk in range(1, 6)]
    assert 0 == server.returncode, (site / "server.err").read_text()
    records = logged(site)
    assert sorted(headers["X-Request-ID"] for _, headers, _ in answers) == sorted(
        r["request_id"] for r in records if r["logger"] == "kakashi.access" and r["status"] == 200
    )


# -- Flask, ASGI servers and the stdlib bridge (docs/flask.md, asgi.md, stdlib.md) -----


def test_the_flask_factory_under_gunicorn_with_the_documented_config(site: Path) -> None:
    """docs/examples/flask_app.py's factory served by gunicorn with
    docs/examples/flask_gunicorn_conf.py (two workers here): after SIGTERM, exactly one
    access record for each response, by its request id, and no other access log."""
    pytest.importorskip("gunicorn")
    pytest.importorskip("flask")
    with HeldPort() as held:
        command = [sys.executable, "-m", "gunicorn", "-c", "flask_gunicorn_conf.py"]
        command += ["-b", f"127.0.0.1:{held.port}", "-w", "2", "flask_app:create_app()"]
        with serving(command, site, held.port) as server:
            answers = [get(held.port, f"/items/{pk}") for pk in range(1, 11)]
    assert 0 == server.returncode, (site / "server.err").read_text()
    assert [200] * 10 == [status for status, _, _ in answers]
    records = logged(site)
    access = [r for r in records if r["logger"] == "kakashi.access" and r["status"] == 200]
    assert sorted(headers["X-Request-ID"] for _, headers, _ in answers) == sorted(
        r["request_id"] for r in access
    )
    assert {"/items/<int:item_id>"} == {r["route"] for r in access}


@pytest.mark.parametrize("server", ["gunicorn-quiet-worker", "uvicorn-no-access-log"])
def test_one_access_record_with_the_servers_access_log_off(site: Path, server: str) -> None:
    """The ASGI page's two ways to turn the server's access log off, serving
    docs/examples/asgi_app.py (which captures stdlib logging when it is imported, after
    the server configured its logging): gunicorn with docs/examples/workers.py's worker
    class, and ``uvicorn app:app --no-access-log``. One access record per request, the
    middleware's, none from ``uvicorn.access``; the server's own records arrive through
    the bridge."""
    with HeldPort() as held:
        if server == "gunicorn-quiet-worker":
            pytest.importorskip("gunicorn")
            pytest.importorskip("uvicorn_worker")
            command = [sys.executable, "-m", "gunicorn", "-k", "workers.QuietUvicornWorker"]
            command += ["-b", f"127.0.0.1:{held.port}", "-w", "1", "asgi_app:app"]
            stopped = 0  # gunicorn's master exits normally
        else:
            command = [sys.executable, "-m", "uvicorn", "asgi_app:app", "--no-access-log"]
            command += ["--port", str(held.port)]
            stopped = -signal.SIGTERM  # uvicorn re-raises the signal
        with serving(command, site, held.port) as process:
            answers = [get(held.port, f"/items/{pk}") for pk in range(1, 6)]
    assert stopped == process.returncode, (site / "server.err").read_text()
    assert [200] * 5 == [status for status, _, _ in answers]
    records = logged(site)
    assert [] == [r for r in records if r["logger"] == "uvicorn.access"]
    assert [f"/items/{pk}" for pk in range(1, 6)] == [
        r["path"] for r in records if r["logger"] == "kakashi.access" and r["status"] == 200
    ]
    assert any(r["logger"] == "uvicorn.error" for r in records)


def test_uvicorn_run_with_the_bridge(site: Path) -> None:
    """docs/examples/serve.py, the stdlib page's ``uvicorn.run(app, log_config=None,
    log_level="info")`` after ``capture_stdlib()``: uvicorn's startup and shutdown
    records arrive as records of ``uvicorn.error``, the last ones too (logged after the
    lifespan's drain, written by ``install_sigterm_handler`` when uvicorn re-raises
    SIGTERM), its access records as ``uvicorn.access`` records with the request's
    fields, and nothing is printed on the console."""
    with HeldPort() as held:
        command = [sys.executable, "serve.py"]
        with serving(command, site, held.port, PORT=str(held.port)) as server:
            assert 200 == get(held.port, "/items/7")[0]
    assert -signal.SIGTERM == server.returncode, (site / "server.err").read_text()
    assert "" == (site / "server.err").read_text()
    records = logged(site)
    server_messages = [r["message"] for r in records if r["logger"] == "uvicorn.error"]
    assert any(message.startswith("Started server process") for message in server_messages)
    assert "Application startup complete." in server_messages
    assert "Application shutdown complete." in server_messages
    assert any(message.startswith("Finished server process") for message in server_messages)
    (uvicorn_access,) = [
        r for r in records if r.get("path") == "/items/7" and r["logger"] == "uvicorn.access"
    ]
    assert (200, "GET") == (uvicorn_access["status"], uvicorn_access["method"])
    assert 1 == len(access_records(records, "/items/7"))


def test_uvicorn_from_the_command_line_with_the_documented_log_config(site: Path) -> None:
    """``uvicorn app:app --log-config uvicorn_log_config.json`` (docs/stdlib.md), the
    application capturing stdlib logging when it is imported: uvicorn's own records and
    its access records arrive through the bridge, one access record per request beside
    the middleware's, and nothing is printed on the console (its two last lines, after
    the lifespan's drain, are the documented gap)."""
    with HeldPort() as held:
        command = [sys.executable, "-m", "uvicorn", "asgi_app:app", "--port", str(held.port)]
        command += ["--log-config", "uvicorn_log_config.json"]
        with serving(command, site, held.port) as server:
            assert 200 == get(held.port, "/items/7")[0]
    assert -signal.SIGTERM == server.returncode, (site / "server.err").read_text()
    assert "" == (site / "server.err").read_text()
    records = logged(site)
    (uvicorn_access,) = [
        r for r in records if r.get("path") == "/items/7" and r["logger"] == "uvicorn.access"
    ]
    assert (200, "GET") == (uvicorn_access["status"], uvicorn_access["method"])
    assert 1 == len(access_records(records, "/items/7"))
    assert "Application startup complete." in [r["message"] for r in records]


# -- testing (docs/testing.md) ---------------------------------------------------------


def test_the_pytest_plugin_example(site: Path) -> None:
    """docs/examples/pytest: the plugin named in conftest.py gives test_payments.py its
    ``kakashi_logs`` fixture, and the test passes."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "pytest"],
        cwd=site,
        env=environment(site),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert 0 == out.returncode, out.stdout + out.stderr
    assert "1 passed" in out.stdout


# -- the README ------------------------------------------------------------------------


def readme_python() -> list[str]:
    """The README's Python blocks, in order."""
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_the_readme_quickstart_runs_as_written(tmp_path: Path) -> None:
    """Each Python block of the README, as a script in an empty directory: the first
    prints its records (text, on stderr, the default pipeline), the second leaves its
    trade in trades.log."""
    first, second = readme_python()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", first], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert 0 == out.returncode, out.stderr
    assert "user logged in" in out.stderr
    assert "user_id=42" in out.stderr
    assert "request_id=r-17" in out.stderr
    assert "endpoint=/orders" in out.stderr
    out = subprocess.run(
        [sys.executable, "-c", second],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert 0 == out.returncode, out.stderr
    (trade,) = [json.loads(line) for line in (tmp_path / "trades.log").read_text().splitlines()]
    assert ("Trade executed", "AAPL", 100) == (trade["message"], trade["symbol"], trade["qty"])


# -- every example runs ----------------------------------------------------------------

FENCE = re.compile(r"^[ \t]*(```+|:::+)\s*(\{[\w-]+\}\s*)?([\w-]*)", re.M)


def test_every_python_example_of_the_docs_runs() -> None:
    """A page shows Python only in blocks the doctest build runs (``testcode``,
    ``doctest``) or from a file of docs/examples (``literalinclude``); every file there
    is shown by a page and run by this module."""
    shown: set[str] = set()
    untested = []
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text()
        for match in FENCE.finditer(text):
            directive, language = match.group(2), match.group(3)
            if directive is None and language in ("python", "py", "python3", "pycon"):
                line = text.count("\n", 0, match.start()) + 1
                untested.append(f"{page.name}:{line}")
        shown.update(re.findall(r"\{literalinclude\}\s*examples/(\S+)", text))
    assert [] == untested, "Python blocks the doc build does not run"
    examples = {
        path.relative_to(EXAMPLES).as_posix()
        for path in EXAMPLES.rglob("*")
        if path.suffix in (".py", ".json") and "__pycache__" not in path.parts
    }
    helpers = {"django_urls.py", "django_wsgi.py", "asgi_app.py"}  # imported by the others
    assert set() == examples - shown - helpers, "example files no page shows"
    assert set() == shown - examples, "pages include examples that do not exist"
    source = Path(__file__).read_text()
    assert set() == {name for name in examples if Path(name).stem not in source}


# -- the shell examples: kakashi view ----------------------------------------------------


def shown_view_commands() -> list[str]:
    """Every ``kakashi view`` command line of the pages' shell blocks, without comments;
    a pipeline's kakashi part."""
    commands = []
    for page in sorted(DOCS.glob("*.md")):
        for block in re.findall(r"```(?:bash|console)\n(.*?)```", page.read_text(), re.S):
            for line in block.splitlines():
                line = line.split("#", 1)[0].strip().removeprefix("$ ")
                for part in line.split("|"):
                    if part.strip().startswith("kakashi view"):
                        commands.append(part.strip())
    return commands


def test_every_kakashi_view_command_shown_runs(tmp_path: Path) -> None:
    """The ``kakashi view`` commands of the pages (getting started, file output), run as
    shown against logs of each kind they name: every option exists and every command
    exits 0 (``--follow`` keeps reading: it is stopped after a second, still running)."""
    from kakashi.writers.zstd import ZstdFileWriter

    commands = shown_view_commands()
    assert len(commands) >= 8, commands
    (tmp_path / "logs").mkdir()
    records = [
        b'{"timestamp":"2026-11-27T10:30:00Z","level":"WARNING","logger":"app.db",'
        b'"message":"slow","order_id":1042,"user_id":42,"req":{"path":"/orders"}}\n',
        b'{"timestamp":"2026-11-27T10:31:00Z","level":"INFO","logger":"app",'
        b'"message":"ok","order_id":7}\n',
    ]
    for path in (tmp_path / "app.log", tmp_path / "logs" / "app.log"):
        path.write_bytes(b"".join(records))
    for path in (tmp_path / "app.log.zst", tmp_path / "logs" / "app.log.zst"):
        writer = ZstdFileWriter(str(path))
        writer.write(records)
        writer.close()
    kakashi_view = [sys.executable, "-m", "kakashi", "view"]
    for command in commands:
        argv = kakashi_view + command.split()[2:]
        stdin = (tmp_path / "app.log").open("rb") if argv[-1] == "-" else subprocess.DEVNULL
        process = subprocess.Popen(
            argv, cwd=tmp_path, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            out, err = process.communicate(timeout=1 if "--follow" in argv else 60)
        except subprocess.TimeoutExpired:
            assert "--follow" in argv, command
            process.kill()
            out, err = process.communicate()
            assert b"slow" in out, (command, err)
            continue
        finally:
            if stdin is not subprocess.DEVNULL:
                stdin.close()
        assert 0 == process.returncode, (command, err.decode())
        assert out, command
