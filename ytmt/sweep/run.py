"""Ray Tune over the loss weights: the sweep's driver. Every trial is a Ray Train run of the
shared loop (:mod:`ytmt.sweep.trial`).

Shape of a sweep (design.md s5 has the measured reasons)::

    driver (pipelines/tune.py)          Tune trial i (a function, driver resource only)
    ───────────────────────────         ─────────────────────────────────────────────────
    MLflow parent run                   MLflow child run (tag mlflow.parentRunId) with the
    Tuner(run_trial, ASHA on            sampled weights as params
          val_psnr_t, BasicVariant      TorchTrainer(loop, the training recipe shortened,
          seeded by params.seed)          callbacks=[TuneReportCallback()]).fit()
    SweepRecorder: scheduler            └─ each epoch: ray.train.report → Tune result
      decisions → child-run tags
    then the winner's replicate: one more trial (its own Tuner) with run seed seed + 1

- Trials are shortened runs of the training recipe (:func:`ytmt.sweep.plan.trial_params`),
  and as many run at once as the Ray cluster fits (:func:`ytmt.sweep.plan.concurrent_trials`;
  ``tune.max_concurrent_trials`` caps it), so ASHA compares trials that run side by side.
- The spread: the winner is trained once more with another run seed; ``spread.json`` and
  the parent run say whether the trials are further apart than that seed spread
  (:func:`ytmt.sweep.records.spread_report`).

- Trials take only ``tune.driver_resources`` (a custom ``train_driver`` resource that the
  local Ray is given), never a CPU, so a trial's Train workers always find the CPUs they
  need, and no trial dies on the worker-group start timeout. The sweep refuses to start when
  ``max_concurrent_trials`` trials cannot all get their workers at once.
- Ray: :func:`ytmt.ray_local.init_ray` joins ``tune.ray_address`` / ``$RAY_ADDRESS`` or
  starts a local Ray with its dashboard (bound to 127.0.0.1): Ray Train's placement-group
  cleaner asks the state API whether a trial's Train controller is alive, and without it a
  trial stopped by ASHA leaks its workers' CPUs and the next trial hangs (measured here).
- Resume: the Tune experiment is ``<storage>/sweep-<variant>-<key>``
  (:mod:`ytmt.sweep.plan`). Running the same sweep again restores it (``Tuner.restore``):
  finished trials are kept, unfinished ones restart and their Train run (named after the
  trial id) continues from its last checkpoint; the MLflow parent and child runs are
  reused, and ASHA's rung records are reloaded (:mod:`ytmt.sweep.scheduler`).
- Scheduler decisions: :class:`ytmt.sweep.recorder.SweepRecorder` tags each trial's MLflow
  run when ASHA stops it.
- Records: ``best.yaml``, ``trials.csv``, ``spread.json`` and ``summary.json``
  (:mod:`ytmt.sweep.records`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import ray
from ray import tune
from ray.tune.schedulers import FIFOScheduler
from ray.tune.search import BasicVariantGenerator

from ytmt.cluster import check_cluster
from ytmt.ray_local import init_ray
from ytmt.sweep.plan import (
    SweepPlan,
    check_overrides,
    concurrent_trials,
    local_resources,
    plan_sweep,
    trial_params,
)
from ytmt.sweep.recorder import SweepRecorder
from ytmt.sweep.records import (
    BEST_FILE,
    ROLE_TAG,
    SPREAD_FILE,
    SUMMARY_FILE,
    SWEEP_TAG,
    TIME_ATTR,
    TRIALS_FILE,
    SweepInterrupted,
    SweepResult,
    best_row,
    check_finished,
    find_child_run,
    spread_line,
    spread_report,
    trial_id_of,
    trial_row,
    write_disabled,
    write_outputs,
)
from ytmt.sweep.scheduler import make_scheduler
from ytmt.sweep.space import to_tune_space
from ytmt.sweep.trial import SEED_KEY, TrialContext, run_trial
from ytmt.tracking import client, get_or_create_experiment, provenance_tags
from ytmt.train.trainer import check_shards, preflight


def run_sweep(params, shards: str | Path, out_dir: str | Path, *,
              tracking_uri: str | None = None, storage_path: str | None = None,
              fresh: bool = False, log: Callable[[str], None] = print) -> SweepResult | None:
    """Run (or resume) the sweep of ``params.tune`` on the shards and write ``out_dir``'s
    ``best.yaml``, ``trials.csv``, ``spread.json``, ``summary.json``. ``fresh`` discards a
    restorable earlier
    run of the same sweep. Returns None when ``tune.enabled`` is false."""
    tcfg = params.tune
    out = Path(out_dir)
    if not tcfg.enabled:
        write_disabled(out)
        log(f"[tune] tune.enabled is false: wrote an empty {out / BEST_FILE}")
        return None
    check_overrides(params)  # everything that can fail does so before Ray starts
    uri = preflight(params, shards, tracking_uri or tcfg.tracking_uri)
    shards = str(check_shards(shards))  # absolute: trials run in other directories
    plan = plan_sweep(params, shards, storage_path)
    from ytmt.archs.vgg import warn_if_random

    m = params.model
    warn_if_random(m.vgg_weights, m.vgg_path, m.vgg_seed)  # once here, not in every trial
    if fresh:
        for path in plan.state_paths:
            _delete_path(path)
    # Tune's own console output (its "Configuration for experiment" table, the "View detailed
    # results" and TensorBoard hints) comes from its new output engine, which prints them even
    # at verbose=0; the legacy engine at verbose=0 prints nothing. Progress: our own lines.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    started = init_ray(tcfg.ray_address, num_cpus=tcfg.local_cpus or os.cpu_count(),
                       resources=local_resources(tcfg, plan.n_trials))
    try:
        res = plan.resources  # refused on a multi-node cluster before any trial starts:
        check_cluster(tracking_uri=uri, use_gpu=res.gpus_per_worker > 0,  # ytmt.cluster
                      gpus_per_worker=res.gpus_per_worker, num_workers=res.workers,
                      paths={"tune.storage_path": plan.storage,
                             "shards": shards})
        concurrency = concurrent_trials(plan.resources, ray.cluster_resources(), plan.n_trials,
                                        tcfg.max_concurrent_trials)
        result = _sweep(params, plan, shards, uri, out, concurrency, log)
    finally:
        if started:
            ray.shutdown()
    versus = "" if result.best_input is None else f" (input {result.best_input:.3f})"
    log(f"[tune] best trial {result.best_trial_id}: {tcfg.metric} {result.best_metric:.3f}"
        f"{versus} with {result.best}, for {', '.join(result.variants)}; wrote "
        f"{out / BEST_FILE}")
    if result.spread:
        log(spread_line(result.spread))
    return result


def _sweep(params, plan: SweepPlan, shards: str, uri: str, out: Path, concurrency: int,
           log: Callable[[str], None]) -> SweepResult:
    """Fit (or restore and finish) the Tuner, then the winner's replicate, under the sweep's
    MLflow parent run, then write the records. The parent run ends KILLED on an
    interruption, FAILED on an error."""
    tcfg = params.tune
    c = client(uri)
    exp_id = get_or_create_experiment(uri, tcfg.experiment)
    restoring = tune.Tuner.can_restore(plan.experiment_path)
    parent = _open_parent_run(c, uri, plan, restoring, params, concurrency)
    try:
        context = TrialContext(params=trial_params(params), variant=plan.variant, shards=shards,
                               epochs=tcfg.epochs, overrides=dict(tcfg.overrides),
                               space_keys=plan.space_keys, tracking_uri=uri,
                               experiment_id=exp_id, parent_run_id=parent, sweep_key=plan.key,
                               train_storage=plan.train_storage,
                               provenance=provenance_tags())
        log(f"[tune] {'resuming' if restoring else 'starting'} sweep {plan.name}: "
            f"{plan.n_trials} trial(s) of {plan.variant}, ≤{tcfg.epochs} epoch(s) each, "
            f"scheduler {tcfg.scheduler} on {tcfg.metric} ({tcfg.mode}), "
            f"{concurrency} at a time × {plan.resources.workers} worker(s); "
            f"Ray storage {plan.experiment_path}; MLflow parent run {parent} ({uri})")
        grid = _tuner(params, plan, context, restoring, concurrency, log).fit()
        rows, histories, inputs = _trial_rows(grid, params, plan, context)
        check_finished(rows, plan.n_trials, out, plan.experiment_path)
        best = best_row(rows, tcfg.metric, tcfg.mode)
        weights = {k: float(best[k]) for k in plan.space_keys}
        spread = None
        if plan.replicate_seed is not None:
            log(f"[tune] the winner {best['trial_id']} again with run seed "
                f"{plan.replicate_seed}: how far one config moves over seeds")
            replicate = _replicate(params, plan, context, weights, rows, out, log)
            spread = spread_report({r["trial_id"]: histories[r["trial_id"]] for r in rows},
                                   best["trial_id"], replicate,
                                   (params.seed, plan.replicate_seed), tcfg.metric)
        result = SweepResult(
            best_trial_id=best["trial_id"], best_metric=float(best[tcfg.metric]),
            best=weights, metric=tcfg.metric,
            mode=tcfg.mode, parent_run_id=parent, experiment_id=exp_id, tracking_uri=uri,
            experiment_path=plan.experiment_path, sweep_key=plan.key, restored=restoring,
            trials=rows, variants=[plan.variant], best_input=inputs.get(best["trial_id"]),
            spread=spread)
        write_outputs(out, result)
        _finish_parent(c, parent, result, out)
    except BaseException as err:
        interrupted = isinstance(err, (KeyboardInterrupt, SweepInterrupted))
        c.set_terminated(parent, "KILLED" if interrupted else "FAILED")
        raise
    return result


def _trainable(params, context: TrialContext):
    """The trial function with its context and its driver resource (never a CPU)."""
    return tune.with_resources(tune.with_parameters(run_trial, context=context),
                               {"CPU": 0, **params.tune.driver_resources})


def _tuner(params, plan: SweepPlan, context: TrialContext, restoring: bool, concurrency: int,
           log: Callable[[str], None]) -> tune.Tuner:
    """The sweep's Tuner: restored from ``plan.experiment_path`` (unfinished and failed
    trials run again), or new with the seeded search, the scheduler and the recorder;
    ``concurrency`` trials at once."""
    tcfg = params.tune
    trainable = _trainable(params, context)
    if restoring:
        return tune.Tuner.restore(plan.experiment_path, trainable=trainable,
                                  resume_unfinished=True, resume_errored=True)
    _delete_path(plan.scheduler_state)  # a stale record of another run
    recorder = SweepRecorder(context.tracking_uri, context.experiment_id,
                             context.parent_run_id, tcfg.epochs, log)
    return tune.Tuner(
        trainable, param_space=to_tune_space(tcfg.space),
        tune_config=tune.TuneConfig(
            metric=tcfg.metric, mode=tcfg.mode, num_samples=tcfg.num_samples,
            scheduler=make_scheduler(tcfg, plan.scheduler_state),
            search_alg=BasicVariantGenerator(  # Tune ignores max_concurrent_trials
                random_state=params.seed, max_concurrent=concurrency)),
        run_config=tune.RunConfig(name=plan.name, storage_path=plan.storage,
                                  callbacks=[recorder], verbose=0,  # progress: our lines
                                  failure_config=tune.FailureConfig(max_failures=0)))


def _replicate(params, plan: SweepPlan, context: TrialContext, weights: dict[str, float],
               trials: list[dict], out: Path, log: Callable[[str], None]) -> list[float]:
    """The winner's ``weights`` trained again with run seed ``plan.replicate_seed``: one
    trial of its own Tune experiment (``plan.replicate_path``, restored like the sweep's);
    its per-epoch metric. Checked with the sweep's ``trials`` (a failure's ``trials.csv``
    lists them all)."""
    tcfg = params.tune
    path = plan.replicate_path
    trainable = _trainable(params, context)
    if tune.Tuner.can_restore(path):
        tuner = tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True,
                                   resume_errored=True)
    else:
        recorder = SweepRecorder(context.tracking_uri, context.experiment_id,
                                 context.parent_run_id, tcfg.epochs, log)
        tuner = tune.Tuner(
            trainable, param_space={**weights, SEED_KEY: plan.replicate_seed},
            tune_config=tune.TuneConfig(metric=tcfg.metric, mode=tcfg.mode, num_samples=1,
                                        scheduler=FIFOScheduler()),
            run_config=tune.RunConfig(name=Path(path).name, storage_path=plan.storage,
                                      callbacks=[recorder], verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=0)))
    rows, histories, _ = _trial_rows(tuner.fit(), params, plan, context)
    check_finished(trials + rows, len(trials) + 1, out, path)
    return histories[rows[0]["trial_id"]]


def _trial_rows(grid, params, plan: SweepPlan, context: TrialContext
                ) -> tuple[list[dict], dict[str, list[float]], dict[str, float]]:
    """One ``trials.csv`` row per trial of Tune's results, with its MLflow run's tags; each
    trial's per-epoch metric, and its last ``<metric>_input`` (the input as T̂) if reported."""
    tcfg = params.tune
    c = client(context.tracking_uri)
    rows, histories, inputs = [], {}, {}
    baseline = f"{tcfg.metric}_input"
    for result in grid:
        metrics = result.metrics or {}
        trial_id = trial_id_of(metrics, result.path)
        history = result.metrics_dataframe
        values = (history[tcfg.metric].dropna().tolist()
                  if history is not None and tcfg.metric in history else [])
        histories[trial_id] = values
        if history is not None and baseline in history and history[baseline].notna().any():
            inputs[trial_id] = float(history[baseline].dropna().iloc[-1])
        run = find_child_run(c, context.experiment_id, context.parent_run_id, trial_id)
        rows.append(trial_row(
            trial_id, epochs_run=int(metrics.get(TIME_ATTR, 0) or 0), epochs=tcfg.epochs,
            values=values, config=result.config or {},
            tags=run.data.tags if run is not None else {},
            run_id=run.info.run_id if run is not None else "",
            error=None if result.error is None else str(result.error),
            space_keys=plan.space_keys, metric=tcfg.metric, mode=tcfg.mode))
    rows.sort(key=lambda r: r["trial_id"])
    return rows, histories, inputs


