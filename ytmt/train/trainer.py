"""Ray Train driver: build a ``TorchTrainer`` for the shared loop and train variants end to end.

Public API (stable; the sweep code builds on it)::

    preflight(params: Params, shards: str | Path, tracking_uri: str | None = None) -> str
        Fails within seconds (MLflow unreachable, shards missing/incomplete) before any
        worker starts; returns the resolved absolute tracking URI.
    make_loop_config(params, variant, shards, *, overrides=None, epochs=None,
                     stage1_checkpoint=None, tracking_uri=None, run_id=None, seed=None) -> dict
        The ``config`` of ``ytmt.train.loop.train_loop_per_worker``.
    scaling_config(cfg: TrainConfig) -> ray.train.ScalingConfig
    build_trainer(loop_config: dict, cfg: TrainConfig, name: str,
                  storage_path: str | None = None, train_loop=train_loop_per_worker,
                  callbacks: list | None = None) -> ray.train.torch.TorchTrainer
        DDP over cfg.num_workers workers (0: in-process), gloo on CPU / nccl on GPU,
        FailureConfig(cfg.max_failures), checkpoints under the storage path / ``name``
        (same name + storage = resume from the last checkpoint).
    train_variant(params, variant, shards, target, *, seed, overrides=None,
                  tracking_uri=None, stage1_checkpoint=None, train_loop=train_loop_per_worker)
        -> ModelInfo
        One (variant, seed) run (one DVC stage): one MLflow run (experiment
        ``train.experiment``, tag ``seed``), fit, final model logged to MLflow
        (ytmt.mlflow_model.log_model), ``model.pt`` and ``info.json`` in ``target``
        (ytmt.model_store).
    train_variants(params, shards, models, *, overrides=None, tracking_uri=None)
        -> dict[tuple[str, int], ModelInfo]
        Every run of ``train.runs()`` in one process (the DVC pipeline runs one stage per
        run instead), into ``ytmt.model_store.run_dir(models, variant, seed)``.

Seeds: the run seed of each training is its ``train.seeds`` entry; it replaces the top-level
``seed`` inside the loop (initial weights, crops, augmentation, data order).

Resuming: the Ray run name is ``<variant>-seed<k>-<hash of the resolved config, seed and
data>``; running the same training again after an interruption reuses the unfinished MLflow
run and Ray restores the last checkpoint under the same name, so it continues instead of
starting over.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray.train.torch import TorchConfig, TorchTrainer

from ytmt.checkpoint import atomic_torch_save, load_checkpoint, with_frozen_tensors
from ytmt.cluster import check_cluster, is_uri, uri_join
from ytmt.config import ConfigError, to_dict
from ytmt.data.shards import ShardsMissing
from ytmt.model_store import MODEL_FILE, ModelInfo, run_dir, write_info
from ytmt.params import resolve_params
from ytmt.ray_local import init_ray, resolve_storage
from ytmt.train.config import TrainConfig
from ytmt.train.loop import CHECKPOINT_FILE, train_loop_per_worker
from ytmt.train.shipping import ship_frozen_inputs
from ytmt.variants import get_variant

STORAGE_ENV = "YTMT_RAY_STORAGE"
OWNER_ENV = "YTMT_USER"


# --------------------------------------------------------------------------- Ray plumbing

def resolve_storage_path(cfg: TrainConfig, cwd: str | Path | None = None) -> str:
    """``train.storage_path`` > ``$YTMT_RAY_STORAGE`` > ``<cwd>/outputs/ray_results``
    (:func:`ytmt.ray_local.resolve_storage`)."""
    return resolve_storage(cfg.storage_path, STORAGE_ENV, "outputs/ray_results", cwd,
                           setting="train.storage_path")


def scaling_config(cfg: TrainConfig) -> ray.train.ScalingConfig:
    resources: dict[str, float] = {"CPU": cfg.cpus_per_worker}
    if cfg.use_gpu:
        resources["GPU"] = cfg.gpus_per_worker
    workers: int | tuple[int, int] = cfg.num_workers
    if cfg.num_workers and cfg.min_workers is not None and cfg.min_workers < cfg.num_workers:
        workers = (cfg.min_workers, cfg.num_workers)  # elastic: survives a lost node
    return ray.train.ScalingConfig(num_workers=workers, use_gpu=cfg.use_gpu,
                                   resources_per_worker=resources if cfg.num_workers else None)


def backend_name(cfg: TrainConfig) -> str:
    if cfg.backend != "auto":
        return cfg.backend
    return "nccl" if cfg.use_gpu else "gloo"


def build_trainer(loop_config: dict[str, Any], cfg: TrainConfig, name: str,
                  storage_path: str | None = None, train_loop=train_loop_per_worker,
                  callbacks: list | None = None) -> TorchTrainer:
    """A TorchTrainer running ``train_loop(loop_config)`` on ``cfg.num_workers`` workers."""
    run_config = ray.train.RunConfig(
        name=name, storage_path=storage_path or resolve_storage_path(cfg),
        failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
        callbacks=callbacks,
        # Ray Train's own INFO lines (worker group start, each report from every rank) go to
        # Ray's session logs only; the run's progress is the loop's console lines
        logging_config=ray.train.LoggingConfig(log_level="WARNING"))
    return TorchTrainer(train_loop, train_loop_config=loop_config,
                        torch_config=TorchConfig(backend=backend_name(cfg)),
                        scaling_config=scaling_config(cfg), run_config=run_config)


# --------------------------------------------------------------------------- checks, configs

def shards_location(shards: str | Path) -> str:
    """The shards root as workers get it: an absolute path, or a URI as given
    (``s3://bucket/shards?endpoint_override=...``: every node reads the one uploaded copy)."""
    return str(shards) if is_uri(shards) else str(Path(shards).resolve())


def check_shards(shards: str | Path) -> str | Path:
    """The absolute shards root (a URI as given); :class:`ShardsMissing` if it is absent or
    incomplete."""
    root = shards_location(shards) if is_uri(shards) else Path(shards).resolve()
    if not is_uri(root) and not Path(root).is_dir():
        raise ShardsMissing(f"shards directory {root} does not exist; run the synthesize "
                            "stage first (`dvc repro synthesize`)")
    from ytmt.data.reader import check_shards as check_set

    try:
        check_set(root)
    except (OSError, ValueError) as err:
        raise ShardsMissing(f"shards directory {root} is not a complete shard set: {err}") \
            from None
    return root


def preflight(params, shards: str | Path, tracking_uri: str | None = None) -> str:
    """Everything that can fail fast, before Ray starts a worker; returns the tracking URI."""
    from ytmt.tracking import check_tracking_uri, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri or params.train.tracking_uri)
    check_tracking_uri(uri)
    check_shards(shards)
    return uri


