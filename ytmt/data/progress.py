"""A dependency-free progress line for long stages (fetch, download, synthesize).

Prints ``<label>: 120/256 (47%) 35.1/s, eta 4s`` to stderr at most every ``every_s``
seconds and once at the end, one line each time, so it reads well in DVC logs and CI too.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _human(n: float, unit: str) -> str:
    if unit != "B":
        return f"{n:.0f}"
    for u in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or u == "GB":
            return f"{n:.1f} {u}" if u != "B" else f"{n:.0f} B"
        n /= 1024
    return f"{n:.1f} GB"


class Progress:
    def __init__(self, label: str, total: int | None, unit: str = "", every_s: float = 2.0,
                 stream: TextIO | None = None, start: int = 0):
        self.label, self.total, self.unit = label, total, unit
        self.every_s = every_s
        self.stream = stream if stream is not None else sys.stderr
        self.done = start
        self._start_done = start
        self._t0 = self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._print(now)

    def close(self) -> None:
        self._print(time.monotonic())

    def _print(self, now: float) -> None:
        elapsed = max(now - self._t0, 1e-9)
        rate = (self.done - self._start_done) / elapsed
        text = f"{self.label}: {_human(self.done, self.unit)}"
        if self.total:
            text += f"/{_human(self.total, self.unit)} ({100 * self.done / self.total:.0f}%)"
            if rate > 0 and self.done < self.total:
                text += f", eta {(self.total - self.done) / rate:.0f}s"
        text += f", {_human(rate, self.unit)}{'/s' if self.unit == 'B' else ' per s'}"
        print(text, file=self.stream, flush=True)
