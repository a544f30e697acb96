"""A progress bar for transfers and a spinner for waits, drawn on a terminal's stderr only:
piped or redirected output stays clean for scripts."""

from __future__ import annotations

import itertools
import sys
import threading
import time
from typing import TextIO

FRAMES = "|/-\\"
REDRAW_EVERY = 0.1


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} GiB"


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class ProgressBar:
    """`update(n)` as bytes go by; draws bytes/total, a bar and the rate at most every 100 ms."""

    def __init__(
        self, label: str, total: int | None, stream: TextIO | None = None, width: int = 24
    ):
        self._stream = stream or sys.stderr
        self._enabled = _is_terminal(self._stream)
        self._label = label
        self._total = total
        self._width = width
        self._done = 0
        self._started = time.monotonic()
        self._drawn_at = 0.0

    def update(self, count: int) -> None:
        self.show(self._done + count, self._total)

    def show(self, done: int, total: int | None) -> None:
        """The SDK's progress callback: bytes so far, and the total when known."""
        self._done, self._total = done, total if total is not None else self._total
        now = time.monotonic()
        if self._enabled and now - self._drawn_at >= REDRAW_EVERY:
            self._drawn_at = now
            self._draw(now)

    def close(self) -> None:
        if self._enabled:
            self._draw(time.monotonic())
            self._stream.write("\n")
            self._stream.flush()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _draw(self, now: float) -> None:
        elapsed = now - self._started
        # A rate over the first instants says nothing.
        rate = f" {human_bytes(self._done / elapsed)}/s" if elapsed > 0.5 else ""
        if self._total:
            filled = min(self._width, self._width * self._done // self._total)
            bar = "#" * filled + "-" * (self._width - filled)
            amount = f"[{bar}] {human_bytes(self._done)}/{human_bytes(self._total)}"
        else:
            amount = human_bytes(self._done)
        self._stream.write(f"\r\x1b[K{self._label} {amount}{rate}")
        self._stream.flush()


class Spinner:
    """Turns on a background thread while the caller blocks; `text` is what it shows beside."""

    def __init__(self, text: str = "", stream: TextIO | None = None):
        self._stream = stream or sys.stderr
        self._enabled = _is_terminal(self._stream)
        self.text = text
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, daemon=True)

    def __enter__(self) -> Spinner:
        if self._enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._enabled:
            self._stop.set()
            self._thread.join()
            self._stream.write("\r\x1b[K")
            self._stream.flush()

    def _spin(self) -> None:
        started = time.monotonic()
        for frame in itertools.cycle(FRAMES):
            elapsed = int(time.monotonic() - started)
            self._stream.write(f"\r\x1b[K{frame} {self.text} {elapsed}s")
            self._stream.flush()
            if self._stop.wait(REDRAW_EVERY):
                return