def make_loop_config(params, variant: str, shards: str | Path, *,
                     overrides: dict[str, Any] | None = None, epochs: int | None = None,
                     stage1_checkpoint: str | None = None, tracking_uri: str | None = None,
                     run_id: str | None = None, seed: int | None = None,
                     checkpoint_root: str | Path | None = None) -> dict[str, Any]:
    """``seed`` None: the loop uses ``params.seed``; ``checkpoint_root``: where an in-process
    loop makes its checkpoint folders (see :mod:`ytmt.train.loop`)."""
    get_variant(variant)
    return {"params": to_dict(params), "variant": variant, "shards": shards_location(shards),
            "in_process": params.train.num_workers == 0,
            "overrides": dict(overrides or {}), "epochs": epochs,
            "seed": None if seed is None else int(seed),
            "stage1_checkpoint": (str(Path(stage1_checkpoint).resolve()) if stage1_checkpoint
                                  else None),  # absolute: workers run elsewhere
            "mlflow": {"tracking_uri": tracking_uri, "run_id": run_id},
            "checkpoint_root": None if checkpoint_root is None else str(checkpoint_root)}


def _training_key(loop_config: dict[str, Any]) -> str:
    """A short hash of what determines the trained weights: the recipe (``seed``, ``model``,
    ``loss`` and the ``train`` keys of :meth:`TrainConfig.recipe`, so the runs listed, the
    logging cadence and the stores do not count), the run seed, the data and stage 1."""
    from ytmt.data.shards import shard_set_key

    overrides = dict(loop_config["overrides"])
    if loop_config.get("seed") is not None:
        overrides["seed"] = loop_config["seed"]
    resolved = resolve_params(loop_config["params"], overrides)
    recipe = {k: to_dict(getattr(resolved, k)) for k in ("seed", "model", "loss")}
    recipe["train"] = resolved.train.recipe()
    stage1 = loop_config["stage1_checkpoint"]
    digest = {"variant": loop_config["variant"], "recipe": recipe,
              "epochs": loop_config["epochs"], "data": shard_set_key(loop_config["shards"]),
              "stage1": hashlib.sha1(Path(stage1).read_bytes()).hexdigest() if stage1 else None}
    return hashlib.sha1(json.dumps(digest, sort_keys=True, default=str).encode()).hexdigest()[:10]


