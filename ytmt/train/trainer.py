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
    train_variant(params, variant, shards, out_dir, *, overrides=None, tracking_uri=None,
                  stage1_checkpoint=None, train_loop=train_loop_per_worker, seed=None)
        -> TrainedModel
        One (variant, seed): one MLflow run (experiment ``train.experiment``, tag ``seed``),
        fit, final model logged to MLflow (ytmt.serving.log_model), ``model.pt`` and
        ``info.json`` (with ``seed``) in :func:`model_dir`. ``seed`` None: the first of
        ``train.seeds``.
    train_variants(params, shards, out_dir, *, overrides=None, tracking_uri=None)
        -> dict[tuple[str, int], TrainedModel]
        Every ``train.variants`` entry for every ``train.seeds`` entry, keyed by
        (variant, seed); a two-stage variant trains after (and from) the stage-1 model of the
        same seed, which is trained first when its variant is not listed.
    model_dir(out_dir, variant, seed, several) -> Path
        ``out_dir/<variant>`` for a single seed, ``out_dir/<variant>/seed<k>`` for several
        (the layout ``ytmt.evaluation.evaluate.discover_models`` reads).
    run_label(variant, seed, several) -> str
        ``<variant>`` or ``<variant>_seed<k>``: keys of the stage's metrics and plot files.

Seeds: the run seed of each training is its ``train.seeds`` entry; it replaces the top-level
``seed`` inside the loop (initial weights, crops, augmentation, data order).

Resuming: the Ray run name is ``<variant>-seed<k>-<hash of the resolved config, seed and
data>``; running the same training again after an interruption reuses the unfinished MLflow
run and Ray restores the last checkpoint under the same name, so it continues instead of
starting over.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ray
import ray.train
from ray.train.torch import TorchConfig, TorchTrainer

from ytmt.archs import get_variant
from ytmt.checkpoint import atomic_torch_save, load_checkpoint
from ytmt.config import ConfigError, to_dict
from ytmt.ray_local import init_ray, resolve_storage
from ytmt.train.config import TrainConfig
from ytmt.train.components import resolve_params
from ytmt.train.loop import CHECKPOINT_FILE, train_loop_per_worker
from ytmt.train.report import atomic_write_bytes

MODEL_FILE = "model.pt"
INFO_FILE = "info.json"
STORAGE_ENV = "YTMT_RAY_STORAGE"


class ShardsMissing(FileNotFoundError):
    """The shards directory is missing or incomplete."""


@dataclass(frozen=True)
class TrainedModel:
    """What ``train_variant`` produced (also written as ``info.json``)."""

    variant: str
    seed: int
    model_path: str
    mlflow_run_id: str
    model_uri: str
    experiment_id: str
    epochs: int
    metrics: dict[str, float]
    vgg_weights: str
    ray_run: str
    history: list[dict[str, float]]


# --------------------------------------------------------------------------- Ray plumbing

def resolve_storage_path(cfg: TrainConfig, cwd: str | Path | None = None) -> str:
    """``train.storage_path`` > ``$YTMT_RAY_STORAGE`` > ``<cwd>/outputs/ray_results``
    (:func:`ytmt.ray_local.resolve_storage`)."""
    return resolve_storage(cfg.storage_path, STORAGE_ENV, "outputs/ray_results", cwd)


def scaling_config(cfg: TrainConfig) -> ray.train.ScalingConfig:
    resources: dict[str, float] = {"CPU": cfg.cpus_per_worker}
    if cfg.use_gpu:
        resources["GPU"] = cfg.gpus_per_worker
    return ray.train.ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
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
        callbacks=callbacks)
    return TorchTrainer(train_loop, train_loop_config=loop_config,
                        torch_config=TorchConfig(backend=backend_name(cfg)),
                        scaling_config=scaling_config(cfg), run_config=run_config)


# --------------------------------------------------------------------------- checks, configs

def check_shards(shards: str | Path) -> Path:
    """The absolute shards root; :class:`ShardsMissing` if it is absent or incomplete."""
    root = Path(shards).resolve()
    if not root.is_dir():
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
                     run_id: str | None = None, seed: int | None = None) -> dict[str, Any]:
    """``seed`` None: the loop uses ``params.seed``."""
    get_variant(variant)
    return {"params": to_dict(params), "variant": variant, "shards": str(Path(shards).resolve()),
            "overrides": dict(overrides or {}), "epochs": epochs,
            "seed": None if seed is None else int(seed),
            "stage1_checkpoint": str(stage1_checkpoint) if stage1_checkpoint else None,
            "mlflow": {"tracking_uri": tracking_uri, "run_id": run_id}}


