"""Charts of the benchmark figures as SVG: ``kakashi bench --plot DIR`` and the
``--plot`` options of ``benchmarks/scaling.py`` and ``benchmarks/sustained.py``.

matplotlib comes with the ``bench`` extra and is imported only here, when a chart is
drawn: after the measurements, so that it weighs on none of them. Figures are drawn on
matplotlib's Agg canvas (no display, no pyplot state) and saved so that the same figures
give the same bytes: the SVG ids are derived from a fixed salt, the date is left out and
text stays text (``<text>`` elements the docs' fonts render and a reader can search).
Nothing is silently left out: a library that was not run, lost records or hung has its
bar replaced by a label saying so.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "MISSING",
    "ChartsUnavailable",
    "check_plot_option",
    "interval_rates",
    "peer_charts",
    "require_matplotlib",
    "scaling_chart",
    "sustained_chart",
]

MISSING = "charts need matplotlib: pip install 'kakashi[bench]'"

# What makes two saves of the same figures byte-identical (the date is left out at save).
_RC = {
    "svg.hashsalt": "kakashi-bench",  # ids of clip paths and glyphs from this, not random
    "svg.fonttype": "none",  # text as <text>: small files, searchable names
    "font.family": "sans-serif",
    "font.size": 9.0,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
# One colour per series (1 / 4 / 16 threads; p50 / p99 / p99.9): colour-blind safe.
_COLOURS = ("#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb")
_MUTED = "#666666"
_BASELINE = "stdlib logging"
_FLOORS = ("empty method (floor)",)  # no file is written: no throughput by design


class ChartsUnavailable(RuntimeError):
    """matplotlib is not installed; the message says how to install it."""


def require_matplotlib() -> None:
    """Raise :class:`ChartsUnavailable` if matplotlib is not installed, without importing it.

    Call it before measuring, so a missing matplotlib is reported at once rather than
    after minutes of benchmarks. It only looks: importing matplotlib (and numpy) first
    would add some 40 MiB to the resident memory the benchmarks report, in this process
    (``sustained.py``) and in the children it starts (which inherit the peak).
    """
    if importlib.util.find_spec("matplotlib") is None:
        raise ChartsUnavailable(MISSING)


def check_plot_option(parser: argparse.ArgumentParser) -> None:
    """The ``--plot DIR`` option's check, before measuring: if matplotlib is missing,
    *parser* reports the usage error (``--plot: ...``) and exits."""
    try:
        require_matplotlib()
    except ChartsUnavailable as error:
        parser.error(f"--plot: {error}")


def _import_matplotlib() -> Any:
    """matplotlib itself, imported now that a chart is drawn."""
    try:
        import matplotlib
    except ImportError as error:
        raise ChartsUnavailable(MISSING) from error
    return matplotlib


@contextlib.contextmanager
def _chart(path: Path, width: float, height: float) -> Iterator[Any]:
    """A figure of *width* x *height* inches, saved to *path* as deterministic SVG."""
    matplotlib = _import_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context(_RC):
        figure = Figure(figsize=(width, height), layout="constrained")
        FigureCanvasAgg(figure)
        yield figure
        figure.savefig(path, format="svg", metadata={"Date": None})


def _why_not_run(error: str) -> str:
    """The short reason a library has no figures at all."""
    if error.startswith(("ModuleNotFoundError", "ImportError")):
        return "not run: not installed"
    return "not run: " + (error if len(error) <= 60 else error[:57] + "...")


def _name(library: str, row: Mapping[str, Any]) -> str:
    """The tick label: the library, and its loss when it lost records in any part."""
    lost = row.get("lost") or 0
    return f"{library} (lost {lost:,})" if lost else library


def _library_axis(axes: Any, names: Sequence[str]) -> None:
    """Libraries top to bottom in the table's order, Kakashi's in bold."""
    axes.set_yticks(range(len(names)), names)
    axes.set_ylim(len(names) - 0.5, -0.5)
    for label in axes.get_yticklabels():
        if label.get_text().startswith("kakashi"):
            label.set_fontweight("bold")


def _note(axes: Any, x: float, y: float, text: str) -> None:
    """A grey label where a bar would be, saying why there is none."""
    axes.text(x, y, text, va="center", ha="left", fontsize=7.5, color=_MUTED, style="italic")


def _throughput_gap(row: Mapping[str, Any], threads: int) -> str | None:
    """Why the library of *row* has no throughput bar with *threads* threads (None: it has one)."""
    if threads == 1:
        rate, lost, error = row.get("records_per_s"), row.get("lost", 0), None
        # ``lost`` sums every part; the single-thread part's own loss is what remains.
        lost -= sum(row.get(f"lost_{n}_threads") or 0 for n in (4, 16))
    else:
        rate = row.get(f"records_per_s_{threads}_threads")
        lost = row.get(f"lost_{threads}_threads") or 0
        error = row.get(f"error_{threads}_threads")
    if rate:
        return None
    if error:
        return str(error)
    if lost:
        return f"lost {lost:,} records"
    return "no figure"


def throughput_chart(table: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    """Grouped bars: end-to-end records/s of each library with 1, 4 and 16 producer
    threads, each labelled with its ratio to stdlib logging with as many threads."""
    names = list(table)
    counts = (1, 4, 16)
    height = 0.8 / len(counts)
    rates = {
        (library, n): row.get("records_per_s" if n == 1 else f"records_per_s_{n}_threads")
        for library, row in table.items()
        for n in counts
        if "error" not in row
    }
    top = max((rate for rate in rates.values() if rate), default=1.0)
    with _chart(path, 8.5, 1.2 + 0.42 * len(names)) as figure:
        axes = figure.add_subplot()
        for i, (library, row) in enumerate(table.items()):
            if "error" in row:
                _note(axes, top * 0.01, i, _why_not_run(str(row["error"])))
                continue
            if library in _FLOORS:
                _note(axes, top * 0.01, i, "no file (a floor, not a logger)")
                continue
            for k, n in enumerate(counts):
                y = i + (k - 1) * height
                gap = _throughput_gap(row, n)
                if gap is not None:
                    _note(axes, top * 0.01, y, gap)
                    continue
                rate = rates[library, n]
                axes.barh(y, rate, height, color=_COLOURS[k], label=f"{n} thread{'s' * (n > 1)}")
                base = rates.get((_BASELINE, n))
                ratio = f" {rate / base:.1f}x" if base else ""
                axes.text(rate, y, ratio, va="center", ha="left", fontsize=7.5)
        _library_axis(axes, [_name(library, row) for library, row in table.items()])
        axes.set_xlim(0, top * 1.12)
        axes.xaxis.set_major_formatter(_thousands())
        axes.set_xlabel(
            "records/s, first call until every line is in the file (labels: x stdlib logging "
            "with as many threads)"
        )
        axes.set_title("End-to-end throughput into a JSON-lines file (higher is better)")
        _legend(figure, axes)


def latency_chart(table: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    """Grouped bars on a log scale: p50, p99 and p99.9 of one enabled call as the caller
    sees it, in microseconds, per library."""
    names = list(table)
    series = (("p50_ns", "p50"), ("p99_ns", "p99"), ("p999_ns", "p99.9"))
    height = 0.8 / len(series)
    values = [row[key] / 1000 for row in table.values() if "error" not in row for key, _ in series]
    low, high = (min(values), max(values)) if values else (1.0, 10.0)
    left = low / 3
    with _chart(path, 8.5, 1.2 + 0.42 * len(names)) as figure:
        axes = figure.add_subplot()
        axes.set_xscale("log")
        for i, row in enumerate(table.values()):
            if "error" in row:
                _note(axes, left * 1.2, i, _why_not_run(str(row["error"])))
                continue
            for k, (key, label) in enumerate(series):
                y = i + (k - 1) * height
                micros = row[key] / 1000
                axes.barh(y, micros - left, height, left=left, color=_COLOURS[k], label=label)
                axes.text(micros, y, f" {micros:,.1f}", va="center", ha="left", fontsize=7)
        _library_axis(axes, [_name(library, row) for library, row in table.items()])
        axes.set_xlim(left, high * 4)
        axes.set_xlabel("µs per enabled call, one call in 16 timed alone (log scale)")
        axes.set_title("Caller latency percentiles (lower is better)")
        _legend(figure, axes)


def disabled_chart(table: Mapping[str, Mapping[str, Any]], path: Path) -> None:
    """Bars: nanoseconds per call below the logger's level (a ``debug`` at ``INFO``)."""
    names = list(table)
    values = [row["disabled_ns"] for row in table.values() if "error" not in row]
    top = max(values, default=1.0)
    with _chart(path, 8.5, 1.0 + 0.3 * len(names)) as figure:
        axes = figure.add_subplot()
        for i, row in enumerate(table.values()):
            if "error" in row:
                _note(axes, top * 0.01, i, _why_not_run(str(row["error"])))
                continue
            nanos = row["disabled_ns"]
            axes.barh(i, nanos, 0.7, color=_COLOURS[0])
            axes.text(nanos, i, f" {nanos:,.0f}", va="center", ha="left", fontsize=7.5)
        _library_axis(axes, [_name(library, row) for library, row in table.items()])
        axes.set_xlim(0, top * 1.12)
        axes.xaxis.set_major_formatter(_thousands())
        axes.set_xlabel("ns per disabled call (debug() with the level at INFO)")
        axes.set_title("The disabled call (lower is better)")


