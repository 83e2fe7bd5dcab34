"""What a sweep is before Ray starts: its trials' recipe, variant, resume key, storage and
resources.

Nothing here imports Ray, so every check runs (and fails) in milliseconds.

A trial is a shortened run of the training recipe (:func:`trial_params`): the same per-worker
batch, workers (so the same global batch and steps per epoch), crop, loss, precision and
learning-rate schedule shape; only :data:`SHORTENED_KEYS` differ, then ``tune.overrides``.
Its resources follow ``train`` unless ``tune`` sets them (:func:`trial_resources`), and as
many trials run at once as the cluster fits (:func:`concurrent_trials`).

The resume key names the Tune experiment ``<storage>/sweep-<variant>-<key>``: it hashes
what the trials compute (their recipe, the sweep settings that change results, the shard
set's content key) and nothing else, so running the same sweep again finds (and restores)
its experiment, a changed one starts afresh, and a logging or placement change does not
restart an interrupted sweep.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ytmt.cluster import uri_join, uri_with_suffix
from ytmt.config import to_dict
from ytmt.data.shards import shard_set_key
from ytmt.ray_local import resolve_storage
from ytmt.sweep.records import SweepError
from ytmt.sweep.space import grid_size

STORAGE_ENV = "YTMT_TUNE_STORAGE"
DEFAULT_STORAGE = "outputs/tune_runs"

# the train recipe keys (TrainConfig.recipe) a trial changes: it is shorter, its schedule too
SHORTENED_KEYS = ("epochs", "lr_milestones")

# tune settings that change what the trials compute or which one wins (the resume key's);
# the rest say where and how fast the sweep runs, or where it logs
_RESULT_KEYS = ("variant", "epochs", "num_samples", "space", "overrides", "scheduler",
                "metric", "mode", "grace_period", "reduction_factor", "replicate")


@dataclass(frozen=True)
class TrialResources:
    """What one trial holds: ``workers`` Ray Train workers of ``cpus_per_worker`` CPUs and
    ``gpus_per_worker`` GPUs (0: none), and its driver's ``driver`` resources."""

    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    driver: dict[str, float]

    def need(self, trials: int = 1) -> dict[str, float]:
        """The resources ``trials`` concurrent trials hold (a driver's CPU or GPU counts)."""
        need = {"CPU": self.workers * self.cpus_per_worker * trials}
        if self.gpus_per_worker > 0:
            need["GPU"] = self.workers * self.gpus_per_worker * trials
        for name, amount in self.driver.items():
            need[name] = need.get(name, 0.0) + amount * trials
        return need


def trial_resources(params) -> TrialResources:
    """``tune``'s per-trial resources, each null one following ``train``: ``num_workers``
    (1 for an in-process 0), ``cpus_per_worker``, and ``gpus_per_worker`` when
    ``train.use_gpu`` (else no GPU)."""
    tcfg, train = params.tune, params.train
    gpus = tcfg.gpus_per_worker
    if gpus is None:
        gpus = train.gpus_per_worker if train.use_gpu else 0.0
    return TrialResources(
        workers=tcfg.workers_per_trial or max(train.num_workers, 1),
        cpus_per_worker=tcfg.cpus_per_worker or train.cpus_per_worker,
        gpus_per_worker=float(gpus), driver=dict(tcfg.driver_resources))


def scaled_milestones(milestones, train_epochs: int, trial_epochs: int) -> tuple[int, ...]:
    """The learning-rate milestones of a ``train_epochs`` run placed at the same fraction of a
    ``trial_epochs`` run (rounded, >= 1; milestones that land on the same epoch merge)."""
    return tuple(sorted({max(1, round(m * trial_epochs / train_epochs)) for m in milestones}))


def trial_params(params):
    """The params every trial trains with (before its sampled weights): ``params`` with
    ``train.epochs`` = ``tune.epochs``, ``train.lr_milestones`` scaled to them
    (:func:`scaled_milestones`), the trial's resources (:func:`trial_resources`), then
    ``tune.overrides``. :class:`ConfigError` names a bad override."""
    from ytmt.params import resolve_params

    tcfg, train = params.tune, params.train
    res = trial_resources(params)
    use_gpu = res.gpus_per_worker > 0
    shortened = {
        "train.epochs": tcfg.epochs,
        "train.lr_milestones": list(scaled_milestones(train.lr_milestones, train.epochs,
                                                      tcfg.epochs)),
        "train.num_workers": res.workers, "train.cpus_per_worker": res.cpus_per_worker,
        "train.use_gpu": use_gpu,
        "train.gpus_per_worker": res.gpus_per_worker if use_gpu else train.gpus_per_worker,
        # nccl needs GPUs: a CPU trial of a GPU recipe uses gloo
        "train.backend": train.backend if use_gpu or train.backend != "nccl" else "auto"}
    return resolve_params(to_dict(params), {**shortened, **tcfg.overrides})