def _training_key(loop_config: dict[str, Any]) -> str:
    """A short hash of what determines the trained weights (config, run seed, data, stage 1).
    ``train.seeds`` itself is left out: adding a seed to the list keeps the other seeds' keys
    (each run's own seed is in the key as ``seed``)."""
    from ytmt.data.shards import shard_set_key

    overrides = dict(loop_config["overrides"])
    if loop_config.get("seed") is not None:
        overrides["seed"] = loop_config["seed"]
    resolved = resolve_params(loop_config["params"], overrides)
    recipe = {k: to_dict(getattr(resolved, k)) for k in ("seed", "model", "loss", "train")}
    recipe["train"].pop("seeds")
    stage1 = loop_config["stage1_checkpoint"]
    digest = {"variant": loop_config["variant"], "recipe": recipe,
              "epochs": loop_config["epochs"], "data": shard_set_key(loop_config["shards"]),
              "stage1": hashlib.sha1(Path(stage1).read_bytes()).hexdigest() if stage1 else None}
    return hashlib.sha1(json.dumps(digest, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _open_run(tracking_uri: str, experiment: str, variant: str, seed: int, key: str,
              resume: bool = True) -> tuple[str, str, str]:
    """(experiment id, MLflow run id, Ray run name): the unfinished run of this training if
    there is one and ``resume`` (Ray restores its checkpoint), else a new run."""
    from ytmt.tracking import client, get_or_create_experiment

    exp_id = get_or_create_experiment(tracking_uri, experiment)
    c = client(tracking_uri)
    runs = c.search_runs([exp_id], filter_string=f"tags.ytmt_train_key = '{key}'",
                         order_by=["attributes.start_time DESC"])
    if resume and runs and runs[0].info.status != "FINISHED":
        run = runs[0]
        c.update_run(run.info.run_id, status="RUNNING")
        return exp_id, run.info.run_id, run.data.tags["ray_run_name"]
    ray_name = f"{variant}-seed{seed}-{key}" + (f"-{len(runs)}" if runs else "")
    run = c.create_run(exp_id, run_name=f"{variant}-seed{seed}",
                       tags={"ytmt_train_key": key, "ray_run_name": ray_name, "variant": variant,
                             "seed": str(seed)})
    return exp_id, run.info.run_id, ray_name


# --------------------------------------------------------------------------- layout

def model_dir(out_dir: str | Path, variant: str, seed: int, several: bool) -> Path:
    """Where a (variant, seed) model goes: ``out_dir/<variant>`` when ``train.seeds`` has one
    entry, ``out_dir/<variant>/seed<k>`` when it has several."""
    return Path(out_dir) / variant / f"seed{seed}" if several else Path(out_dir) / variant


def run_label(variant: str, seed: int, several: bool) -> str:
    """``<variant>`` (one seed) or ``<variant>_seed<k>``: the stage's metrics keys and plot
    file names."""
    return f"{variant}_seed{seed}" if several else variant


def _remove_stale(out_dir: Path, variant: str, seeds: tuple[int, ...]) -> None:
    """Drop models of ``variant`` left by an earlier run with other seeds (the other layout,
    or ``seed<k>`` folders no longer listed), so the evaluation finds only this run's."""
    several = len(seeds) > 1
    keep = {model_dir(out_dir, variant, s, several).resolve() for s in seeds}
    root = out_dir / variant
    stale = [root] if several else []
    stale += [d for d in root.glob("seed*") if d.is_dir() and d.name[4:].isdigit()]
    for d in stale:
        if d.resolve() in keep:
            continue
        for name in (MODEL_FILE, INFO_FILE):
            if (d / name).is_file():
                print(f"train: removing stale {d / name}", flush=True)
                (d / name).unlink()
        if d != root and d.is_dir() and not any(d.iterdir()):
            d.rmdir()


# --------------------------------------------------------------------------- end to end

def train_variant(params, variant: str, shards: str | Path, out_dir: str | Path, *,
                  overrides: dict[str, Any] | None = None, tracking_uri: str | None = None,
                  stage1_checkpoint: str | None = None,
                  train_loop=train_loop_per_worker, seed: int | None = None) -> TrainedModel:
    """Train ``variant`` with run seed ``seed`` (None: the first of ``train.seeds``) with Ray
    Train and log it to MLflow; writes into :func:`model_dir`. See the module docstring."""
    params = resolve_params(to_dict(params), overrides)  # validate overrides before anything
    uri = preflight(params, shards, tracking_uri)
    cfg = params.train
    seed = cfg.seeds[0] if seed is None else int(seed)
    if seed < 0:
        raise ConfigError(f"seed = {seed}: must be >= 0")
    loop_config = make_loop_config(params, variant, shards, stage1_checkpoint=stage1_checkpoint,
                                   tracking_uri=uri, seed=seed)
    key = _training_key(loop_config)
    # In-process runs (num_workers 0) have no Ray storage to restore from: always a new run.
    exp_id, run_id, ray_name = _open_run(uri, cfg.experiment, variant, seed, key,
                                         resume=cfg.num_workers > 0)
    loop_config["mlflow"]["run_id"] = run_id
    print(f"[{variant} seed {seed}] MLflow run {run_id} (experiment {cfg.experiment!r}, {uri}); "
          f"Ray run {ray_name}, {cfg.num_workers} worker(s)", flush=True)
    target = model_dir(out_dir, variant, seed, several=len(cfg.seeds) > 1)

    from ytmt.tracking import client

    c = client(uri)
    try:
        if cfg.num_workers > 0:
            init_ray()
        result = build_trainer(loop_config, cfg, ray_name, train_loop=train_loop).fit()
        if result.checkpoint is None:
            raise RuntimeError(f"{variant}: training reported no checkpoint")
        with result.checkpoint.as_directory() as d:
            ckpt = load_checkpoint(Path(d) / CHECKPOINT_FILE)
        if cfg.num_workers == 0:  # in-process: the loop's last temp dir is ours to remove
            shutil.rmtree(result.checkpoint.path, ignore_errors=True)
        trained = _write_model(ckpt, variant, seed, target, uri, run_id, exp_id,
                               f"{resolve_storage_path(cfg)}/{ray_name}")
    except BaseException as err:
        status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
        c.set_terminated(run_id, status)
        raise
    c.set_terminated(run_id, "FINISHED")
    return trained


def _write_model(ckpt: dict[str, Any], variant: str, seed: int, target: Path, uri: str,
                 run_id: str, exp_id: str, ray_run: str) -> TrainedModel:
    """``target/model.pt`` (weights, no optimiser state), the MLflow model and
    ``target/info.json``."""
    import mlflow

    history = ckpt["extra"]["history"]
    model_path = target / MODEL_FILE
    atomic_torch_save({**ckpt, "extra": {"epoch": ckpt["extra"]["epoch"], "history": history}},
                      model_path)
    from ytmt.serving import log_model

    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=run_id):
        info = log_model(str(model_path), name="model")
    trained = TrainedModel(variant=variant, seed=seed, model_path=str(model_path.resolve()),
                           mlflow_run_id=run_id, model_uri=info.model_uri, experiment_id=exp_id,
                           epochs=int(ckpt["extra"]["epoch"]), metrics=dict(history[-1]),
                           vgg_weights=ckpt["vgg"]["mode"], ray_run=ray_run,
                           history=[dict(h) for h in history])
    atomic_write_bytes(model_path.parent / INFO_FILE,
                       json.dumps(asdict(trained), indent=2).encode())
    return trained


def read_overrides(path: str | Path) -> dict[str, Any]:
    """The tune stage's ``best.yaml``: a mapping of dotted params keys to values (``{}``
    for none). Values are validated when applied (:func:`ytmt.train.loop.resolve_params`)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: best configuration file not found (run the tune stage)")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not all(isinstance(k, str) and "." in k for k in data):
        raise ConfigError(f"{path}: expected a mapping of dotted keys to values, e.g. "
                          f"{{'loss.perceptual': 0.08}}; got {data!r}")
    return data


def training_order(variants: list[str] | tuple[str, ...]) -> list[str]:
    """``variants`` with each two-stage variant's stage-1 variant placed before it."""
    order: list[str] = []
    for v in variants:
        first = get_variant(v).stage1_variant
        for name in (first, v):
            if name not in order:
                order.append(name)
    return order


def train_variants(params, shards: str | Path, out_dir: str | Path, *,
                   overrides: dict[str, Any] | None = None,
                   tracking_uri: str | None = None) -> dict[tuple[str, int], TrainedModel]:
    """Train every ``params.train.variants`` entry with every ``params.train.seeds`` entry
    (stage-1 variants first; a two-stage model starts from the stage-1 model of its seed).
    Returns {(variant, seed): TrainedModel} in training order."""
    resolved = resolve_params(to_dict(params), overrides)
    preflight(resolved, shards, tracking_uri)
    seeds = resolved.train.seeds
    order = training_order(resolved.train.variants)
    print(f"train: {', '.join(order)} × seed{'s' if len(seeds) > 1 else ''} "
          f"{', '.join(map(str, seeds))}", flush=True)
    results: dict[tuple[str, int], TrainedModel] = {}
    for variant in order:
        first = get_variant(variant).stage1_variant
        for seed in seeds:
            stage1 = results[(first, seed)].model_path if first != variant else None
            results[(variant, seed)] = train_variant(
                params, variant, shards, out_dir, overrides=overrides,
                tracking_uri=tracking_uri, stage1_checkpoint=stage1, seed=seed)
        _remove_stale(Path(out_dir), variant, seeds)
    return results