def peer_charts(table: Mapping[str, Mapping[str, Any]], directory: Path) -> list[Path]:
    """Write ``throughput.svg``, ``latency.svg`` and ``disabled.svg`` for the peer
    comparison's *table* (the figures ``kakashi bench --json`` writes) into *directory*,
    creating it if needed. Returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / name for name in ("throughput.svg", "latency.svg", "disabled.svg")]
    for draw, path in zip((throughput_chart, latency_chart, disabled_chart), paths, strict=True):
        draw(table, path)
    return paths


def scaling_chart(rates: Mapping[str, Mapping[str, float | None]], path: Path) -> None:
    """Lines: end-to-end records/s against the number of producer threads, one line per
    library (*rates*: library -> thread count, as a string key, -> records/s or None),
    each point after the first labelled with its ratio to the library's one thread."""
    with _chart(path, 7.0, 4.2) as figure:
        axes = figure.add_subplot()
        counts = sorted({int(n) for per_count in rates.values() for n in per_count})
        for k, (library, per_count) in enumerate(rates.items()):
            points = [(int(n), rate) for n, rate in per_count.items() if rate]
            points.sort()
            colour = _COLOURS[k % len(_COLOURS)]
            missing = [n for n, rate in per_count.items() if not rate]
            label = library + (f" (failed with {', '.join(missing)} threads)" if missing else "")
            axes.plot(
                [n for n, _ in points],
                [r for _, r in points],
                marker="o",
                color=colour,
                label=label,
            )
            one = per_count.get("1")
            for n, rate in points:
                if one and n != 1:
                    axes.annotate(
                        f"{rate / one:.2f}x", (n, rate), textcoords="offset points",
                        xytext=(4, 4), fontsize=7.5, color=colour,
                    )  # fmt: skip
        axes.set_xscale("log", base=2)
        axes.set_xticks(counts, [str(n) for n in counts])
        # Log scale: equal ratios look equal, and slow libraries do not flatten to the axis.
        axes.set_yscale("log")
        axes.yaxis.set_major_formatter(_thousands())
        axes.yaxis.set_minor_formatter(_thousands())
        axes.set_xlabel("producer threads (labels: x the same library with one thread)")
        axes.set_ylabel("records/s (log scale)")
        axes.set_title("Throughput against producer threads (higher is better)")
        axes.legend(fontsize=8, frameon=False)