@dataclass(frozen=True)
class SweepPlan:
    """Where a sweep lives and how many trials it has (:func:`plan_sweep`)."""

    variant: str
    key: str  # :func:`sweep_key`
    storage: str  # resolved Ray Tune storage (absolute path or URI)
    space_keys: tuple[str, ...]  # the searched loss keys, in params order
    n_trials: int
    resources: TrialResources  # per trial
    replicate_seed: int | None  # the run seed of the winner's replicate (None: none)

    @property
    def name(self) -> str:
        return f"sweep-{self.variant}-{self.key}"

    @property
    def experiment_path(self) -> str:
        """The Tune experiment (restored when it exists)."""
        return uri_join(self.storage, self.name)

    @property
    def train_storage(self) -> str:
        """Where the trials' Ray Train runs keep their checkpoints."""
        return uri_join(self.storage, f"{self.name}_train")

    @property
    def scheduler_state(self) -> str:
        """ASHA's rung records (:class:`ytmt.sweep.scheduler.ResumableASHA`)."""
        return uri_join(self.storage, f"{self.name}_asha.pkl")

    @property
    def replicate_path(self) -> str:
        """The Tune experiment of the winner's replicate (another run seed)."""
        return uri_with_suffix(self.experiment_path, f"_seed{self.replicate_seed}")

    @property
    def state_paths(self) -> tuple[str, ...]:
        """Everything a resumed sweep reads back (``--fresh`` deletes them)."""
        paths = (self.experiment_path, self.train_storage, self.scheduler_state)
        return paths if self.replicate_seed is None else (*paths, self.replicate_path)


def plan_sweep(params, shards: str | Path, storage_path: str | None = None) -> SweepPlan:
    """The plan of ``params.tune`` on the (complete) shard set ``shards``; ``storage_path``
    overrides ``tune.storage_path`` (then ``$YTMT_TUNE_STORAGE``, ``outputs/tune_runs``)."""
    tcfg = params.tune
    return SweepPlan(
        variant=params.tune.variant, key=sweep_key(params, shards),
        storage=resolve_storage(storage_path or tcfg.storage_path, STORAGE_ENV,
                                DEFAULT_STORAGE, setting="tune.storage_path"),
        space_keys=tuple(tcfg.space), n_trials=tcfg.num_samples * grid_size(tcfg.space),
        resources=trial_resources(params),
        replicate_seed=params.seed + 1 if tcfg.replicate else None)


def sweep_key(params, shards: str | Path) -> str:
    """A short hash of what a sweep computes: the trials' recipe (seed, model, loss and the
    ``train`` recipe keys of :func:`trial_params`, so the runs listed, logging, stores and
    resources do not count), the tune settings that change results, and the shard set's
    content key."""
    trial = trial_params(params)
    tune_cfg = {k: v for k, v in to_dict(params.tune).items() if k in _RESULT_KEYS}
    digest = {"seed": trial.seed, "model": to_dict(trial.model), "loss": to_dict(trial.loss),
              "train": trial.train.recipe(), "tune": tune_cfg, "data": shard_set_key(shards)}
    return hashlib.sha1(json.dumps(digest, sort_keys=True, default=str).encode()).hexdigest()[:10]


def check_overrides(params) -> None:
    """The trials' params (:func:`trial_params`) with a first point of the space, so that a
    bad override fails now (:class:`ConfigError`), not in every trial."""
    from ytmt.params import resolve_params

    tcfg = params.tune
    example = {k: (s["values"][0] if "values" in s else s["low"]) for k, s in tcfg.space.items()}
    resolve_params(to_dict(trial_params(params)), example)


def local_resources(tcfg, trials: int) -> dict[str, float]:
    """The custom resources a local Ray gets: enough of each driver resource for ``trials``
    trial drivers at once (CPU and GPU are the machine's)."""
    return {k: float(math.ceil(v * trials))
            for k, v in tcfg.driver_resources.items() if k not in ("CPU", "GPU")}


def _shortfall(res: TrialResources, trials: int, cluster: Mapping[str, float]) -> str | None:
    """Why ``trials`` concurrent trials do not fit ``cluster`` (None: they fit)."""
    for name, amount in res.need(trials).items():
        have = float(cluster.get(name, 0.0))
        if amount > have + 1e-9:
            hint = (f"start the nodes with --resources='{{\"{name}\": "
                    f"{math.ceil(amount)}}}' or set tune.driver_resources"
                    if name in res.driver and name not in ("CPU", "GPU") else
                    "lower tune.max_concurrent_trials, tune.workers_per_trial or "
                    f"tune.{'cpus' if name == 'CPU' else 'gpus'}_per_worker")
            return (f"{trials} concurrent trial(s) need {amount:g} {name} but the Ray cluster "
                    f"has {have:g}: {hint}")
    return None


def concurrent_trials(res: TrialResources, cluster: Mapping[str, float], n_trials: int,
                      limit: int | None = None) -> int:
    """How many trials run at once: ``limit`` (``tune.max_concurrent_trials``) when set, else
    as many as ``cluster`` (Ray's resources) fits at once, at most ``n_trials``. Refuses
    (:class:`SweepError`) trials that cannot all get their workers: a trial left waiting dies
    on Ray Train's worker-group start timeout instead of queueing."""
    wanted = limit or 1
    problem = _shortfall(res, wanted, cluster)
    if problem:
        raise SweepError(problem)
    if limit:
        return limit
    fits = min(math.floor(float(cluster.get(name, 0.0)) / amount + 1e-9)
               for name, amount in res.need(1).items() if amount > 0)
    return max(1, min(fits, n_trials))
