#!/usr/bin/env bash
# Install kakashi (compiling its speedups) with the test and docs dependencies, then run
# the whole suite on the pure-Python twin and again on the compiled one (the packaging
# tests, which build and install the package in fresh venvs, run once, with the compiled
# suite), lint, build the docs (nitpicky, warnings are errors), run the docs' examples,
# smoke the benchmarks and check instructions per call against their recorded history
# (callgrind; valgrind is installed with apt when missing, like tzdata for the tests). Every stage runs even when an
# earlier one failed; the last line sums them all up, and the exit status is 0 only when
# every stage passed. Used by people and by CI (.ci/run) alike.
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT
summary=()
failed=0

# junit XML -> "N passed, N failed, N skipped"
tally() {
    "$PYTHON" - "$1" <<'EOF'
import sys
import xml.etree.ElementTree as ET

try:
    root = ET.parse(sys.argv[1]).getroot()
except (OSError, ET.ParseError):
    print("did not run")
    raise SystemExit
suites = [root] if root.tag == "testsuite" else list(root)
count = {key: sum(int(s.get(key, 0)) for s in suites)
         for key in ("tests", "failures", "errors", "skipped")}
failed = count["failures"] + count["errors"]
passed = count["tests"] - failed - count["skipped"]
print(f"{passed} passed, {failed} failed, {count['skipped']} skipped")
EOF
}

# pytest stage: NAME then pytest arguments
tests() {
    local name=$1 label=$1
    shift
    echo "== tests: $name =="
    if ! "$PYTHON" -m pytest --junitxml="$reports/$name.xml" "$@"; then
        failed=1
        label="$name FAILED"
    fi
    summary+=("$label: $(tally "$reports/$name.xml")")
}

# other stages: NAME then a command; ok or FAILED
check() {
    local name=$1
    shift
    if "$@"; then
        summary+=("$name: ok")
    else
        summary+=("$name: FAILED")
        failed=1
    fi
}

finish() {
    local IFS="|"
    local line="${summary[*]}"
    if [ "$failed" = 0 ]; then
        echo "ci passed | ${line//|/ | }"
    else
        echo "ci FAILED | ${line//|/ | }"
    fi
    exit "$failed"
}

echo "== install =="
if ! "$PYTHON" -m pip install --quiet --disable-pip-version-check -e ".[test,docs]" \
        ruff mypy cython-lint; then
    summary+=("install: FAILED")
    failed=1
    finish
fi
if ! "$PYTHON" -c "import kakashi._speedups as s; assert s.USING_SPEEDUPS, s.SELECTION"; then
    summary+=("install: FAILED (the compiled extension did not build)")
    failed=1
    finish
fi
summary+=("install: ok")

# System packages the tests need, installed with apt when missing (as root, one update):
# - tzdata: local-time rotation runs children under TZ=America/New_York and Europe/Berlin;
# - rsyslog, rsyslog-gnutls, openssl: tests/test_syslog.py ships to a real rsyslogd (UDP,
#   TCP and TLS inputs, with certificates it generates);
# - clickhouse-server: tests/test_clickhouse.py starts a server of its own on loopback
#   ports, with its configuration and data in a temporary directory (not the package's
#   service).
# A test whose server is missing skips and says so; CI installs them all.
packages=()
[ -e /usr/share/zoneinfo/America/New_York ] || packages+=(tzdata)
command -v rsyslogd >/dev/null || [ -x /usr/sbin/rsyslogd ] || packages+=(rsyslog)
ls /usr/lib/*/rsyslog/lmnsd_gtls.so >/dev/null 2>&1 || packages+=(rsyslog-gnutls)
command -v openssl >/dev/null || packages+=(openssl)
command -v clickhouse-server >/dev/null || packages+=(clickhouse-server)
if [ ${#packages[@]} -gt 0 ]; then
    if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        echo "== system packages: ${packages[*]} =="
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            --no-install-recommends "${packages[@]}") >/dev/null 2>&1 ||
            echo "system packages could not be installed: ${packages[*]}"
    else
        echo "missing system packages (not root, or no apt): ${packages[*]}"
    fi
fi

# The two suites run side by side (each mostly waits on subprocesses, servers and
# sleeps, so together they take little longer than the slower one alone), each with a
# temporary directory of its own; the pure suite's output follows the compiled one's.
echo "== tests: pure (side by side with compiled; its output follows) =="
(KAKASHI_NO_EXTENSIONS=1 "$PYTHON" -m pytest --junitxml="$reports/pure.xml" \
    --basetemp="$reports/tmp-pure" -p no:cacheprovider tests -m "not packaging" \
    >"$reports/pure.log" 2>&1; echo $? >"$reports/pure.rc") &
pure=$!
tests compiled tests --basetemp="$reports/tmp-compiled"
wait "$pure"
echo "== tests: pure =="
cat "$reports/pure.log"
if [ "$(cat "$reports/pure.rc")" = 0 ]; then
    summary=("${summary[@]:0:1}" "pure: $(tally "$reports/pure.xml")" "${summary[@]:1}")
else
    failed=1
    summary=("${summary[@]:0:1}" "pure FAILED: $(tally "$reports/pure.xml")" "${summary[@]:1}")
fi

lint() {
    echo "== lint =="
    "$PYTHON" -m ruff check kakashi tests benchmarks docs/examples &&
        "$PYTHON" -m ruff format --check kakashi tests benchmarks docs/examples &&
        "$PYTHON" -m mypy &&
        "$PYTHON" -c "import sys; from cython_lint.cython_lint import main; sys.exit(main())" \
            kakashi/_speedups/*.pyx kakashi/_speedups/*.pxd
}
check lint lint

docs() {
    echo "== docs =="
    rm -rf docs/_build
    # Warnings are errors; the examples' own output goes to the doctest report, not here.
    KAKASHI_NO_EXTENSIONS=1 "$PYTHON" -m sphinx -q -n -W --keep-going -b html docs \
        docs/_build/html &&
        "$PYTHON" -m sphinx -q -n -W --keep-going -b doctest docs docs/_build/doctest &&
        # What -n -W does not see: raw HTML links and anchors, the README's links; and
        # a public name or a parameter the API reference leaves undocumented (the pure
        # twins' signatures, as the build above reads them).
        "$PYTHON" ci/check_links.py docs/_build/html &&
        KAKASHI_NO_EXTENSIONS=1 "$PYTHON" ci/check_api_docs.py docs/_build/html
}
if docs; then
    examples=$(grep -E "^ +[0-9]+ tests$" docs/_build/doctest/output.txt | tail -1 | tr -dc 0-9)
    summary+=("docs: ok, ${examples:-0} examples passed")
else
    summary+=("docs: FAILED")
    failed=1
fi

tests benchmarks benchmarks --benchmark-disable -q

instructions() {
    echo "== instructions per call (callgrind) against benchmarks/instructions-history.jsonl =="
    if ! command -v valgrind >/dev/null; then
        (apt-get update -qq && apt-get install -y -qq valgrind) >/dev/null 2>&1
    fi
    "$PYTHON" benchmarks/instructions.py --check --tolerance 0.15
}
if command -v valgrind >/dev/null || { command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; }; then
    check instructions instructions
else
    echo "valgrind is not installed and cannot be: instruction counts not checked"
    summary+=("instructions: skipped (no valgrind)")
fi

finish
