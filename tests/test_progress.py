"""ytmt.progress: whole lines (no carriage returns), times left as h:mm:ss in both kinds."""

from __future__ import annotations

import io
from types import SimpleNamespace

from ytmt.progress import Progress, RunProgress, format_seconds


def test_counted_progress_prints_whole_lines_with_rate_and_time_left(monkeypatch):
    clock = iter([0.0, 1.0, 3.0, 3.5, 10.0])
    monkeypatch.setattr("ytmt.progress.time", SimpleNamespace(monotonic=lambda: next(clock)))
    out = io.StringIO()
    prog = Progress("synthesize", 100, every_s=2.0, stream=out)  # t = 0
    prog.update(10)  # t = 1: too soon for a line
    prog.update(20)  # t = 3: 30 done at 10 per s
    prog.update(70)
    prog.close()  # t = 10
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines == ["synthesize: 30/100 (30%), eta 0:00:07, 10 per s",
                     "synthesize: 100/100 (100%), 10 per s"]


def test_a_resumed_download_counts_its_rate_from_where_it_started(monkeypatch):
    clock = iter([0.0, 1.0, 4.0])
    monkeypatch.setattr("ytmt.progress.time", SimpleNamespace(monotonic=lambda: next(clock)))
    out = io.StringIO()
    prog = Progress("download voc", 4 * 2**20, "B", stream=out, start=2**20)
    prog.update(2**20)
    prog.close()
    assert out.getvalue() == ("download voc: 2.0 MB/4.0 MB (50%), eta 0:00:08, "
                              "256.0 KB/s\n")


def test_run_progress_says_epoch_step_loss_speed_and_time_left(monkeypatch):
    clock = iter([0.0, 4.0, 4.0, 4.0])
    monkeypatch.setattr("ytmt.progress.time", SimpleNamespace(perf_counter=lambda: next(clock)))
    lines: list[str] = []
    prog = RunProgress("ytmt-ucs", epochs=2, steps_per_epoch=4, images_per_step=8, every=2,
                       printer=lines.append)
    prog.step(1, 1, 0.5)  # not a multiple of every: no line, and the loss is not read
    prog.step(1, 2, lambda: 0.25)  # 2 steps in 4 s: 2 s a step, 6 steps left
    assert lines == ["[ytmt-ucs] epoch 1/2 step 2/4 loss 0.2500 4.0 img/s ETA 0:00:12"]
    assert prog.eta() == "0:00:12"
    assert format_seconds(3725.4) == "1:02:05"
