"""Progress lines for long work, one module for the whole project (tqdm draws the bars of
interactive commands: ``ytmt separate`` and the evaluate stage's per-image loop).

Both kinds print whole lines, never carriage returns, so they read the same in a terminal,
in DVC's output, in a stage's log file and in CI:

- :class:`Progress`: counted work (fetch, download, extract, synthesize):
  ``<label>: 120/256 (47%), eta 0:00:04, 35.1 per s`` to stderr at most every ``every_s``
  seconds and once at the end.
- :class:`RunProgress`: a training run, from rank 0: ``[name] epoch e/E step s/S loss ..
  img/s ETA h:mm:ss`` every ``every`` steps within long epochs, and :meth:`RunProgress.eta`
  for the loop's end-of-epoch line.

Times left are written by :func:`format_seconds` in both.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


def format_seconds(seconds: float) -> str:
    """``h:mm:ss``."""
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def console(message: str) -> None:
    """One line to stdout, flushed. Written to the stream, not with ``print``: inside Ray
    Train 2.60 workers ``print`` is patched to log the line and also echo it, so every
    printed line reached the driver's console twice."""
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def _human(n: float, unit: str) -> str:
    if unit != "B":
        return f"{n:.0f}"
    for u in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or u == "GB":
            return f"{n:.1f} {u}" if u != "B" else f"{n:.0f} B"
        n /= 1024
    return f"{n:.1f} GB"


class Progress:
    """Counted work: ``update(n)`` as items (or bytes, ``unit="B"``) are done, ``close()`` at
    the end. ``start``: what was already done before (a resumed download)."""

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
                text += f", eta {format_seconds((self.total - self.done) / rate)}"
        text += f", {_human(rate, self.unit)}{'/s' if self.unit == 'B' else ' per s'}"
        print(text, file=self.stream, flush=True)


class RunProgress:
    """Console progress of one run, from rank 0: a line at the end of every epoch (the loop's,
    with :meth:`eta`), and within long epochs every ``every`` steps
    ``epoch e/E step s/S loss .. img/s ETA h:mm:ss``.

    ``images_per_step`` is the global batch (all workers). The ETA extrapolates the mean
    step time of this process over the steps left in all remaining epochs.
    """

    def __init__(self, name: str, epochs: int, steps_per_epoch: int, images_per_step: int,
                 start_epoch: int = 0, every: int = 10, printer=console) -> None:
        self.name, self.epochs, self.steps = name, epochs, max(1, steps_per_epoch)
        self.images_per_step, self.every, self.printer = images_per_step, every, printer
        self.start_epoch = start_epoch
        self.t0 = time.perf_counter()
        self.done = 0
        self.left = (epochs - start_epoch) * self.steps

    def step(self, epoch: int, step: int, loss: float | Callable[[], float]) -> None:
        """After step ``step`` (1-based) of epoch ``epoch`` (1-based). ``loss``: the step's
        loss, or a function giving it, called only for a line that shows it (a device's
        loss costs a host sync: once per ``every`` steps, not every step)."""
        self.done += 1
        self.left = (self.epochs - epoch) * self.steps + (self.steps - step)
        if step % self.every or step == self.steps:  # the epoch's own line follows
            return
        if callable(loss):
            loss = loss()
        per_step = (time.perf_counter() - self.t0) / self.done
        self.printer(f"[{self.name}] epoch {epoch}/{self.epochs} step {step}/{self.steps} "
                     f"loss {loss:.4f} {self.images_per_step / per_step:.1f} img/s "
                     f"ETA {self.eta()}")

    def eta(self) -> str:
        """Time left for the remaining steps at this run's mean step time so far."""
        if not self.done:
            return "?"
        return format_seconds(self.left * (time.perf_counter() - self.t0) / self.done)
