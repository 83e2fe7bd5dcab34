"""Ray Tune over the loss weights; every trial is a Ray Train run of the shared loop.

Shape of a sweep (design.md s5 has the measured reasons)::

    driver (pipelines/tune.py)          Tune trial i (a function, driver resource only)
    ───────────────────────────         ─────────────────────────────────────────────────
    MLflow parent run                   MLflow child run (tag mlflow.parentRunId) with the
    Tuner(run_trial, ASHA on            sampled weights as params
          val_psnr_t, BasicVariant      TorchTrainer(loop, workers_per_trial workers,
          seeded by params.seed)          callbacks=[TuneReportCallback()]).fit()
    SweepRecorder: scheduler            └─ each epoch: ray.train.report → Tune result
      decisions → child-run tags

- Trials take only ``tune.driver_resources`` (a custom ``train_driver`` resource that the
  local Ray is given), never a CPU, so a trial's Train workers always find the CPUs they
  need and no trial dies on the worker-group start timeout. The sweep refuses to start when
  ``max_concurrent_trials`` trials cannot all get their workers at once.
- The local Ray runs with its dashboard (bound to 127.0.0.1): Ray Train's placement-group
  cleaner asks the state API whether a trial's Train controller is alive, and without it a
  trial stopped by ASHA leaks its workers' CPUs and the next trial hangs (measured here).
- Resume: the Tune experiment is ``<storage>/sweep-<variant>-<key>``, ``key`` hashing the
  resolved recipe, the sweep settings and the shard manifest. Running the same sweep again
  restores it (``Tuner.restore``): finished trials are kept, unfinished ones restart and
  their Train run (named after the trial id) continues from its last checkpoint; the MLflow
  parent and child runs are reused.
- Scheduler decisions: :class:`SweepRecorder` tags each trial's MLflow run when ASHA stops
  it; ASHA's rung records are saved beside the experiment so a resumed sweep keeps them.
- Records: ``best.yaml`` (dotted loss keys → the values of the best trial: the best final
  metric among trials that ran every epoch, see :func:`best_row`), ``trials.csv`` (every
  trial: sampled weights, final and best metric, scheduler decision, MLflow run, Ray nodes)
  and ``summary.json``; all written atomically.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ytmt.config import ConfigError, to_dict
from ytmt.ray_local import start_local_ray
from ytmt.train.report import atomic_write_bytes

STORAGE_ENV = "YTMT_TUNE_STORAGE"
BEST_FILE, TRIALS_FILE, SUMMARY_FILE = "best.yaml", "trials.csv", "summary.json"
TRIAL_TAG = "ytmt_tune_trial_id"
SWEEP_TAG = "ytmt_sweep_key"
DECISION_TAG = "tune_decision"  # completed | stopped_early | error
STOPPED_AT_TAG = "tune_stopped_at_epoch"
NODE_TAG = "ray_node_id"  # ray_node_id.trial (the trial driver), ray_node_id.rank<k>
TIME_ATTR = "epoch"  # the loop reports 1-based epochs; survives a resumed Train run
_TRIAL_DIR = re.compile(r"_([0-9a-f]{5}_[0-9]{5})_")  # run_trial_<exp>_<index>_<params>_<date>


class SweepError(RuntimeError):
    """The sweep cannot run (resources, storage) or a trial failed."""


class SweepInterrupted(SweepError):
    """The sweep stopped (Ctrl-C) with trials unfinished; running it again resumes it."""


# --------------------------------------------------------------------------- paths, keys

def resolve_storage(storage_path: str | None, cwd: str | Path | None = None) -> str:
    """``tune.storage_path`` > ``$YTMT_TUNE_STORAGE`` > ``<cwd>/outputs/tune_runs``; local
    paths made absolute (trials run in other directories), URIs (``s3://``) kept."""
    path = storage_path or os.environ.get(STORAGE_ENV) or "outputs/tune_runs"
    if "://" in path:
        return path
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else (Path(cwd or os.getcwd()) / p).resolve())


# tune settings that say where/how fast a sweep runs, not what it computes
_PLACEMENT_KEYS = ("ray_address", "local_cpus", "storage_path", "tracking_uri",
                   "max_concurrent_trials", "workers_per_trial", "cpus_per_worker",
                   "gpus_per_worker", "driver_resources")