def run_owner() -> str:
    """Who starts a training: ``$YTMT_USER``, else the login name (file-name safe)."""
    import getpass

    try:
        owner = os.environ.get(OWNER_ENV) or getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        owner = "unknown"
    return re.sub(r"[^A-Za-z0-9_.-]", "_", owner)[:32] or "unknown"


def _open_run(tracking_uri: str, experiment: str, variant: str, seed: int, key: str,
              storage: str, resume: bool = True) -> tuple[str, str, str]:
    """(experiment id, MLflow run id, Ray run name): the unfinished run of this training if
    there is one and ``resume`` (Ray restores its checkpoint), else a new run (with the
    provenance tags of :func:`ytmt.tracking.open_run`). A training is the same one only for
    the same owner (:func:`run_owner`) and Ray storage: two people training one config on a
    shared server, or a resume whose storage moved, get runs and Ray folders of their own."""
    from ytmt import tracking as t

    owner = run_owner()
    match = {t.TRAIN_KEY_TAG: key, t.OWNER_TAG: owner, t.STORAGE_TAG: storage}
    exp_id = t.get_or_create_experiment(tracking_uri, experiment)
    earlier = t.count_runs(tracking_uri, exp_id, match)
    # a finished earlier run keeps its Ray storage: a new run gets a new Ray name
    ray_name = f"{variant}-seed{seed}-{key}-{owner}" + (f"-{earlier}" if earlier else "")
    _, run, reopened = t.open_run(
        tracking_uri, experiment, match, run_name=f"{variant}-seed{seed}",
        tags={t.RAY_RUN_TAG: ray_name, t.VARIANT_TAG: variant, t.SEED_TAG: str(seed)},
        resume=resume)
    return exp_id, run.info.run_id, run.data.tags[t.RAY_RUN_TAG] if reopened else ray_name


