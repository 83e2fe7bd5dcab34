"""params.yaml section ``tune``: the loss-weight sweep (:mod:`ytmt.sweep`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ytmt.config import ConfigError, bounded
from ytmt.metric_names import validation_metrics
from ytmt.sweep.space import validate_space


def _default_space() -> dict[str, dict[str, Any]]:
    return {
        "loss.perceptual": {"type": "loguniform", "low": 0.01, "high": 1.0},
        "loss.exclusion": {"type": "choice", "values": [0.5, 1.0, 2.0]},
    }


# sections whose fields ``tune.overrides`` may set for every trial
_OVERRIDABLE_SECTIONS = ("model", "loss", "train")


@dataclass(frozen=True)
class TuneConfig:
    """The loss-weight sweep (params.yaml ``tune``; :mod:`ytmt.sweep`).

    Each trial is a shortened run of the ``train`` recipe (:func:`ytmt.sweep.plan.trial_params`):
    ``variant`` (single-stage) for at most ``epochs`` epochs, the learning-rate milestones
    scaled to them, everything else (batch per worker, workers, crop, loss, precision) as
    training has it, then ``overrides`` (dotted keys of model/loss/train; none by default)
    and the sampled weights of ``space`` (:mod:`ytmt.sweep.space`). ``replicate`` trains
    the winner once more with run seed ``seed + 1``, so the sweep reports its trials'
    spread against one config's spread over two seeds. ``enabled: false`` writes an empty
    ``best.yaml`` without starting Ray.

    Resources: a trial runs ``workers_per_trial`` Ray Train workers of ``cpus_per_worker``
    CPUs (and ``gpus_per_worker`` GPUs); null follows ``train`` (its ``num_workers``,
    ``cpus_per_worker``, and ``gpus_per_worker`` when ``train.use_gpu``, else 0). Its driver
    takes only ``driver_resources`` (a custom resource the sweep gives the local Ray, so
    drivers never hold a CPU the workers need: design.md s5). ``max_concurrent_trials``
    null runs as many trials at once as the Ray cluster fits; a number is refused when they
    cannot all fit, since waiting trials die on Ray Train's worker-group start timeout.

    Scheduler: ``asha`` stops trials whose ``metric`` (reported each epoch) falls below the
    rung cutoff after ``grace_period`` epochs (rungs every ``reduction_factor``×); ``fifo``
    runs every trial to ``epochs``.

    Where: ``ray_address`` null: ``$RAY_ADDRESS`` (set by ``ray job submit``) or a local Ray
    of ``local_cpus`` CPUs (null: all). ``storage_path`` null: ``$YTMT_TUNE_STORAGE`` or
    ``<cwd>/outputs/tune_runs`` (outside the DVC output, so an interrupted sweep resumes);
    on a cluster it must be shared storage. ``tracking_uri`` null:
    ``$MLFLOW_TRACKING_URI`` or the local SQLite store (:mod:`ytmt.tracking`).
    """

    enabled: bool = True
    variant: str = "ytmt-ucs"
    epochs: int = bounded(2, ge=1)
    num_samples: int = bounded(2, ge=1)
    space: dict[str, dict[str, Any]] = field(default_factory=_default_space)
    overrides: dict[str, Any] = field(default_factory=dict)
    # scheduler
    scheduler: Literal["asha", "fifo"] = "asha"
    metric: str = "val_psnr_t"
    mode: Literal["max", "min"] = "max"
    grace_period: int = bounded(1, ge=1)
    reduction_factor: float = bounded(2.0, gt=1.0)
    replicate: bool = True  # the winner again with run seed seed + 1: the seed spread
    # resources (null: follow train, see plan.trial_resources; concurrency: what fits)
    max_concurrent_trials: int | None = bounded(None, ge=1)
    workers_per_trial: int | None = bounded(None, ge=1)
    cpus_per_worker: float | None = bounded(None, gt=0.0)
    gpus_per_worker: float | None = bounded(None, ge=0.0)
    driver_resources: dict[str, float] = field(default_factory=lambda: {"train_driver": 0.01})
    # where
    ray_address: str | None = None
    local_cpus: int | None = bounded(None, ge=1)
    storage_path: str | None = None
    experiment: str = "ytmt-tune"
    tracking_uri: str | None = None

    def validate(self) -> None:
        from ytmt.variants import VARIANTS

        if self.variant not in VARIANTS:
            raise ConfigError(f"variant = {self.variant!r}: unknown; known: "
                              f"{', '.join(VARIANTS)}")
        validate_space(self.space)
        for key in self.overrides:
            section, _, name = key.partition(".")
            if section not in _OVERRIDABLE_SECTIONS or not name:
                raise ConfigError(f"overrides.{key}: expected '<section>.<field>' with section "
                                  f"one of {', '.join(_OVERRIDABLE_SECTIONS)}")
            if key in self.space:
                raise ConfigError(f"overrides.{key}: also in tune.space; a key is either "
                                  "fixed or searched")
            if key == "train.epochs":
                raise ConfigError("overrides.train.epochs: use tune.epochs")
        for name, amount in self.driver_resources.items():
            if amount <= 0:
                raise ConfigError(f"driver_resources.{name} = {amount}: must be > 0")
        if self.grace_period > self.epochs:
            raise ConfigError(f"grace_period = {self.grace_period} must be <= epochs = "
                              f"{self.epochs}")
        if VARIANTS[self.variant].stages > 1:
            raise ConfigError(f"variant = {self.variant!r} is two-stage; sweep the loss "
                              "weights on its stage-1 variant "
                              f"({VARIANTS[self.variant].stage1_variant!r}): the weights apply "
                              "to both stages")
        reported = (*validation_metrics(), "train_loss")  # what every trial reports per epoch
        if self.metric not in reported:
            raise ConfigError(f"metric = {self.metric!r}: trials report no such metric; "
                              f"choose from {', '.join(reported)}")