def sweep_key(params, shards: str | Path) -> str:
    """A short hash of what a sweep computes: seed, model, loss, train, the tune settings
    that change results, and the shard set's manifest (its content fingerprint)."""
    tune_cfg = {k: v for k, v in to_dict(params.tune).items() if k not in _PLACEMENT_KEYS}
    manifest = Path(shards) / "manifest.json"
    digest = {"seed": params.seed, "model": to_dict(params.model), "loss": to_dict(params.loss),
              "train": to_dict(params.train), "tune": tune_cfg,
              "data": hashlib.sha1(manifest.read_bytes()).hexdigest()}
    return hashlib.sha1(json.dumps(digest, sort_keys=True, default=str).encode()).hexdigest()[:10]


def tuned_variant(params) -> str:
    """The variant a sweep trains: ``tune.variant`` or the first of ``train.variants``."""
    from ytmt.archs import get_variant

    variant = params.tune.variant or params.train.variants[0]
    spec = get_variant(variant)
    if spec.stages > 1:
        raise ConfigError(
            f"tune.variant = {variant!r} is two-stage; sweep the loss weights on its stage-1 "
            f"variant ({spec.stage1_variant!r}): the weights apply to both stages")
    return variant


def trial_train_config(params):
    """``params.train`` with the per-trial resources of ``params.tune``."""
    tcfg = params.tune
    gpus = tcfg.gpus_per_worker
    return dataclasses.replace(params.train, num_workers=tcfg.workers_per_trial,
                               cpus_per_worker=tcfg.cpus_per_worker, use_gpu=gpus > 0,
                               gpus_per_worker=gpus if gpus > 0 else params.train.gpus_per_worker,
                               backend="auto")


# --------------------------------------------------------------------------- the trial

@dataclass(frozen=True)
class TrialContext:
    """Everything constant across trials (shipped once with ``tune.with_parameters``)."""

    params: Any  # ytmt.params.Params
    variant: str
    shards: str
    epochs: int
    overrides: dict[str, Any]
    space_keys: tuple[str, ...]
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    sweep_key: str
    train_storage: str


