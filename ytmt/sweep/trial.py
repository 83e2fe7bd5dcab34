"""One Tune trial: its MLflow child run, then a Ray Train fit of the shared training loop.

A trial is a function (Ray 2.60 deprecates ``Tuner(trainer)``) that holds only the sweep's
driver resource: it builds a ``TorchTrainer`` whose workers run
:func:`ytmt.train.loop.train_loop_per_worker` with the trials' params
(:func:`ytmt.sweep.plan.trial_params`: the training recipe, shortened) and the sampled loss
weights, and the loop's per-epoch ``ray.train.report`` reaches Tune through
``TuneReportCallback``. A config's :data:`SEED_KEY` (the winner's replicate) sets the run
seed; otherwise it is the top-level ``seed``. The trial's Ray Train run is named after the
trial id, so a trial restarted by a resumed sweep continues from its last checkpoint and
reopens its MLflow run.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ray
import ray.train
from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback

from ytmt import tracking
from ytmt.sweep.records import (
    DECISION_TAG,
    NODE_TAG,
    REPLICATE_TAG,
    SWEEP_TAG,
    TRIAL_TAG,
    find_child_run,
)
from ytmt.tracking import client
from ytmt.train.loop import train_loop_per_worker
from ytmt.train.trainer import build_trainer, make_loop_config


@dataclass(frozen=True)
class TrialContext:
    """Everything constant across trials (shipped once with ``tune.with_parameters``)."""

    params: Any  # ytmt.params.Params of the trials (ytmt.sweep.plan.trial_params)
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
    provenance: dict[str, str]  # the driver's (ytmt.tracking.provenance_tags)


SEED_KEY = "run_seed"  # in a trial's config: its run seed (the winner's replicate)


def open_child_run(ctx: TrialContext, trial_id: str, sampled: Mapping[str, float],
                   seed: int | None = None) -> str:
    """The trial's MLflow run: reused when the trial restarts (resume), else created with
    the sampled weights, ``tune.overrides`` and a replicate's ``seed`` (tag
    ``ytmt_replicate_seed``) as params."""
    from mlflow.entities import Param

    c = client(ctx.tracking_uri)
    run = find_child_run(c, ctx.experiment_id, ctx.parent_run_id, trial_id)
    if run is not None:  # an interrupted or failed trial, restarted by a resumed sweep
        if DECISION_TAG in run.data.tags:
            c.delete_tag(run.info.run_id, DECISION_TAG)
        c.update_run(run.info.run_id, status="RUNNING")
        return run.info.run_id
    _, run, _ = tracking.open_run(
        ctx.tracking_uri, ctx.params.tune.experiment, {TRIAL_TAG: trial_id},
        run_name=f"trial-{trial_id}", resume=False, parent_run_id=ctx.parent_run_id,
        tags={SWEEP_TAG: ctx.sweep_key, tracking.VARIANT_TAG: ctx.variant,
              **({} if seed is None else {REPLICATE_TAG: str(seed)})},
        provenance=ctx.provenance)
    params = [Param(k, str(v)) for k, v in sampled.items()]
    params += [Param(f"tune.override.{k}", str(v)) for k, v in ctx.overrides.items()]
    c.log_batch(run.info.run_id, params=params)
    return run.info.run_id


def quiet_ray_process() -> None:
    """Ray's trial and worker processes log to the console: only warnings, set before the
    first MLflow client (a new SQLite store logs alembic's set-up lines otherwise)."""
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def trial_worker(config: dict[str, Any]) -> None:
    """Train worker entry: tag the trial's MLflow run with this rank's Ray node, then run
    the shared loop."""
    quiet_ray_process()
    mlflow_cfg = config["mlflow"]
    rank = ray.train.get_context().get_world_rank()
    client(mlflow_cfg["tracking_uri"]).set_tag(
        mlflow_cfg["run_id"], f"{NODE_TAG}.rank{rank}", ray.get_runtime_context().get_node_id())
    train_loop_per_worker(config)


def run_trial(config: dict[str, Any], context: TrialContext) -> None:
    """One Tune trial (see the module docstring). Ends the child run when training ran to
    the end; runs stopped by the scheduler are ended by
    :class:`ytmt.sweep.recorder.SweepRecorder`."""
    quiet_ray_process()
    trial_id = tune.get_context().get_trial_id()
    sampled = {k: float(config[k]) for k in context.space_keys}
    seed = None if config.get(SEED_KEY) is None else int(config[SEED_KEY])
    run_id = open_child_run(context, trial_id, sampled, seed)
    c = client(context.tracking_uri)
    c.set_tag(run_id, f"{NODE_TAG}.trial", ray.get_runtime_context().get_node_id())
    loop_config = make_loop_config(context.params, context.variant, context.shards,
                                   overrides=sampled, epochs=context.epochs,
                                   tracking_uri=context.tracking_uri, run_id=run_id, seed=seed)
    trainer = build_trainer(loop_config, context.params.train, name=trial_id,
                            storage_path=context.train_storage, train_loop=trial_worker,
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
