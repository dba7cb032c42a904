"""The SVG charts of ``kakashi bench --plot``, ``benchmarks/scaling.py`` and
``benchmarks/sustained.py``, drawn from small fixed figures (no timing is measured)."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from kakashi.cli import charts

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SVG = "{http://www.w3.org/2000/svg}"


def _row(rate: float, p50: float, disabled: float, **parts: object) -> dict[str, object]:
    """One library's figures, shaped as ``kakashi bench --json`` writes them."""
    row: dict[str, object] = {
        "caller_ns": p50 * 1.2, "p50_ns": p50, "p99_ns": p50 * 3, "p999_ns": p50 * 9,
        "disabled_ns": disabled, "e2e_s": 1e5 / rate, "rss_mb": 20.0, "lines": 100_000,
        "records_per_s": rate, "lost": 0,
    }  # fmt: skip
    for n in (4, 16):
        row[f"records_per_s_{n}_threads"] = rate * 0.9
        row[f"lost_{n}_threads"] = 0
        row[f"error_{n}_threads"] = None
    row.update(parts)
    return row


# Every case a chart must show: a baseline, a fast library, one that hangs with threads,
# one that loses records with threads, one not installed, and a floor that writes no file.
TABLE = {
    "empty method (floor)": _row(
        1.0, 870.0, 708.0, records_per_s=None,
        records_per_s_4_threads=None, records_per_s_16_threads=None,
    ),
    "stdlib logging": _row(40_000.0, 24_000.0, 682.0),
    "picologging": _row(
        100_000.0, 9_900.0, 678.0,
        records_per_s_4_threads=None, error_4_threads="hung (deadlock)",
        records_per_s_16_threads=None, error_16_threads="hung (as with 4 threads)",
    ),
    "rapidlog (throughput)": _row(
        60_000.0, 2_100.0, 763.0, lost=1_937,
        records_per_s_4_threads=None, lost_4_threads=241,
        records_per_s_16_threads=None, lost_16_threads=1_696,
    ),
    "loguru": {"error": "ModuleNotFoundError: No module named 'loguru'"},
    "kakashi async": _row(476_000.0, 600.0, 150.0),
}  # fmt: skip
NAMES = list(TABLE)

SCALING = {
    "records": 200_000,
    "runs": 3,
    "records_per_s": {
        "kakashi async": {"1": 540_000.0, "4": 556_000.0, "16": 541_000.0},
        "stdlib logging": {"1": 50_000.0, "4": 17_000.0, "16": 16_500.0},
    },
    "every_run": {},
}
SUSTAINED = {
    "writer": "file",
    "sent": 5_000,
    "elapsed_s": 4.0,
    "samples": [[0.0, 50.0, 1000], [1.0, 51.0, 2000], [2.0, 51.5, 3000], [3.0, 51.4, 4000]],
    "written": 5_000,
    "dropped": 0,
    "enqueued": 5_000,
}


def texts(path: Path) -> str:
    """All the text an SVG file shows, after checking that it parses as an SVG document."""
    root = ElementTree.parse(path).getroot()
    assert f"{SVG}svg" == root.tag
    return "\n".join("".join(element.itertext()) for element in root.iter(f"{SVG}text"))