def find_child_run(client, experiment_id: str, parent_run_id: str, trial_id: str):
    runs = client.search_runs(
        [experiment_id],
        filter_string=(f"tags.`mlflow.parentRunId` = '{parent_run_id}' "
                       f"and tags.{TRIAL_TAG} = '{trial_id}'"),
        order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def _open_child_run(ctx: TrialContext, trial_id: str, sampled: Mapping[str, float]) -> str:
    """The trial's MLflow run: reused when the trial restarts (resume), else created."""
    from mlflow.entities import Param

    from ytmt.tracking import client

    c = client(ctx.tracking_uri)
    run = find_child_run(c, ctx.experiment_id, ctx.parent_run_id, trial_id)
    if run is not None:  # an interrupted or failed trial, restarted by a resumed sweep
        if DECISION_TAG in run.data.tags:
            c.delete_tag(run.info.run_id, DECISION_TAG)
        c.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id
    run = c.create_run(ctx.experiment_id, run_name=f"trial-{trial_id}", tags={
        "mlflow.parentRunId": ctx.parent_run_id, TRIAL_TAG: trial_id, SWEEP_TAG: ctx.sweep_key,
        "variant": ctx.variant})
    params = [Param(k, str(v)) for k, v in sampled.items()]
    params += [Param(f"tune.override.{k}", str(v)) for k, v in ctx.overrides.items()]
    c.log_batch(run.info.run_id, params=params)
    return run.info.run_id


def _trial_worker(config: dict[str, Any]) -> None:
    """Train worker entry: tag the trial's MLflow run with this rank's Ray node, then run
    the shared loop."""
    import ray
    import ray.train

    from ytmt.tracking import client
    from ytmt.train.loop import train_loop_per_worker

    mlflow_cfg = config["mlflow"]
    rank = ray.train.get_context().get_world_rank()
    client(mlflow_cfg["tracking_uri"]).set_tag(
        mlflow_cfg["run_id"], f"{NODE_TAG}.rank{rank}", ray.get_runtime_context().get_node_id())
    train_loop_per_worker(config)


def run_trial(config: dict[str, Any], context: TrialContext) -> None:
    """One Tune trial: open its MLflow child run, then fit a TorchTrainer whose workers run
    the shared loop with the sampled loss weights; the loop's per-epoch reports reach Tune
    through ``TuneReportCallback``. Ends the child run when training ran to the end (runs
    stopped by the scheduler are ended by :class:`SweepRecorder`)."""
    import ray
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from ytmt.tracking import client
    from ytmt.train.trainer import build_trainer, make_loop_config

    trial_id = tune.get_context().get_trial_id()
    sampled = {k: float(config[k]) for k in context.space_keys}
    run_id = _open_child_run(context, trial_id, sampled)
    c = client(context.tracking_uri)
    c.set_tag(run_id, f"{NODE_TAG}.trial", ray.get_runtime_context().get_node_id())
    loop_config = make_loop_config(context.params, context.variant, context.shards,
                                   overrides={**context.overrides, **sampled},
                                   epochs=context.epochs, tracking_uri=context.tracking_uri,
                                   run_id=run_id)
    trainer = build_trainer(loop_config, trial_train_config(context.params), name=trial_id,
                            storage_path=context.train_storage, train_loop=_trial_worker,
                            callbacks=[TuneReportCallback()])
    try:
        trainer.fit()
    except BaseException:
        # Tune ending a trial that its scheduler stopped lands here too: that run is
        # already tagged (SweepRecorder) and must not be marked failed.
        if c.get_run(run_id).data.tags.get(DECISION_TAG) not in ("stopped_early", "completed"):
            c.set_tag(run_id, DECISION_TAG, "error")
            c.set_terminated(run_id, "FAILED")
        raise
    c.set_terminated(run_id, "FINISHED")


# --------------------------------------------------------------------------- driver side

def _make_recorder_class():
    from ray import tune

    class SweepRecorder(tune.Callback):
        """Driver-side Tune callback: writes each scheduler decision onto the trial's MLflow
        run as it happens (tags ``tune_decision``, ``tune_stopped_at_epoch``; metric
        ``tune_stopped_early`` at the stopping epoch) and ends runs of stopped trials."""

        def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str,
                     epochs: int, log: Callable[[str], None] = print) -> None:
            self.tracking_uri, self.experiment_id = tracking_uri, experiment_id
            self.parent_run_id, self.epochs, self.log = parent_run_id, epochs, log
            self._runs: dict[str, str] = {}
            self._stopped: set[str] = set()

        def __getstate__(self):  # Tune pickles callbacks with the experiment state
            state = dict(self.__dict__)
            state["log"], state["_runs"] = None, {}
            return state

        def __setstate__(self, state):
            self.__dict__.update(state)
            self.log = print

        def _run_id(self, trial_id: str) -> str | None:
            if trial_id not in self._runs:
                from ytmt.tracking import client

                run = find_child_run(client(self.tracking_uri), self.experiment_id,
                                     self.parent_run_id, trial_id)
                if run is None:
                    return None
                self._runs[trial_id] = run.info.run_id
            return self._runs[trial_id]

        def _tag(self, trial_id: str, tags: dict[str, Any], status: str | None = None,
                 stopped_at: int | None = None) -> None:
            from mlflow.entities import Metric, RunTag

            from ytmt.tracking import client

            run_id = self._run_id(trial_id)
            if run_id is None:
                self.log(f"[tune] trial {trial_id}: no MLflow run to record {tags} on")
                return
            c = client(self.tracking_uri)
            metrics = [] if stopped_at is None else [
                Metric("tune_stopped_early", 1.0, int(time.time() * 1000), stopped_at)]
            c.log_batch(run_id, metrics=metrics,
                        tags=[RunTag(k, str(v)) for k, v in tags.items()])
            if status:
                c.set_terminated(run_id, status)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            # Tune sets done=True on the result the scheduler decided to STOP on.
            if not result.get("done") or TIME_ATTR not in result:
                return
            epoch = int(result[TIME_ATTR])
            if epoch < self.epochs:
                self.log(f"[tune] trial {trial.trial_id} stopped early by the scheduler at "
                         f"epoch {epoch}/{self.epochs}")
                self._stopped.add(trial.trial_id)
                self._tag(trial.trial_id, {DECISION_TAG: "stopped_early",
                                           STOPPED_AT_TAG: epoch}, stopped_at=epoch)
            else:
                self._tag(trial.trial_id, {DECISION_TAG: "completed"})

        def on_trial_complete(self, iteration, trials, trial, **info):
            last = trial.last_result or {}
            if int(last.get(TIME_ATTR, 0)) >= self.epochs:
                self._tag(trial.trial_id, {DECISION_TAG: "completed"}, status="FINISHED")
            elif trial.trial_id in self._stopped:  # tagged when the scheduler decided
                self._tag(trial.trial_id, {}, status="FINISHED")
            elif self._run_id(trial.trial_id) is not None:
                # Tune also "completes" the trials it abandons when the sweep is
                # interrupted; a resumed sweep reopens the run
                self._tag(trial.trial_id, {}, status="KILLED")

        def on_trial_error(self, iteration, trials, trial, **info):
            self.log(f"[tune] trial {trial.trial_id} failed: {trial.error_file}")
            self._tag(trial.trial_id, {DECISION_TAG: "error"}, status="FAILED")

    return SweepRecorder