def _log_shards(tracking_uri: str, run_id: str, shards: str | Path) -> None:
    """The shard set as the run's train and validation datasets (digest: its manifest's
    fingerprint), so the run page shows which data it learned from."""
    from ytmt.data.shards import join, read_manifest
    from ytmt.tracking import dataset_input, log_inputs_once

    manifest = read_manifest(shards)
    digest = manifest.get("fingerprint") or hashlib.sha1(
        json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    log_inputs_once(tracking_uri, run_id, [
        dataset_input(f"shards/{split}", join(shards, split), digest, context)
        for split, context in (("train", "train"), ("val", "validation"))])


# --------------------------------------------------------------------------- end to end

def train_variant(params, variant: str, shards: str | Path, target: str | Path, *,
                  seed: int, overrides: dict[str, Any] | None = None,
                  tracking_uri: str | None = None, stage1_checkpoint: str | None = None,
                  train_loop=train_loop_per_worker) -> ModelInfo:
    """Train ``variant`` with run seed ``seed`` with Ray Train, log it to MLflow and write
    ``target/model.pt`` and ``target/info.json``. See the module docstring."""
    params = resolve_params(to_dict(params), overrides)  # validate overrides before anything
    uri = preflight(params, shards, tracking_uri)
    cfg = params.train
    if int(seed) < 0:
        raise ConfigError(f"seed = {seed}: must be >= 0")
    if get_variant(variant).stages > 1 and not stage1_checkpoint:
        raise ConfigError(f"{variant} is two-stage: give the trained stage 1 "
                          f"({get_variant(variant).stage1_variant}) checkpoint")
    if stage1_checkpoint and not Path(stage1_checkpoint).is_file():
        raise FileNotFoundError(f"stage-1 checkpoint {stage1_checkpoint} not found; train "
                                f"{get_variant(variant).stage1_variant} first")
    seed = int(seed)
    loop_config = make_loop_config(params, variant, shards, stage1_checkpoint=stage1_checkpoint,
                                   tracking_uri=uri, seed=seed)
    key = _training_key(loop_config)
    # In-process runs (num_workers 0) have no Ray storage to restore from: always a new run.
    exp_id, run_id, ray_name = _open_run(uri, cfg.experiment, variant, seed, key,
                                         resolve_storage_path(cfg),
                                         resume=cfg.num_workers > 0)
    loop_config["mlflow"]["run_id"] = run_id
    _log_shards(uri, run_id, shards)
    from ytmt.archs.vgg import warn_if_random

    m = params.model
    warn_if_random(m.vgg_weights, m.vgg_path, m.vgg_seed)  # once here, not in every worker
    print(f"[{variant} seed {seed}] MLflow run {run_id} (experiment {cfg.experiment!r}, {uri}); "
          f"Ray run {ray_name}, {cfg.num_workers} worker(s)", flush=True)

    from ytmt.tracking import client

    c = client(uri)
    try:
        if cfg.num_workers > 0:
            init_ray()
            check_cluster(tracking_uri=uri, use_gpu=cfg.use_gpu,
                          gpus_per_worker=cfg.gpus_per_worker, num_workers=cfg.num_workers,
                          paths={"train.storage_path": resolve_storage_path(cfg),
                                 "shards": shards_location(shards)})
            ship_frozen_inputs(loop_config, m.vgg_weights, m.vgg_path, m.vgg_seed)
        # in-process, the loop keeps its last checkpoint folder (the Result points at it):
        # under a folder of this call's, removed whether the run finished or failed (Ray
        # workers remove theirs once Ray Train has copied them to its storage)
        in_process = cfg.num_workers == 0
        with (tempfile.TemporaryDirectory(prefix="ytmt-ckpt-") if in_process
              else contextlib.nullcontext()) as ckpt_root:
            if in_process:
                loop_config["checkpoint_root"] = ckpt_root
            result = build_trainer(loop_config, cfg, ray_name, train_loop=train_loop).fit()
            if result.checkpoint is None:
                raise RuntimeError(f"{variant}: training reported no checkpoint")
            with result.checkpoint.as_directory() as d:
                # model.pt is self-contained: the frozen VGG and stage 1 put back, verified
                ckpt = with_frozen_tensors(load_checkpoint(Path(d) / CHECKPOINT_FILE),
                                           stage1_checkpoint, Path(d) / CHECKPOINT_FILE)
        trained = _write_model(ckpt, variant, seed, Path(target), uri, run_id, exp_id,
                               uri_join(resolve_storage_path(cfg), ray_name))
    except BaseException as err:
        status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
        c.set_terminated(run_id, status)
        raise
    c.set_terminated(run_id, "FINISHED")
    return trained


def _write_model(ckpt: dict[str, Any], variant: str, seed: int, target: Path, uri: str,
                 run_id: str, exp_id: str, ray_run: str) -> ModelInfo:
    """``target/model.pt`` (weights, no optimiser state), the MLflow model and
    ``target/info.json``."""
    import mlflow

    from ytmt.mlflow_model import log_model

    history = ckpt["extra"]["history"]
    model_path = target / MODEL_FILE
    atomic_torch_save({**ckpt, "extra": {"epoch": ckpt["extra"]["epoch"], "history": history}},
                      model_path)
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=run_id):
        logged = log_model(str(model_path), name="model")
    info = ModelInfo(variant=variant, seed=seed, model_path=str(model_path.resolve()),
                     mlflow_run_id=run_id, model_uri=logged.model_uri, experiment_id=exp_id,
                     epochs=int(ckpt["extra"]["epoch"]), metrics=dict(history[-1]),
                     vgg_weights=ckpt["vgg"]["mode"], ray_run=ray_run,
                     history=[dict(h) for h in history], tracking_uri=uri)
    write_info(target, info)
    return info


def train_variants(params, shards: str | Path, models: str | Path, *,
                   overrides: dict[str, Any] | None = None,
                   tracking_uri: str | None = None) -> dict[tuple[str, int], ModelInfo]:
    """Every run of ``train.runs()`` in this process, in training order (a two-stage run
    from the stage-1 model of its seed), each into ``run_dir(models, variant, seed)``.
    Returns {(variant, seed): ModelInfo}."""
    resolved = resolve_params(to_dict(params), overrides)
    preflight(resolved, shards, tracking_uri)
    results: dict[tuple[str, int], ModelInfo] = {}
    for run in resolved.train.runs():
        stage1 = results[(run.stage1, run.seed)].model_path if run.stage1 else None
        results[(run.variant, run.seed)] = train_variant(
            params, run.variant, shards, run_dir(models, run.variant, run.seed),
            seed=run.seed, overrides=overrides, tracking_uri=tracking_uri,
            stage1_checkpoint=stage1)
    return results