def kakashi(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m kakashi ARGS``, captured."""
    return subprocess.run(
        [sys.executable, "-m", "kakashi", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def figures(tmp_path: Path) -> Path:
    """:data:`TABLE` saved as ``kakashi bench --json`` would."""
    path = tmp_path / "figures.json"
    path.write_text(json.dumps(TABLE))
    return path


def test_peer_charts_are_svg_naming_every_library(tmp_path: Path) -> None:
    """The three charts are written, parse as SVG, and each names every library, the one
    that was not run included."""
    paths = charts.peer_charts(TABLE, tmp_path / "charts")

    assert ["throughput.svg", "latency.svg", "disabled.svg"] == [path.name for path in paths]
    for path in paths:
        shown = texts(path)
        assert [] == [name for name in NAMES if name not in shown], path.name


def test_throughput_chart_labels_ratios_and_every_missing_bar(tmp_path: Path) -> None:
    """Each bar carries its ratio to stdlib with as many threads; a part that hung, lost
    records, was not run or is a floor is labelled instead of being left out."""
    shown = texts(charts.peer_charts(TABLE, tmp_path)[0])

    assert " 11.9x" in shown  # kakashi async, one thread: 476,000 / 40,000
    assert " 2.5x" in shown  # picologging, one thread: 100,000 / 40,000
    assert "hung (deadlock)" in shown and "hung (as with 4 threads)" in shown
    assert "lost 241 records" in shown and "lost 1,696 records" in shown
    assert "rapidlog (throughput) (lost 1,937)" in shown
    assert "not run: not installed" in shown
    assert "no file (a floor, not a logger)" in shown


def test_latency_and_disabled_charts_show_the_figures(tmp_path: Path) -> None:
    """The latency chart labels p50 / p99 / p99.9 in microseconds, the disabled chart
    nanoseconds; the library that was not run is labelled in both."""
    _, latency, disabled = charts.peer_charts(TABLE, tmp_path)

    shown = texts(latency)
    assert {"p50", "p99", "p99.9"} <= set(shown.splitlines())
    assert " 0.6" in shown and " 1.8" in shown and " 5.4" in shown  # kakashi async, µs
    assert "not run: not installed" in shown
    shown = texts(disabled)
    assert " 150" in shown and " 763" in shown
    assert "not run: not installed" in shown


def test_the_same_figures_give_the_same_bytes(tmp_path: Path, figures: Path) -> None:
    """Charts drawn twice, here and by ``kakashi bench --from-json`` in another process,
    are byte-identical (no date, no random ids), so regenerated docs only change with
    the figures."""
    here = charts.peer_charts(TABLE, tmp_path / "here")
    result = kakashi("bench", "--from-json", str(figures), "--plot", str(tmp_path / "cli"))

    assert 0 == result.returncode, result.stderr
    for path in here:
        assert path.read_bytes() == (tmp_path / "cli" / path.name).read_bytes(), path.name
    assert "| kakashi async |" in result.stdout and "| loguru | not run:" in result.stdout


def test_from_json_without_plot_does_not_import_matplotlib(figures: Path) -> None:
    """matplotlib is imported only when charts are asked for."""
    code = (
        "import sys; from kakashi.cli import main; "
        f"status = main(['bench', '--from-json', {str(figures)!r}]); "
        "print('matplotlib' in sys.modules, status)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )

    assert "False 0" == result.stdout.strip().splitlines()[-1], result.stderr


def test_plot_imports_matplotlib_only_after_measuring(tmp_path: Path) -> None:
    """With --plot, matplotlib is not loaded while the libraries are measured: the
    children would inherit its resident memory in their peak RSS figures."""
    code = (
        "import sys; import kakashi.cli.bench as bench; measure = bench.measure; "
        "bench.measure = lambda *a, **k: (print('loaded', 'matplotlib' in sys.modules), "
        "measure(*a, **k))[1]; from kakashi.cli import main; "
        "main(['bench', '--peers', 'empty method (floor)', '--records', '100', '--runs', '1', "
        f"'--plot', {str(tmp_path)!r}]); print('after', 'matplotlib' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )

    assert "loaded False" in result.stdout and "after True" in result.stdout, result.stderr
    assert (tmp_path / "throughput.svg").exists()


def test_missing_matplotlib_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without matplotlib, asking for charts says how to install it."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)

    with pytest.raises(charts.ChartsUnavailable, match=r"pip install 'kakashi\[bench\]'"):
        charts.require_matplotlib()


def test_plot_without_matplotlib_fails_before_measuring(tmp_path: Path) -> None:
    """``kakashi bench --plot`` without matplotlib is a usage error at once: nothing is
    measured and no directory is made."""
    code = (
        "import sys; sys.modules['matplotlib'] = None; from kakashi.cli import main; "
        f"sys.exit(main(['bench', '--peers', 'stdlib logging', '--plot', {str(tmp_path / 'c')!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )

    assert 2 == result.returncode
    assert "--plot: charts need matplotlib: pip install 'kakashi[bench]'" in result.stderr
    assert "| stdlib logging |" not in result.stdout
    assert not (tmp_path / "c").exists()


def test_from_json_refuses_what_is_not_a_saved_table(tmp_path: Path, figures: Path) -> None:
    """A file that is not bench figures (a list, text, scaling.py's figures), or
    --from-json with --json, is a usage error."""
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "text.json").write_text("| library |")
    (tmp_path / "scaling.json").write_text(json.dumps(SCALING))

    not_figures = kakashi("bench", "--from-json", str(tmp_path / "list.json"))
    not_json = kakashi("bench", "--from-json", str(tmp_path / "text.json"))
    scaling = kakashi("bench", "--from-json", str(tmp_path / "scaling.json"))
    both = kakashi("bench", "--from-json", str(figures), "--json", str(tmp_path / "o.json"))

    assert 2 == not_figures.returncode == not_json.returncode == both.returncode
    assert 2 == scaling.returncode
    assert "not the figures of kakashi bench --json" in not_figures.stderr
    assert "not the figures of kakashi bench --json" in scaling.stderr
    assert "not JSON" in not_json.stderr
    assert "it takes no --json" in both.stderr


def run_script(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``python benchmarks/SCRIPT ARGS``, captured."""
    return subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_scaling_chart_from_saved_figures(tmp_path: Path) -> None:
    """``scaling.py --from-json F --plot DIR`` prints the table and draws every library
    with its ratios to one thread, the same bytes each time."""
    saved = tmp_path / "scaling.json"
    saved.write_text(json.dumps(SCALING))

    first = run_script("scaling.py", "--from-json", str(saved), "--plot", str(tmp_path / "a"))
    second = run_script("scaling.py", "--from-json", str(saved), "--plot", str(tmp_path / "b"))

    assert 0 == first.returncode == second.returncode, first.stderr
    assert "| kakashi async | 540,000 | 556,000 (1.03x) | 541,000 (1.00x) |" in first.stdout
    shown = texts(tmp_path / "a" / "scaling.svg")
    assert "kakashi async" in shown and "stdlib logging" in shown
    assert "1.03x" in shown and "0.33x" in shown  # 16,500 / 50,000
    assert (tmp_path / "a" / "scaling.svg").read_bytes() == (
        tmp_path / "b" / "scaling.svg"
    ).read_bytes()


def test_sustained_chart_from_saved_figures(tmp_path: Path) -> None:
    """``sustained.py --from-json F --plot DIR`` reprints the run and draws throughput
    and RSS over time, the same bytes each time."""
    saved = tmp_path / "sustained.json"
    saved.write_text(json.dumps(SUSTAINED))

    first = run_script("sustained.py", "--from-json", str(saved), "--plot", str(tmp_path / "a"))
    second = run_script("sustained.py", "--from-json", str(saved), "--plot", str(tmp_path / "b"))

    assert 0 == first.returncode == second.returncode, first.stderr
    assert "5,000 records in 4.0 s (1,250 records/s), file" in first.stdout
    shown = texts(tmp_path / "a" / "sustained.svg")
    assert "records/s" in shown and "RSS MiB" in shown and "seconds" in shown
    assert (tmp_path / "a" / "sustained.svg").read_bytes() == (
        tmp_path / "b" / "sustained.svg"
    ).read_bytes()


def test_sustained_rate_is_per_interval() -> None:
    """The throughput panel shows records sent between two samples over the time between
    them, not the running average."""
    assert [1000.0, 500.0] == charts.interval_rates(
        [[0.0, 1.0, 0], [1.0, 1.0, 1000], [3.0, 1.0, 2000]]
    )