def _make_asha(tcfg, state_path: str):
    """ASHA whose rung records survive a resumed sweep. Tune does not save its scheduler with
    the experiment: a restored ASHA would forget the finished trials and could no longer stop
    the rest. This one pickles its state to ``state_path`` after every decision and reloads
    it before the first trial of a resumed sweep is added."""
    import pickle

    import pyarrow.fs
    from ray.tune.schedulers import ASHAScheduler

    fs, path = pyarrow.fs.FileSystem.from_uri(
        state_path if "://" in state_path else Path(state_path).as_uri())

    class ResumableASHA(ASHAScheduler):
        _loaded = False

        def _save(self) -> None:
            state = {k: v for k, v in self.__dict__.items() if k != "_loaded"}
            with fs.open_output_stream(path) as f:
                f.write(pickle.dumps(state))

        def on_trial_add(self, tune_controller, trial):
            if not self._loaded:
                self._loaded = True
                if fs.get_file_info(path).type == pyarrow.fs.FileType.File:
                    with fs.open_input_stream(path) as f:
                        self.__dict__.update(pickle.loads(f.read()))
            if trial.trial_id not in self._trial_info:
                super().on_trial_add(tune_controller, trial)

        def on_trial_result(self, tune_controller, trial, result):
            action = super().on_trial_result(tune_controller, trial, result)
            self._save()
            return action

        def on_trial_complete(self, tune_controller, trial, result):
            if trial.trial_id in self._trial_info:
                super().on_trial_complete(tune_controller, trial, result)
                self._save()

        def on_trial_remove(self, tune_controller, trial):
            self._trial_info.pop(trial.trial_id, None)

    return ResumableASHA(time_attr=TIME_ATTR, max_t=tcfg.epochs,
                         grace_period=tcfg.grace_period, reduction_factor=tcfg.reduction_factor)


def start_ray(tcfg) -> bool:
    """Connect to ``tune.ray_address`` / ``$RAY_ADDRESS`` or start a local Ray on 127.0.0.1
    with the trial-driver resource and the dashboard (see the module docstring). Returns
    whether this call started or connected (and so should shut down).

    Ray Train's placement-group cleaner asks the state API whether a trial's controller is
    alive; without an answer a trial stopped by ASHA keeps its workers' CPUs and the next
    trial hangs. The API needs the dashboard and must find this Ray among others running on
    the machine (:mod:`ytmt.ray_local`)."""
    import ray

    if ray.is_initialized():
        return False
    address = tcfg.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
        return True
    custom = {k: float(math.ceil(v * tcfg.max_concurrent_trials))
              for k, v in tcfg.driver_resources.items() if k not in ("CPU", "GPU")}
    start_local_ray(tcfg.local_cpus or os.cpu_count(), custom)
    return True


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


def _open_parent_run(c, experiment_id: str, key: str, restoring: bool, params, variant: str,
                     experiment_path: str) -> str:
    """The sweep's MLflow parent run: when restoring, the latest one with this sweep key."""
    from mlflow.entities import Param

    if restoring:
        runs = c.search_runs([experiment_id], filter_string=(
            f"tags.{SWEEP_TAG} = '{key}' and tags.ytmt_role = 'sweep'"),
            order_by=["attributes.start_time DESC"], max_results=1)
        if runs:
            c.update_run(runs[0].info.run_id, status="RUNNING")
            return runs[0].info.run_id
    run = c.create_run(experiment_id, run_name=f"sweep-{variant}", tags={
        SWEEP_TAG: key, "ytmt_role": "sweep", "variant": variant,
        "ray_tune_experiment": experiment_path})
    tcfg = params.tune
    flat = {"variant": variant, "seed": params.seed, "tune.epochs": tcfg.epochs,
            "tune.num_samples": tcfg.num_samples, "tune.scheduler": tcfg.scheduler,
            "tune.metric": tcfg.metric, "tune.mode": tcfg.mode,
            "tune.grace_period": tcfg.grace_period,
            "tune.reduction_factor": tcfg.reduction_factor,
            "tune.max_concurrent_trials": tcfg.max_concurrent_trials,
            "tune.workers_per_trial": tcfg.workers_per_trial,
            "tune.cpus_per_worker": tcfg.cpus_per_worker,
            "tune.space": json.dumps(tcfg.space, sort_keys=True),
            "tune.overrides": json.dumps(tcfg.overrides, sort_keys=True)}
    c.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in flat.items()])
    return run.info.run_id


