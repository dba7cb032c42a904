#!/usr/bin/env bash
# Install kakashi (compiling its speedups) with the test and docs dependencies, then run
# the whole suite on the pure-Python twin and again on the compiled one, lint, build the
# docs (nitpicky, warnings are errors), run the docs' examples, smoke the benchmarks and
# check instructions per call against their recorded history (callgrind; valgrind is
# installed with apt when missing). Used by people and by CI (.ci/run) alike.
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

echo "== instructions per call (callgrind) against benchmarks/instructions-history.jsonl =="
if ! command -v valgrind >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq valgrind) >/dev/null 2>&1 || true
fi
if command -v valgrind >/dev/null; then
    "$PYTHON" benchmarks/instructions.py --check --tolerance 0.15
else
    echo "valgrind is not installed and could not be: instruction counts not checked"
fi