# --------------------------------------------------------------------------- MLflow parent

def _open_parent_run(c, uri: str, plan: SweepPlan, restoring: bool, params,
                     concurrency: int) -> str:
    """The sweep's MLflow parent run: when restoring, the latest one with this sweep key,
    finished or not (a forced re-run of a finished sweep restores its Tune experiment, whose
    trials' MLflow runs, and the scheduler's decision tags on them, hang under that parent);
    else a new one (with provenance tags) with the sweep's settings as params (resources
    and concurrency as resolved)."""
    from mlflow.entities import Param

    from ytmt import tracking

    _, run, reopened = tracking.open_run(
        uri, params.tune.experiment, {SWEEP_TAG: plan.key, ROLE_TAG: "sweep"},
        run_name=f"sweep-{plan.variant}", resume=restoring, reopen_finished=restoring,
        tags={tracking.VARIANT_TAG: plan.variant, "ray_tune_experiment": plan.experiment_path})
    if reopened:
        return run.info.run_id
    tcfg = params.tune
    res = plan.resources
    flat = {"variant": plan.variant, "seed": params.seed,
            **{f"tune.{k}": getattr(tcfg, k) for k in (
                "epochs", "num_samples", "scheduler", "metric", "mode", "grace_period",
                "reduction_factor", "replicate")},
            "tune.max_concurrent_trials": concurrency, "tune.workers_per_trial": res.workers,
            "tune.cpus_per_worker": res.cpus_per_worker,
            "tune.gpus_per_worker": res.gpus_per_worker,
            "tune.space": json.dumps(tcfg.space, sort_keys=True),
            "tune.overrides": json.dumps(tcfg.overrides, sort_keys=True)}
    c.log_batch(run.info.run_id, params=[Param(k, str(v)[:6000]) for k, v in flat.items()])
    return run.info.run_id