def _delete_path(path: str) -> None:
    """Remove a directory or file, local or on a URI (``s3://...``), if it exists."""
    import pyarrow.fs

    fs, p = pyarrow.fs.FileSystem.from_uri(path if "://" in path else Path(path).as_uri())
    kind = fs.get_file_info(p).type
    if kind == pyarrow.fs.FileType.Directory:
        fs.delete_dir(p)
    elif kind == pyarrow.fs.FileType.File:
        fs.delete_file(p)


# --------------------------------------------------------------------------- records

@dataclass
class SweepResult:
    """What :func:`run_sweep` wrote (also ``summary.json``)."""

    best_trial_id: str
    best_metric: float
    best: dict[str, float]
    metric: str
    mode: str
    parent_run_id: str
    experiment_id: str
    tracking_uri: str
    experiment_path: str
    sweep_key: str
    restored: bool
    trials: list[dict[str, Any]]


def _trial_rows(grid, space_keys: tuple[str, ...], metric: str, mode: str, epochs: int,
                tracking_uri: str, experiment_id: str, parent_run_id: str
                ) -> list[dict[str, Any]]:
    """One row per trial from Tune's results and the trial's MLflow run."""
    from ytmt.tracking import client

    c = client(tracking_uri)
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        found = _TRIAL_DIR.search(Path(result.path).name) if result.path else None
        trial_id = metrics.get("trial_id") or (found.group(1) if found else "?")
        history = result.metrics_dataframe
        values = (history[metric].dropna().tolist()
                  if history is not None and metric in history else [])
        run = find_child_run(c, experiment_id, parent_run_id, trial_id)
        tags = run.data.tags if run is not None else {}
        epoch = int(metrics.get(TIME_ATTR, 0) or 0)
        if result.error is not None:
            status = "error"
        elif epoch >= epochs:
            status = "completed"
        elif tags.get(DECISION_TAG) == "stopped_early":  # recorded when ASHA decided
            status = "stopped_early"
        else:  # Tune marks trials it had not finished when interrupted as terminated too
            status = "unfinished"
        config = result.config or {}
        nodes = sorted({v for k, v in tags.items() if k.startswith(f"{NODE_TAG}.rank")})
        rows.append({
            "trial_id": trial_id, "status": status, "stopped_early": status == "stopped_early",
            "epochs_run": epoch, "scheduler_decision": tags.get(DECISION_TAG, ""),
            "stopped_at_epoch": tags.get(STOPPED_AT_TAG, ""),
            metric: values[-1] if values else float("nan"),
            f"{'max' if mode == 'max' else 'min'}_{metric}":
                (max(values) if mode == "max" else min(values)) if values else float("nan"),
            **{k: float(config[k]) if k in config else float("nan") for k in space_keys},
            "mlflow_run_id": run.info.run_id if run is not None else "",
            "train_nodes": " ".join(nodes), "trial_node": tags.get(f"{NODE_TAG}.trial", ""),
            "error": str(result.error).splitlines()[0][:300] if result.error else "",
        })
    rows.sort(key=lambda r: r["trial_id"])
    return rows


def best_row(rows: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any]:
    """The trial with the best final-epoch ``metric`` among the trials that ran all their
    epochs (ties: the lowest trial id). A trial the scheduler stopped early is judged at an
    earlier epoch than the rest, so it only competes when no trial completed."""
    ok = [r for r in rows if r["status"] != "error" and not math.isnan(r[metric])]
    if not ok:
        errors = "; ".join(f"{r['trial_id']}: {r['error'] or 'no ' + metric}" for r in rows)
        raise SweepError(f"no trial reported {metric}: {errors}")
    ok = [r for r in ok if r["status"] == "completed"] or ok
    sign = 1.0 if mode == "max" else -1.0
    return max(ok, key=lambda r: (sign * r[metric], [-ord(ch) for ch in r["trial_id"]]))


