"""What a sweep is before Ray starts: its variant, resume key, storage and resources.

Nothing here imports Ray, so every check runs (and fails) in milliseconds. The resume key
names the Tune experiment ``<storage>/sweep-<variant>-<key>``: it hashes the resolved
recipe, the sweep settings that change results and the shard set's content key, so running
the same sweep again finds (and restores) its experiment and a changed one starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ytmt.config import ConfigError, to_dict
from ytmt.data.shards import shard_set_key
from ytmt.ray_local import resolve_storage
from ytmt.sweep.records import SweepError
from ytmt.sweep.space import grid_size

STORAGE_ENV = "YTMT_TUNE_STORAGE"
DEFAULT_STORAGE = "outputs/tune_runs"

# tune settings that say where/how fast a sweep runs, not what it computes
_PLACEMENT_KEYS = ("ray_address", "local_cpus", "storage_path", "tracking_uri",
                   "max_concurrent_trials", "workers_per_trial", "cpus_per_worker",
                   "gpus_per_worker", "driver_resources")


@dataclass(frozen=True)
class SweepPlan:
    """Where a sweep lives and how many trials it has (:func:`plan_sweep`)."""

    variant: str
    key: str  # :func:`sweep_key`
    storage: str  # resolved Ray Tune storage (absolute path or URI)
    space_keys: tuple[str, ...]  # the searched loss keys, in params order
    n_trials: int

    @property
    def name(self) -> str:
        return f"sweep-{self.variant}-{self.key}"

    @property
    def experiment_path(self) -> str:
        """The Tune experiment (restored when it exists)."""
        return f"{self.storage}/{self.name}"

    @property
    def train_storage(self) -> str:
        """Where the trials' Ray Train runs keep their checkpoints."""
        return f"{self.storage}/{self.name}_train"

    @property
    def scheduler_state(self) -> str:
        """ASHA's rung records (:class:`ytmt.sweep.scheduler.ResumableASHA`)."""
        return f"{self.storage}/{self.name}_asha.pkl"

    @property
    def state_paths(self) -> tuple[str, str, str]:
        """Everything a resumed sweep reads back (``--fresh`` deletes them)."""
        return self.experiment_path, self.train_storage, self.scheduler_state


def plan_sweep(params, shards: str | Path, storage_path: str | None = None) -> SweepPlan:
    """The plan of ``params.tune`` on the (complete) shard set ``shards``; ``storage_path``
    overrides ``tune.storage_path`` (then ``$YTMT_TUNE_STORAGE``, ``outputs/tune_runs``)."""
    tcfg = params.tune
    return SweepPlan(
        variant=tuned_variant(params), key=sweep_key(params, shards),
        storage=resolve_storage(storage_path or tcfg.storage_path, STORAGE_ENV,
                                DEFAULT_STORAGE),
        space_keys=tuple(tcfg.space), n_trials=tcfg.num_samples * grid_size(tcfg.space))


def sweep_key(params, shards: str | Path) -> str:
    """A short hash of what a sweep computes: seed, model, loss, train, the tune settings
    that change results, and the shard set's content key."""
    tune_cfg = {k: v for k, v in to_dict(params.tune).items() if k not in _PLACEMENT_KEYS}
    digest = {"seed": params.seed, "model": to_dict(params.model), "loss": to_dict(params.loss),
              "train": to_dict(params.train), "tune": tune_cfg, "data": shard_set_key(shards)}
    return hashlib.sha1(json.dumps(digest, sort_keys=True, default=str).encode()).hexdigest()[:10]


def tuned_variant(params) -> str:
    """The variant a sweep trains (``tune.variant``, single-stage)."""
    from ytmt.variants import get_variant

    variant = params.tune.variant
    spec = get_variant(variant)
    if spec.stages > 1:
        raise ConfigError(
            f"tune.variant = {variant!r} is two-stage; sweep the loss weights on its stage-1 "
            f"variant ({spec.stage1_variant!r}): the weights apply to both stages")
    return variant


def check_overrides(params) -> None:
    """Apply ``tune.overrides`` and a first point of the space to the params, so that a bad
    override fails now (:class:`ConfigError`), not in every trial."""
    from ytmt.train.components import resolve_params

    tcfg = params.tune
    example = {k: (s["values"][0] if "values" in s else s["low"]) for k, s in tcfg.space.items()}
    resolve_params(to_dict(params), {**tcfg.overrides, **example})


def local_resources(tcfg) -> dict[str, float]:
    """The custom resources a local Ray gets: enough of each driver resource for
    ``max_concurrent_trials`` trial drivers (CPU and GPU are the machine's)."""
    return {k: float(math.ceil(v * tcfg.max_concurrent_trials))
            for k, v in tcfg.driver_resources.items() if k not in ("CPU", "GPU")}


def check_resources(tcfg, cluster: Mapping[str, float]) -> None:
    """Refuse a sweep whose concurrent trials cannot all get their workers: a trial left
    waiting dies on Ray Train's worker-group start timeout instead of queueing."""
    need = {"CPU": tcfg.workers_per_trial * tcfg.cpus_per_worker * tcfg.max_concurrent_trials}
    if tcfg.gpus_per_worker > 0:
        need["GPU"] = tcfg.workers_per_trial * tcfg.gpus_per_worker * tcfg.max_concurrent_trials
    drivers = {k: v * tcfg.max_concurrent_trials for k, v in tcfg.driver_resources.items()}
    for name in ("CPU", "GPU"):
        need[name] = need.get(name, 0.0) + drivers.pop(name, 0.0)
    for name, amount in {**need, **drivers}.items():
        have = float(cluster.get(name, 0.0))
        if amount > have + 1e-9:
            hint = (f"start the nodes with --resources='{{\"{name}\": "
                    f"{math.ceil(amount)}}}' or set tune.driver_resources"
                    if name in drivers else
                    "lower tune.max_concurrent_trials, tune.workers_per_trial or "
                    f"tune.{'cpus' if name == 'CPU' else 'gpus'}_per_worker")
            raise SweepError(
                f"{tcfg.max_concurrent_trials} concurrent trial(s) need {amount:g} {name} "
                f"but the Ray cluster has {have:g}: {hint}")
