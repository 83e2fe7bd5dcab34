"""The sweep's driver-side Tune callback: scheduler decisions onto the trials' MLflow runs.

Tune tells a callback what happened to each trial; :class:`SweepRecorder` writes it onto
the trial's MLflow child run as it happens, so the MLflow UI shows which trials ASHA
stopped and when, also for a sweep that is later interrupted:

- the scheduler stops a trial before its last epoch (Tune's result with ``done``): tags
  ``tune_decision: stopped_early`` and ``tune_stopped_at_epoch``, metric
  ``tune_stopped_early`` = 1 at that epoch; the run ends FINISHED when Tune completes it;
- a trial reaches its last epoch: ``tune_decision: completed``, FINISHED;
- Tune completes an unfinished trial that was not stopped (an interrupted sweep abandons
  it): KILLED, no decision (a resumed sweep reopens the run);
- a trial fails: ``tune_decision: error``, FAILED.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ray import tune

from ytmt.sweep.records import DECISION_TAG, STOPPED_AT_TAG, TIME_ATTR, find_child_run
from ytmt.tracking import client


class SweepRecorder(tune.Callback):
    """Records scheduler decisions of a sweep of ``epochs`` epochs per trial on the child
    runs of ``parent_run_id`` (see the module docstring); ``log`` gets one line per early
    stop or error."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str,
                 epochs: int, log: Callable[[str], None] = print) -> None:
        self.tracking_uri, self.experiment_id = tracking_uri, experiment_id
        self.parent_run_id, self.epochs, self.log = parent_run_id, epochs, log
        self._runs: dict[str, str] = {}  # trial id -> MLflow run id
        self._stopped: set[str] = set()  # trials the scheduler stopped early

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles callbacks with the experiment
        state = dict(self.__dict__)
        state["log"], state["_runs"] = None, {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.log = print

    def _run_id(self, trial_id: str) -> str | None:
        if trial_id not in self._runs:
            run = find_child_run(client(self.tracking_uri), self.experiment_id,
                                 self.parent_run_id, trial_id)
            if run is None:
                return None
            self._runs[trial_id] = run.info.run_id
        return self._runs[trial_id]

    def _tag(self, trial_id: str, tags: dict[str, Any], status: str | None = None,
             stopped_at: int | None = None) -> None:
        from mlflow.entities import Metric, RunTag

        run_id = self._run_id(trial_id)
        if run_id is None:
            self.log(f"[tune] trial {trial_id}: no MLflow run to record {tags} on")
            return
        c = client(self.tracking_uri)
        metrics = [] if stopped_at is None else [
            Metric("tune_stopped_early", 1.0, int(time.time() * 1000), stopped_at)]
        c.log_batch(run_id, metrics=metrics, tags=[RunTag(k, str(v)) for k, v in tags.items()])
        if status:
            c.set_terminated(run_id, status)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        # Tune sets done=True on the result the scheduler decided to STOP on.
        if not result.get("done") or TIME_ATTR not in result:
            return
        epoch = int(result[TIME_ATTR])
        if epoch < self.epochs:
            self.log(f"[tune] trial {trial.trial_id} stopped early by the scheduler at "
                     f"epoch {epoch}/{self.epochs}")
            self._stopped.add(trial.trial_id)
            self._tag(trial.trial_id, {DECISION_TAG: "stopped_early", STOPPED_AT_TAG: epoch},
                      stopped_at=epoch)
        else:
            self._tag(trial.trial_id, {DECISION_TAG: "completed"})

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        last = trial.last_result or {}
        if int(last.get(TIME_ATTR, 0)) >= self.epochs:
            self._tag(trial.trial_id, {DECISION_TAG: "completed"}, status="FINISHED")
        elif trial.trial_id in self._stopped:  # tagged when the scheduler decided
            self._tag(trial.trial_id, {}, status="FINISHED")
        elif self._run_id(trial.trial_id) is not None:
            # Tune also "completes" the trials it abandons when the sweep is interrupted;
            # a resumed sweep reopens the run
            self._tag(trial.trial_id, {}, status="KILLED")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.log(f"[tune] trial {trial.trial_id} failed: {trial.error_file}")
        self._tag(trial.trial_id, {DECISION_TAG: "error"}, status="FAILED")