def trials_csv(rows: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    fields = list(rows[0]) if rows else ["trial_id", "status"]
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


def write_disabled(out_dir: str | Path) -> Path:
    """``tune.enabled: false``: an empty ``best.yaml`` (the train stage keeps params.yaml's
    weights), a header-only ``trials.csv`` and ``summary.json`` saying so. No Ray."""
    out = Path(out_dir)
    atomic_write_bytes(out / BEST_FILE, b"{}\n")
    atomic_write_bytes(out / TRIALS_FILE, trials_csv([]))
    atomic_write_bytes(out / SUMMARY_FILE, json.dumps(
        {"enabled": False, "best_trial_id": None, "best_metric": None, "best": {},
         "parent_run_id": None}, indent=2).encode())
    return out / BEST_FILE


def _write_outputs(out: Path, result: SweepResult) -> None:
    atomic_write_bytes(out / TRIALS_FILE, trials_csv(result.trials))
    atomic_write_bytes(out / BEST_FILE, yaml.safe_dump(result.best, sort_keys=True).encode())
    summary = {"enabled": True, **dataclasses.asdict(result)}
    summary.pop("trials")
    summary["num_trials"] = len(result.trials)
    summary["stopped_early"] = [r["trial_id"] for r in result.trials if r["stopped_early"]]
    atomic_write_bytes(out / SUMMARY_FILE,
                       json.dumps(summary, indent=2, default=str).encode())  # written last


# --------------------------------------------------------------------------- entry point

def run_sweep(params, shards: str | Path, out_dir: str | Path, *,
              tracking_uri: str | None = None, storage_path: str | None = None,
              fresh: bool = False, log: Callable[[str], None] = print) -> SweepResult | None:
    """Run (or resume) the sweep of ``params.tune`` on the shards and write ``out_dir``'s
    ``best.yaml``, ``trials.csv``, ``summary.json``. ``fresh`` discards a restorable earlier
    run of the same sweep. Returns None when ``tune.enabled`` is false."""
    tcfg = params.tune
    out = Path(out_dir)
    if not tcfg.enabled:
        write_disabled(out)
        log(f"[tune] tune.enabled is false: wrote an empty {out / BEST_FILE}")
        return None

    from ytmt.sweep.space import grid_size, to_tune_space
    from ytmt.tracking import client, get_or_create_experiment
    from ytmt.train.components import resolve_params
    from ytmt.train.trainer import check_shards, preflight

    variant = tuned_variant(params)
    example = {k: (s["values"][0] if "values" in s else s["low"]) for k, s in tcfg.space.items()}
    resolve_params(to_dict(params), {**tcfg.overrides, **example})  # bad overrides fail now
    uri = preflight(params, shards, tracking_uri or tcfg.tracking_uri)
    shards = str(check_shards(shards))
    key = sweep_key(params, shards)
    storage = resolve_storage(storage_path or tcfg.storage_path)
    name = f"sweep-{variant}-{key}"
    experiment_path = f"{storage}/{name}"
    space_keys = tuple(tcfg.space)
    n_trials = tcfg.num_samples * grid_size(tcfg.space)

    import ray
    from ray import tune
    from ray.tune.schedulers import FIFOScheduler
    from ray.tune.search import BasicVariantGenerator

    if fresh:
        for path in (experiment_path, f"{storage}/{name}_train", f"{storage}/{name}_asha.pkl"):
            _delete_path(path)
    started = start_ray(tcfg)
    c = client(uri)
    parent = None
    try:
        check_resources(tcfg, ray.cluster_resources())
        exp_id = get_or_create_experiment(uri, tcfg.experiment)
        restoring = tune.Tuner.can_restore(experiment_path)
        parent = _open_parent_run(c, exp_id, key, restoring, params, variant, experiment_path)
        context = TrialContext(params=params, variant=variant, shards=shards,
                               epochs=tcfg.epochs, overrides=dict(tcfg.overrides),
                               space_keys=space_keys, tracking_uri=uri, experiment_id=exp_id,
                               parent_run_id=parent, sweep_key=key,
                               train_storage=f"{storage}/{name}_train")
        trainable = tune.with_resources(tune.with_parameters(run_trial, context=context),
                                        {"CPU": 0, **tcfg.driver_resources})
        log(f"[tune] {'resuming' if restoring else 'starting'} sweep {name}: {n_trials} "
            f"trial(s) of {variant}, ≤{tcfg.epochs} epoch(s) each, scheduler "
            f"{tcfg.scheduler} on {tcfg.metric} ({tcfg.mode}), {tcfg.max_concurrent_trials} "
            f"at a time × {tcfg.workers_per_trial} worker(s); Ray storage {experiment_path}; "
            f"MLflow parent run {parent} ({uri})")
        if restoring:
            tuner = tune.Tuner.restore(experiment_path, trainable=trainable,
                                       resume_unfinished=True, resume_errored=True)
        else:
            _delete_path(f"{storage}/{name}_asha.pkl")  # a stale record of another run
            scheduler = (_make_asha(tcfg, f"{storage}/{name}_asha.pkl")
                         if tcfg.scheduler == "asha" else FIFOScheduler())
            recorder = _make_recorder_class()(uri, exp_id, parent, tcfg.epochs, log)
            tuner = tune.Tuner(
                trainable, param_space=to_tune_space(tcfg.space),
                tune_config=tune.TuneConfig(
                    metric=tcfg.metric, mode=tcfg.mode, num_samples=tcfg.num_samples,
                    scheduler=scheduler,
                    search_alg=BasicVariantGenerator(  # Tune ignores max_concurrent_trials
                        random_state=params.seed, max_concurrent=tcfg.max_concurrent_trials)),
                run_config=tune.RunConfig(name=name, storage_path=storage,
                                          callbacks=[recorder],
                                          failure_config=tune.FailureConfig(max_failures=0)))
        grid = tuner.fit()
        rows = _trial_rows(grid, space_keys, tcfg.metric, tcfg.mode, tcfg.epochs, uri,
                           exp_id, parent)
        unfinished = sum(r["status"] == "unfinished" for r in rows) + n_trials - len(rows)
        if unfinished > 0:
            raise SweepInterrupted(
                f"sweep interrupted with {unfinished} of {n_trials} trial(s) unfinished; run "
                f"the same command again to resume it (state: {experiment_path})")
        failed = [r for r in rows if r["status"] == "error"]
        if failed:
            atomic_write_bytes(out / TRIALS_FILE, trials_csv(rows))
            raise SweepError(
                f"{len(failed)} of {len(rows)} trial(s) failed ("
                + "; ".join(f"{r['trial_id']}: {r['error']}" for r in failed)
                + f"); see {out / TRIALS_FILE} and the trials' error files under "
                f"{experiment_path}. Running again retries them.")
        best = best_row(rows, tcfg.metric, tcfg.mode)
        result = SweepResult(
            best_trial_id=best["trial_id"], best_metric=float(best[tcfg.metric]),
            best={k: float(best[k]) for k in space_keys}, metric=tcfg.metric, mode=tcfg.mode,
            parent_run_id=parent, experiment_id=exp_id, tracking_uri=uri,
            experiment_path=experiment_path, sweep_key=key, restored=restoring, trials=rows)
        _write_outputs(out, result)
        _finish_parent(c, parent, result, out)
    except BaseException as err:
        if parent is not None:
            c.set_terminated(parent, "KILLED" if isinstance(err, (KeyboardInterrupt,
                                                                  SweepInterrupted))
                             else "FAILED")
        raise
    finally:
        if started:
            ray.shutdown()
    log(f"[tune] best trial {result.best_trial_id}: {tcfg.metric} {result.best_metric:.3f} "
        f"with {result.best}; wrote {out / BEST_FILE}")
    return result


def _finish_parent(c, parent: str, result: SweepResult, out: Path) -> None:
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    finished = [r for r in result.trials if r["status"] != "error"]
    c.log_batch(parent, metrics=[
        Metric(f"best_{result.metric}", result.best_metric, now, 0),
        Metric("trials_completed", float(sum(r["status"] == "completed" for r in finished)),
               now, 0),
        Metric("trials_stopped_early", float(sum(r["stopped_early"] for r in finished)), now, 0),
        Metric("trials_failed", float(len(result.trials) - len(finished)), now, 0)],
        tags=[RunTag("best_trial_id", result.best_trial_id),
              *(RunTag(f"best.{k}", str(v)) for k, v in result.best.items())])
    for name in (BEST_FILE, TRIALS_FILE, SUMMARY_FILE):
        c.log_artifact(parent, str(out / name))
    c.set_terminated(parent, "FINISHED")
