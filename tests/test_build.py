"""Building and installing the package the ways users get it: an sdist, a wheel, a clone.

These tests build real sdists and wheels from a copy of the source tree and install them
into fresh virtual environments (their dependencies come from the package registry, as
for a user). They do not depend on which implementation the running suite uses, so
``ci/test.sh`` runs them once (marker ``packaging``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SO = (".so", ".pyd")

pytestmark = [
    pytest.mark.packaging,
    pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the source checkout"),
]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment a user's shell would have: none of this suite's Kakashi settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("KAKASHI_")
        and key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONDONTWRITEBYTECODE")
    }
    env.update(extra)
    return env


def run(
    command: list[str], cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run *command*; fail the test with its output if it fails."""
    result = subprocess.run(
        command, cwd=cwd, env=clean_env(**env), capture_output=True, text=True, timeout=900
    )
    assert 0 == result.returncode, f"{command}\n{result.stdout}\n{result.stderr}"
    return result


def copy_tree(target: Path) -> Path:
    """Copy the files of the checkout (committed or not, minus ignored ones) to *target*."""
    names = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
        check=True, capture_output=True, text=True,
    ).stdout.split()  # fmt: skip
    for name in names:
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes((ROOT / name).read_bytes())
    return target


def build_wheel(source: Path, out: Path, **env: str) -> tuple[zipfile.ZipFile, str]:
    """Build a wheel from *source* in place (offline); return it and the build's log."""
    result = run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
         "-w", str(out), str(source)],
        **env,
    )  # fmt: skip
    (wheel,) = out.glob("kakashi-*.whl")
    kept = wheel.rename(out / f"built-{len(list(out.iterdir()))}.zip")  # the next one is alone
    return zipfile.ZipFile(kept), result.stdout + result.stderr


def compiled_modules(wheel: zipfile.ZipFile) -> list[str]:
    """The compiled extension modules in *wheel*."""
    return [name for name in wheel.namelist() if name.endswith(SO)]


def build_record(wheel: zipfile.ZipFile) -> dict[str, object]:
    """What the build recorded in *wheel* (``kakashi/_speedups/_build.json``)."""
    record: dict[str, object] = json.loads(wheel.read("kakashi/_speedups/_build.json"))
    return record