def _finish_parent(c, parent: str, result: SweepResult, out: Path) -> None:
    """The parent run's summary metrics (with the spread: ``trial_spread_<metric>``,
    ``seed_spread_<metric>``, tag ``trials_distinguishable``), ``best.<key>`` tags and the
    four records."""
    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    m = result.metric
    finished = [r for r in result.trials if r["status"] != "error"]
    metrics = {f"best_{m}": result.best_metric,
               "trials_completed": float(sum(r["status"] == "completed" for r in finished)),
               "trials_stopped_early": float(sum(r["stopped_early"] for r in finished)),
               "trials_failed": float(len(result.trials) - len(finished))}
    tags = {"best_trial_id": result.best_trial_id, "best.variants": ",".join(result.variants),
            **{f"best.{k}": str(v) for k, v in result.best.items()}}
    if result.best_input is not None:
        metrics[f"best_{m}_input"] = result.best_input
    spread = result.spread or {}
    if "trial_spread" in spread:
        metrics[f"trial_spread_{m}"] = spread["trial_spread"]
    if "seed_spread" in spread:
        metrics[f"seed_spread_{m}"] = spread["seed_spread"]
        tags["trials_distinguishable"] = str(spread["distinguishable"]).lower()
    c.log_batch(parent, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()],
                tags=[RunTag(k, v) for k, v in tags.items()])
    for name in (BEST_FILE, TRIALS_FILE, SPREAD_FILE, SUMMARY_FILE):
        c.log_artifact(parent, str(out / name))
    c.set_terminated(parent, "FINISHED")


def _delete_path(path: str) -> None:
    """Remove a directory or file, local or on a URI (``s3://...``), if it exists."""
    import pyarrow.fs

    from ytmt.cluster import filesystem

    fs, p = filesystem(path)
    kind = fs.get_file_info(p).type
    if kind == pyarrow.fs.FileType.Directory:
        fs.delete_dir(p)
    elif kind == pyarrow.fs.FileType.File:
        fs.delete_file(p)
