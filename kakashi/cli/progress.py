"""A one-line progress bar for the command-line tools."""

from __future__ import annotations

from typing import TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    """A one-line progress bar on a stream (only redrawn when the percentage moves)."""

    def __init__(self, total: int, stream: TextIO, width: int = 30) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self.width = width
        self.shown = -1
        try:
            self.live = stream.isatty()
        except Exception:
            self.live = False
        # Redrawn in place on a terminal; elsewhere (CI logs, pipes) one line per quarter.
        self.step = 1 if self.live else 25

    def update(self, done: int) -> None:
        """Redraw if the percentage moved by a step."""
        percent = done * 100 // self.total
        if percent // self.step == self.shown // self.step and self.shown >= 0:
            return
        self.shown = percent
        filled = self.width * percent // 100
        bar = f"  [{'#' * filled}{'.' * (self.width - filled)}] {percent:3d}%"
        self.stream.write(f"\r{bar}" if self.live else f"{bar}\n")
        self.stream.flush()

    def finish(self) -> None:
        """Complete the bar and end its line."""
        if self.shown < 100:
            self.shown = 99 if self.live else 75
            self.update(self.total)
        if self.live:
            self.stream.write("\n")