def fresh_venv(path: Path) -> Path:
    """A new virtual environment with nothing installed; return its ``bin`` folder."""
    run([sys.executable, "-m", "venv", str(path)])
    return path / "bin"


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An sdist built from a copy of the checkout, as ``python -m build --sdist`` makes it."""
    source = copy_tree(tmp_path_factory.mktemp("source"))
    out = tmp_path_factory.mktemp("dist")
    result = run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "-o", str(out),
                  str(source)])  # fmt: skip
    assert "SetuptoolsDeprecationWarning" not in result.stdout + result.stderr
    (archive,) = out.glob("kakashi-*.tar.gz")
    return archive


class TestSdist:
    def test_ships_what_the_build_needs(self, sdist: Path) -> None:
        """The sdist has the Cython sources, their .pxd files and the license; nothing built."""
        with tarfile.open(sdist) as archive:
            names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}

        for needed in ("setup.py", "pyproject.toml", "LICENSE", "MANIFEST.in",
                       "kakashi/_switch.py", "kakashi/_speedups/_capture_c.pxd",
                       "kakashi/_speedups/_queue_c.pxd", "kakashi/_speedups/_format_c.pyx",
                       "kakashi/_speedups/_bridge_c.pyx",
                       "kakashi/cli/demo.py", "tests/conftest.py"):  # fmt: skip
            assert needed in names
        assert [] == [n for n in names if n.endswith((*SO, ".c")) or n.endswith("_build.json")]

    def test_installs_compiled_and_runs_the_demo(self, sdist: Path, tmp_path: Path) -> None:
        """pip install of the sdist into a fresh venv compiles the hot path; the demo runs."""
        bin_dir = fresh_venv(tmp_path / "venv")
        run([str(bin_dir / "python"), "-m", "pip", "install", "-q", str(sdist)])

        imported = run([str(bin_dir / "python"), "-c",
                        "import kakashi; print(kakashi.USING_SPEEDUPS)"], cwd=tmp_path)  # fmt: skip
        demo = run([str(bin_dir / "kakashi"), "demo", "--count", "3000", "--dir", "out"],
                   cwd=tmp_path)  # fmt: skip
        info = json.loads(run([str(bin_dir / "kakashi"), "info", "--json"], cwd=tmp_path).stdout)

        assert ("True", "") == (imported.stdout.strip(), imported.stderr)
        assert "hot path        compiled" in demo.stdout
        assert "unaccounted 0" in demo.stdout
        assert (True, "compiled", True) == (
            info["compiled"],
            info["selection"],
            info["build"]["compiled"],
        )
        assert (tmp_path / "out" / "demo.log.zst").exists()

    def test_without_a_compiler_installs_the_pure_twin(self, sdist: Path, tmp_path: Path) -> None:
        """With no working C compiler the install succeeds in pure Python, and says so once."""
        bin_dir = fresh_venv(tmp_path / "venv")
        run([str(bin_dir / "python"), "-m", "pip", "install", "-q", str(sdist)],
            CC="false", LDSHARED="false")  # fmt: skip

        code = "import kakashi, kakashi.core.async_backend; print(kakashi.USING_SPEEDUPS)"
        imported = run([str(bin_dir / "python"), "-c", code], cwd=tmp_path)
        asked = run([str(bin_dir / "python"), "-c", code], cwd=tmp_path,
                    KAKASHI_NO_EXTENSIONS="1")  # fmt: skip
        demo = run([str(bin_dir / "kakashi"), "demo", "--count", "2000", "--dir", "out"],
                   cwd=tmp_path)  # fmt: skip
        info = run([str(bin_dir / "kakashi"), "info"], cwd=tmp_path).stdout

        assert "False" == imported.stdout.strip()
        assert 1 == imported.stderr.count("kakashi: pure-Python: compiling failed")
        assert ("False", "") == (asked.stdout.strip(), asked.stderr)
        assert "unaccounted 0" in demo.stdout
        assert "hot path        pure-Python: compiling failed" in demo.stdout
        assert re.search(r"hot path +pure-Python: compiling failed: .*CompileError", info)
        assert "to compile  install a C compiler" in info


class TestWheel:
    def test_no_extensions_builds_pure_python(self, tmp_path: Path) -> None:
        """KAKASHI_NO_EXTENSIONS=1 at build time gives a wheel with no compiled module."""
        source = copy_tree(tmp_path / "src")
        wheel, _ = build_wheel(source, tmp_path / "dist", KAKASHI_NO_EXTENSIONS="1")
        record = build_record(wheel)

        assert "kakashi/_speedups/_capture_py.py" in wheel.namelist()
        assert "kakashi/py.typed" in wheel.namelist()
        assert [] == compiled_modules(wheel)
        assert (False, True) == (record["compiled"], record["requested_pure"])

    def test_cython_failure_falls_back(self, tmp_path: Path) -> None:
        """A Cython error (here a broken .pyx) still gives a working pure-Python wheel."""
        source = copy_tree(tmp_path / "src")
        pyx = source / "kakashi/_speedups/_queue_c.pyx"
        pyx.write_text(pyx.read_text() + "\ndef broken(:\n")
        wheel, log = build_wheel(source, tmp_path / "dist")
        record = build_record(wheel)

        assert [] == compiled_modules(wheel)
        assert False is record["compiled"]
        assert str(record["reason"]).startswith("compiling failed: Cython:")
        assert "compiling the speedups failed" in log

    def test_a_failed_rebuild_never_ships_the_old_extension(self, tmp_path: Path) -> None:
        """After a failed compile in a tree built before, the wheel has no stale .so."""
        source = copy_tree(tmp_path / "src")
        run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=source)
        compiled, _ = build_wheel(source, tmp_path / "dist")
        for pyx in (source / "kakashi/_speedups").glob("*.pyx"):
            pyx.touch()  # the sources changed: the build must compile again
        failed, log = build_wheel(source, tmp_path / "dist", CC="false", LDSHARED="false")
        pure, _ = build_wheel(source, tmp_path / "dist", KAKASHI_NO_EXTENSIONS="1")

        sources = len(list((source / "kakashi/_speedups").glob("*.pyx")))
        assert (4, 4) == (sources, len(compiled_modules(compiled)))
        assert [] == compiled_modules(failed)
        assert [] == compiled_modules(pure)
        assert "left by an earlier build" in log

    def test_a_failed_inplace_rebuild_removes_the_old_modules(self, tmp_path: Path) -> None:
        """An in-place (editable) build that fails leaves no stale module for the tree to load."""
        source = copy_tree(tmp_path / "src")
        speedups = source / "kakashi/_speedups"
        run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=source)
        built = sorted(p.name for p in speedups.iterdir() if p.name.endswith(SO))
        for pyx in speedups.glob("*.pyx"):
            pyx.touch()
        run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=source,
            CC="false", LDSHARED="false")  # fmt: skip
        record = json.loads((speedups / "_build.json").read_text())

        assert len(list(speedups.glob("*.pyx"))) == len(built) == 4
        assert [] == [p.name for p in speedups.iterdir() if p.name.endswith(SO)]
        assert False is record["compiled"]

    def test_license_and_metadata(self, tmp_path: Path) -> None:
        """The wheel carries the license file; the metadata states it as an SPDX expression."""
        source = copy_tree(tmp_path / "src")
        wheel, log = build_wheel(source, tmp_path / "dist", KAKASHI_NO_EXTENSIONS="1")
        names = wheel.namelist()
        (metadata_name,) = [name for name in names if name.endswith(".dist-info/METADATA")]
        metadata = wheel.read(metadata_name).decode()

        assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
        assert "License-Expression: MIT" in metadata
        assert "License-File: LICENSE" in metadata
        assert "Classifier: License ::" not in metadata
        assert "Classifier: Programming Language :: Python :: 3.11" in metadata
        assert "SetuptoolsDeprecationWarning" not in log


def readme_commands() -> list[str]:
    """The commands of the README's first code block, one per line."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S)
    assert block is not None, "the README starts with a bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


class TestReadme:
    def test_first_command_demos_the_compiled_build(self, tmp_path: Path) -> None:
        """The README's first command, run as written in a fresh clone and venv: compiled demo."""
        clone = copy_tree(tmp_path / "kakashi")
        bin_dir = fresh_venv(tmp_path / "venv")
        first = readme_commands()[0]
        path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"

        result = run(["bash", "-c", first], cwd=clone, PATH=path)

        assert "hot path        compiled" in result.stdout
        assert "unaccounted 0" in result.stdout
        assert "view kakashi-demo" in result.stdout
        assert (clone / "kakashi-demo" / "demo.log.zst").exists()
