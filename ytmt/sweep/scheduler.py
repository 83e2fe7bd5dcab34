"""The sweep's trial scheduler: ASHA whose rung records survive a resumed sweep, or FIFO.

Tune does not save its scheduler with the experiment: a restored ASHA would forget the
rungs the finished trials reached and could no longer stop the rest (the first trial to
reach a rung is never stopped there). :class:`ResumableASHA` pickles its state to a file
(local path or URI, e.g. ``s3://``) after every decision and reloads it before the first
trial of a resumed sweep is added.
"""

from __future__ import annotations

import pickle
from typing import Any

import pyarrow.fs
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from ytmt.sweep.records import TIME_ATTR


class ResumableASHA(ASHAScheduler):
    """:class:`ray.tune.schedulers.ASHAScheduler` whose state lives in ``state_path`` too
    (see the module docstring); the other arguments are ASHA's."""

    _OWN = ("_state_path", "_loaded")  # attributes that are not ASHA's state

    def __init__(self, state_path: str, *, time_attr: str = TIME_ATTR, max_t: int,
                 grace_period: int, reduction_factor: float, metric: str | None = None,
                 mode: str | None = None) -> None:
        super().__init__(time_attr=time_attr, max_t=max_t, grace_period=grace_period,
                         reduction_factor=reduction_factor, metric=metric, mode=mode)
        self._state_path = state_path
        self._loaded = False

    def _file(self) -> tuple[pyarrow.fs.FileSystem, str]:
        path = self._state_path
        from ytmt.cluster import filesystem

        return filesystem(path)

    def _save(self) -> None:
        state = {k: v for k, v in self.__dict__.items() if k not in self._OWN}
        fs, path = self._file()
        with fs.open_output_stream(path) as f:
            f.write(pickle.dumps(state))

    def _load(self) -> None:
        """Once, before the first trial: the saved state of an earlier run, if any."""
        self._loaded = True
        fs, path = self._file()
        if fs.get_file_info(path).type == pyarrow.fs.FileType.File:
            with fs.open_input_stream(path) as f:
                self.__dict__.update(pickle.loads(f.read()))

    def on_trial_add(self, tune_controller, trial) -> None:
        if not self._loaded:
            self._load()
        if trial.trial_id not in self._trial_info:  # a restored trial keeps its bracket
            super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict[str, Any]) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        self._save()
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict[str, Any]) -> None:
        if trial.trial_id in self._trial_info:
            super().on_trial_complete(tune_controller, trial, result)
            self._save()

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._trial_info.pop(trial.trial_id, None)


def make_scheduler(tcfg, state_path: str) -> TrialScheduler:
    """``tune.scheduler``: ``asha`` (:class:`ResumableASHA` on the epoch, state in
    ``state_path``) or ``fifo``. Tune sets the metric and mode from its TuneConfig."""
    if tcfg.scheduler == "fifo":
        return FIFOScheduler()
    return ResumableASHA(state_path, max_t=tcfg.epochs, grace_period=tcfg.grace_period,
                         reduction_factor=tcfg.reduction_factor)