def sustained_chart(samples: Sequence[Sequence[float]], path: Path) -> None:
    """Two panels over the run's seconds: records/s in each interval and resident memory.

    *samples* are ``(seconds, RSS MiB, records sent so far)``, one a second, as
    ``benchmarks/sustained.py --json`` writes them.
    """
    times = [sample[0] for sample in samples]
    rss = [sample[1] for sample in samples]
    rates = interval_rates(samples)
    with _chart(path, 7.0, 4.6) as figure:
        top, bottom = figure.subplots(2, 1, sharex=True)
        top.plot(times[1:], rates, color=_COLOURS[0])
        top.set_ylim(0, max(rates, default=1.0) * 1.1)
        top.yaxis.set_major_formatter(_thousands())
        top.set_ylabel("records/s")
        top.set_title("A sustained run at full rate: throughput and resident memory")
        bottom.plot(times, rss, color=_COLOURS[1])
        bottom.set_ylim(0, max(rss, default=1.0) * 1.2)
        bottom.set_ylabel("RSS MiB")
        bottom.set_xlabel("seconds")


def interval_rates(samples: Sequence[Sequence[float]]) -> list[float]:
    """Records/s between consecutive ``(seconds, RSS MiB, records sent so far)`` samples."""
    return [
        (later[2] - earlier[2]) / (later[0] - earlier[0])
        for earlier, later in itertools.pairwise(samples)
    ]


def _thousands() -> Any:
    """An axis formatter writing 541234 as 541,234."""
    from matplotlib.ticker import StrMethodFormatter

    return StrMethodFormatter("{x:,.0f}")


def _legend(figure: Any, axes: Any) -> None:
    """One legend entry per series (whatever the number of bars), below the chart."""
    handles, labels = axes.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    figure.legend(
        unique.values(), unique.keys(), loc="outside lower center", ncols=len(unique),
        fontsize=8, frameon=False,
    )  # fmt: skip
