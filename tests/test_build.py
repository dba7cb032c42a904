"""Building the package: pure-Python when asked, or when the compiler is missing."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def build_wheel(tmp_path: Path, **env: str) -> list[str]:
    """Build a wheel from the source tree (offline, with the installed build tools)."""
    source = tmp_path / "src"
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files"], check=True, capture_output=True, text=True
    ).stdout.split()
    for name in files:
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((ROOT / name).read_bytes())
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(source)],
        env={**os.environ, **env}, capture_output=True, text=True,
    )  # fmt: skip
    assert 0 == result.returncode, result.stdout + result.stderr
    (wheel,) = (tmp_path / "dist").glob("kakashi-*.whl")
    return zipfile.ZipFile(wheel).namelist()


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs the source checkout")
class TestBuild:
    def test_no_extensions_builds_pure_python(self, tmp_path: Path) -> None:
        """KAKASHI_NO_EXTENSIONS=1 at build time gives a wheel with no compiled module."""
        names = build_wheel(tmp_path, KAKASHI_NO_EXTENSIONS="1")

        assert "kakashi/_speedups/_capture_py.py" in names
        assert "kakashi/py.typed" in names
        assert not [name for name in names if name.endswith(".so")]

    def test_missing_compiler_falls_back(self, tmp_path: Path) -> None:
        """When the C compiler fails, the build still succeeds, in pure Python."""
        names = build_wheel(tmp_path, CC="false", LDSHARED="false")

        assert "kakashi/_speedups/_format_py.py" in names
        assert not [name for name in names if name.endswith(".so")]
