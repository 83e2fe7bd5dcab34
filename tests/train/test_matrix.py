"""Concurrent runs of the training matrix (ytmt.train.matrix): the order DVC's stages impose,
the job runner, and (slow) two runs at once on the loopback cluster against one after the
other."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.conftest import tiny_params
from tests.train.matrix_project import DVC, dvc_project, mlflow_runs, train_project
from ytmt.train.matrix import local_ray, plan_matrix, run_jobs


def test_two_stage_runs_wait_for_the_stage_1_of_their_seed(tmp_path):
    """The repository's dvc.yaml with two variants, two seeds and a two-stage run: each
    train2 stage needs exactly its seed's stage 1; the runs read synthesize's shards and
    tune's best.yaml, which are reproduced first."""
    params = tiny_params(train__variants=["ytmt-ucs", "unet-no-fi"], train__seeds=[0, 1],
                         train__two_stage=[{"variant": "ytmt-uct", "stage1": "ytmt-ucs"}])
    plan = plan_matrix(dvc_project(tmp_path, params))
    assert plan.needs == {
        "train@ytmt-ucs-0": frozenset(), "train@ytmt-ucs-1": frozenset(),
        "train@unet-no-fi-0": frozenset(), "train@unet-no-fi-1": frozenset(),
        "train2@run0-0": {"train@ytmt-ucs-0"}, "train2@run0-1": {"train@ytmt-ucs-1"}}
    assert plan.upstream == ("synthesize", "tune")


def _job(log: Path, name: str, seconds: float, code: int = 0) -> list[str]:
    """A real process that logs its start and end times and exits with ``code``."""
    script = (f"import time, sys; f = open({str(log)!r}, 'a'); "
              f"f.write('{name} start %f\\n' % time.time()); f.flush(); "
              f"time.sleep({seconds}); f.write('{name} end %f\\n' % time.time()); "
              f"sys.exit({code})")
    return [sys.executable, "-c", script]


def _spans(log: Path) -> dict[str, tuple[float, float]]:
    times: dict[str, dict[str, float]] = {}
    for line in log.read_text().splitlines():
        name, what, t = line.split()
        times.setdefault(name, {})[what] = float(t)
    return {n: (t["start"], t["end"]) for n, t in times.items()}


def test_jobs_run_side_by_side_and_a_stage_2_after_its_stage_1(tmp_path):
    log = tmp_path / "log"
    commands = {"a0": _job(log, "a0", 1.0), "a1": _job(log, "a1", 1.0),
                "b0": _job(log, "b0", 0.1)}
    status = run_jobs(commands, {"b0": frozenset({"a0"})}, jobs=2, poll_s=0.05,
                      log=lambda _: None)
    assert status == {"a0": 0, "a1": 0, "b0": 0}
    spans = _spans(log)
    assert spans["a0"][0] < spans["a1"][1] and spans["a1"][0] < spans["a0"][1]  # overlap
    assert spans["b0"][0] >= spans["a0"][1]  # stage 2 after its stage 1


def test_one_job_at_a_time_and_failures_skip_what_needs_them(tmp_path):
    log = tmp_path / "log"
    commands = {"a0": _job(log, "a0", 0.2, code=3), "a1": _job(log, "a1", 0.2),
                "b0": _job(log, "b0", 0.1), "b1": _job(log, "b1", 0.1)}
    messages: list[str] = []
    status = run_jobs(commands, {"b0": frozenset({"a0"}), "b1": frozenset({"a1"})}, jobs=1,
                      poll_s=0.05, log=messages.append)
    assert status == {"a0": 3, "a1": 0, "b0": -1, "b1": 0}
    spans = _spans(log)
    assert "b0" not in spans
    ordered = sorted(spans.values())
    assert all(end <= nxt for (_, end), (nxt, _) in zip(ordered, ordered[1:], strict=False))
    assert "matrix: b0 not started: a0 failed" in messages
    with pytest.raises(ValueError, match="jobs = 0"):
        run_jobs(commands, {}, jobs=0)


# --------------------------------------------------------------------------- slow

@pytest.mark.slow
def test_two_runs_at_once_on_the_loopback_cluster_match_one_after_the_other(
        tmp_path, shards, monkeypatch):
    """ytmt-ucs seeds 0 and 1 through `python -m ytmt.train.matrix` on one local Ray on
    loopback (the runner's own, started once here for both projects) that every run's
    trainer joins ($RAY_ADDRESS), with --jobs 1 in one project and --jobs 2 in another, both
    projects at once:
    with 2 the MLflow runs overlap in time, with 1 they do not; both leave DVC up to date
    and give the same validation metrics (dvc metrics files and MLflow runs)."""
    projects = {jobs: train_project(tmp_path / f"jobs{jobs}", shards) for jobs in (1, 2)}
    # mlflow.set_tracking_uri in an earlier in-process test exports MLFLOW_TRACKING_URI:
    # the runs must use each project's own default store (sqlite:///<project>/mlflow.db)
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(key, raising=False)
    with local_ray(cpus=2) as joins:
        for key, value in joins.items():  # every run's trainer joins it
            monkeypatch.setenv(key, value)
        # both projects at once (three runs at the peak): each project's runs overlap or
        # not by its own --jobs, whatever else the Ray runs
        logs = {jobs: tmp_path / f"matrix{jobs}.log" for jobs in projects}
        procs = {}
        try:
            for jobs, project in projects.items():
                with logs[jobs].open("w") as log:
                    procs[jobs] = subprocess.Popen(
                        [sys.executable, "-m", "ytmt.train.matrix", "--jobs", str(jobs)],
                        cwd=project, stdout=log, stderr=subprocess.STDOUT)
            codes = {jobs: proc.wait(timeout=900) for jobs, proc in procs.items()}
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
    for jobs, code in codes.items():
        assert code == 0, logs[jobs].read_text()[-6000:]
    runs = {jobs: mlflow_runs(p) for jobs, p in projects.items()}
    for jobs in (1, 2):
        assert sorted(runs[jobs]) == ["ytmt-ucs-seed0", "ytmt-ucs-seed1"]
        assert {r["status"] for r in runs[jobs].values()} == {"FINISHED"}
        status = subprocess.run([*DVC, "status", "--json"], cwd=projects[jobs],
                                capture_output=True, text=True, check=True)
        assert json.loads(status.stdout) == {}
    a, b = runs[2]["ytmt-ucs-seed0"], runs[2]["ytmt-ucs-seed1"]
    assert a["start"] < b["end"] and b["start"] < a["end"]  # trained at once
    a, b = sorted(runs[1].values(), key=lambda r: r["start"])
    assert a["end"] <= b["start"]  # one after the other
    for name in runs[1]:  # everything but the training speed
        assert _learned(runs[2][name]["metrics"]) == _learned(runs[1][name]["metrics"])
        assert runs[2][name]["metrics"]["val_psnr_t"] > 0
    for seed in (0, 1):
        rel = f"outputs/metrics/val/ytmt-ucs-seed{seed}.json"
        assert _learned(json.loads((projects[2] / rel).read_text())) == \
            _learned(json.loads((projects[1] / rel).read_text()))


SPEED = ("images_per_s", "img_s")


def _learned(metrics: dict) -> dict:
    """A run's metrics without its speed (which concurrency changes)."""
    kept = {k: v for k, v in metrics.items() if k not in SPEED}
    assert len(kept) >= 4
    return kept
