#!/usr/bin/env bash
# Install kakashi (compiling its speedups) with the test and docs dependencies, then run
# the whole suite on the pure-Python twin and again on the compiled one, lint, build the
# docs (nitpicky, warnings are errors), run the docs' examples and smoke the benchmarks.
# Used by people and by CI (.ci/run) alike.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

echo "== install =="
"$PYTHON" -m pip install --quiet --disable-pip-version-check -e ".[test,docs]" ruff mypy cython-lint
"$PYTHON" -c "import kakashi._speedups as s; assert s.USING_SPEEDUPS, 'the compiled extension did not build'"

echo "== tests: pure-Python twin (KAKASHI_NO_EXTENSIONS=1) =="
KAKASHI_NO_EXTENSIONS=1 "$PYTHON" -m pytest tests

echo "== tests: compiled =="
"$PYTHON" -m pytest tests

echo "== lint =="
"$PYTHON" -m ruff check kakashi tests benchmarks
"$PYTHON" -m mypy
"$PYTHON" -c "import sys; from cython_lint.cython_lint import main; sys.exit(main())" \
    kakashi/_speedups/*.pyx kakashi/_speedups/*.pxd

echo "== docs =="
rm -rf docs/_build
KAKASHI_NO_EXTENSIONS=1 "$PYTHON" -m sphinx -q -n -W --keep-going -b html docs docs/_build/html
"$PYTHON" -m sphinx -q -n -W --keep-going -b doctest docs docs/_build/doctest

echo "== benchmarks (smoke run, no timing) =="
"$PYTHON" -m pytest benchmarks --benchmark-disable -q
