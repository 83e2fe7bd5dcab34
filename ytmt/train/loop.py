"""The one training loop: Ray Train workers, Ray Tune trials and the tests all run it.

``train_loop_per_worker(config)`` with ``config``:

=====================  ===================================================================
key                    meaning
=====================  ===================================================================
``params``             plain dict of the whole params (``ytmt.config.to_dict(Params)``)
``variant``            a name from ``ytmt.VARIANTS``
``shards``             absolute path of the shards root (``outputs/shards``)
``overrides``          optional ``{"loss.perceptual": 0.05, ...}``: dotted keys applied to
                       ``params`` and then validated like params.yaml
``epochs``             optional: total epochs (overrides ``train.epochs``)
``seed``               optional: this run's seed (one entry of ``train.seeds``; overrides
                       ``params.seed``): seeds the initial weights (``build_components``)
                       and the crops, augmentation and order of the data (``dataset_fn``)
``stage1_checkpoint``  two-stage variants: the trained stage-1 checkpoint (frozen)
``mlflow``             optional ``{"tracking_uri": str, "run_id": str | None}``: the run is
                       created and ended by the caller; rank 0 logs into it
``in_process``         true when the loop runs in the calling process (``num_workers: 0``):
                       it then keeps its last checkpoint folder and leaves logging alone
``checkpoint_root``    optional: the folder the checkpoint folders are made in (default: the
                       system's temporary folder); an in-process caller gives one it removes
                       once it has read the last checkpoint, finished or failed
``dataset_fn``         optional ``fn(root, split, crop, augment, seed, rank, world_size)``
                       returning the IterableDataset (default: ``ytmt.data.reader.ShardDataset``)
=====================  ===================================================================

Per epoch every rank calls ``ray.train.report`` exactly once with the epoch's metrics
(``epoch``, ``train_loss``, ``loss_<term>``, ``lr``, ``images_per_s``, ``val_psnr_t`` ... see
:data:`ytmt.train.validation.VAL_KEYS`) and, every ``train.checkpoint_every`` epochs and
after the last, rank 0 attaches a checkpoint directory holding ``checkpoint.pt`` (a ytmt
checkpoint whose ``extra`` has ``epoch``, the optimiser states, ``lr`` and the metric
``history``; the frozen VGG and stage 1 are recorded by digest, not stored). A
(re)started worker resumes from ``ray.train.get_checkpoint()``. The pieces: set-up here,
the step and the epoch in :mod:`ytmt.train.step`, validation in
:mod:`ytmt.train.validation`.

MLflow, rank 0 only: the resolved config as params, ``vgg_weights`` as tag, one batch of
metrics per epoch at ``step=epoch`` logged *after* the epoch's checkpoint is persisted, the
restored history re-offered on resume (:meth:`ytmt.tracking.RunLogger.log_epoch` skips
epochs already in the run): after a worker restart no epoch is missing or doubled.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
from torch.utils.data import DataLoader, IterableDataset

from ytmt.archs import get_variant
from ytmt.checkpoint import (
    frozen_identity,
    load_checkpoint,
    load_stage1,
    load_training_state,
    model_spec,
    save_checkpoint,
)
from ytmt.config import flatten, to_dict
from ytmt.grids import image_grid_png
from ytmt.params import resolve_params
from ytmt.precision import configure_cuda
from ytmt.progress import RunProgress, console
from ytmt.train.components import build_components, learning_rate
from ytmt.train.report import atomic_write_bytes, curves_png
from ytmt.train.shipping import received_stage1, received_vgg
from ytmt.train.step import (
    LOSS_TERMS,
    SampleBatches,
    TrainStep,
    all_reduce_sum,
    build_step,
    train_epoch,
)
from ytmt.train.validation import (
    REAL_PREFIX,
    SAMPLE_COLUMNS,
    VAL_KEYS,
    VAL_REAL_KEYS,
    validate,
)

__all__ = ["CHECKPOINT_FILE", "LOSS_TERMS", "VAL_KEYS", "shard_dataset",
           "train_loop_per_worker"]

CHECKPOINT_FILE = "checkpoint.pt"

DatasetFn = Callable[[str, str, "int | None", bool, int, int, int], IterableDataset]


def shard_dataset(root: str, split: str, crop: int | None, augment: bool, seed: int,
                  rank: int, world_size: int, *, real_share: float = 0.0,
                  mixtures: str = "stored") -> IterableDataset:
    """The default ``dataset_fn``: ``ytmt.data.reader.ShardDataset`` over ``root/split``;
    the train split with ``real_share`` real pairs and ``stored``/``fresh`` mixtures
    (``train.real_share``, ``train.mixtures``; bound by :func:`_setup`)."""
    from ytmt.data.reader import ShardDataset

    train = split == "train"
    return ShardDataset(root, split=split, crop=crop, augment=augment, seed=seed, rank=rank,
                        world_size=world_size, uint8=train,
                        real_share=real_share if train else 0.0,
                        mixtures=mixtures if train else "stored")


def real_val_loader(dataset_fn: DatasetFn, shards: str, seed: int, rank: int,
                    world: int) -> DataLoader | None:
    """The loader of the shards' held-out real pairs (``real_val``), None without them."""
    from ytmt.data.reader import real_val_rows

    if not real_val_rows(shards):
        return None
    return DataLoader(dataset_fn(shards, "real_val", None, False, seed, rank, world),
                      batch_size=1)


class _CheckpointDirs:
    """Temporary checkpoint directories, made under ``root`` (None: the system's temporary
    folder). Ray Train copies a reported directory to its storage and the copy here can go;
    in-process mode (num_workers=0) keeps the last one, since the Result points at it: its
    caller removes ``root`` (``checkpoint_root``) once it has read it."""

    def __init__(self, keep_last: bool, root: str | None = None) -> None:
        self.keep_last = keep_last
        self.root = root
        self.previous: Path | None = None

    def new(self) -> Path:
        if self.root is not None:
            Path(self.root).mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="ytmt-ckpt-", dir=self.root))

    def done(self, path: Path) -> None:
        if not self.keep_last:
            shutil.rmtree(path, ignore_errors=True)
            return
        if self.previous is not None:
            shutil.rmtree(self.previous, ignore_errors=True)
        self.previous = path


def _logged_params(params, variant: str, shards: str, world: int, vgg_mode: str,
                   stage1: str | None, precision: str) -> dict[str, Any]:
    """The full resolved config, flattened for MLflow (``loss.perceptual``, ...), with the
    VGG weights and the compute precision actually used (``train.precision: auto`` resolved)."""
    resolved = {k: to_dict(getattr(params, k)) for k in ("model", "loss", "train")}
    return {"variant": variant, "seed": params.seed, "shards": shards, "world_size": world,
            "vgg_weights_used": vgg_mode, "stage1_checkpoint": stage1 or "none",
            "precision_used": precision, **flatten(resolved)}


# --------------------------------------------------------------------------- set-up

@dataclass
class _Run:
    """One worker's run, set up: what the epochs train, read and checkpoint."""

    params: Any  # ytmt.params.Params, overrides applied
    variant: str
    rank: int
    world: int
    parts: Any  # ytmt.train.components.Components
    spec: dict[str, Any]
    frozen: dict[str, str]  # ytmt.checkpoint.frozen_identity: left out of checkpoints
    step: TrainStep
    memory_format: torch.memory_format
    train_ds: IterableDataset
    train_batches: SampleBatches
    val_loader: DataLoader
    steps: int  # per epoch
    start_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)  # epochs this run (re)started from
    real_val_loader: DataLoader | None = None  # held-out real pairs, if the shards have them


def _resolve_params(config: dict[str, Any]):
    """``config["params"]`` with the config's overrides, epochs and seed applied."""
    overrides = dict(config.get("overrides") or {})
    if config.get("epochs"):
        overrides["train.epochs"] = int(config["epochs"])
    if config.get("seed") is not None:
        overrides["seed"] = int(config["seed"])  # the run seed: weights and data order
    return resolve_params(config["params"], overrides)


def _restore_model(model, variant: str, stage1: str | None) -> dict[str, Any] | None:
    """For a two-stage variant its trained stage 1 (frozen; stage 2 starts from it on a
    fresh start), then Ray's checkpoint of this run into ``model`` (returned, to restore
    the rest). A checkpoint records the frozen VGG and stage 1 by identity only: they come
    from the params and the stage-1 checkpoint, and must be the ones it was trained with
    (:func:`ytmt.checkpoint.load_training_state`)."""
    restored = ray.train.get_checkpoint()
    spec_variant = get_variant(variant)
    if spec_variant.stages > 1:
        if not stage1:
            raise ValueError(f"{variant} is two-stage: pass the trained "
                             f"{spec_variant.stage1_variant} as config['stage1_checkpoint']")
        load_stage1(model, stage1, init_stage2=restored is None)
    if restored is None:
        return None
    with restored.as_directory() as d:
        path = Path(d) / CHECKPOINT_FILE
        state = load_checkpoint(path)
    load_training_state(model, state, path)
    return state


def _restore_optimizers(step: TrainStep, extra: dict[str, Any]) -> None:
    """The optimiser states and the discriminator of a restored checkpoint's ``extra``."""
    step.optimizer.load_state_dict(extra["optimizer"])
    if step.discriminator is not None and extra.get("discriminator"):
        step.discriminator.load_state_dict(extra["discriminator"])
        step.optimizer_d.load_state_dict(extra["optimizer_d"])


def epoch_loaders(dataset_fn: DatasetFn, shards: str, cfg, seed: int, rank: int,
                  world: int, device_type: str = "cpu"
                  ) -> tuple[IterableDataset, SampleBatches, DataLoader, int]:
    """This rank's training set, its batches, the validation loader and the steps per epoch.
    Each rank reads its own disjoint part (the dataset shards by rank). On ``cuda``
    the loaders run ``train.loader_workers`` processes (null: the per-GPU default) and the
    training batches come in pinned memory."""
    train_ds = dataset_fn(shards, "train", cfg.crop, True, seed, rank, world)
    val_ds = dataset_fn(shards, "val", None, False, seed, rank, world)
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise ValueError(f"{shards}: rank {rank} of {world} got {len(train_ds)} training and "
                         f"{len(val_ds)} validation samples; both must be > 0")
    workers = cfg.resolved_loader_workers(device_type)
    train_batches = SampleBatches(train_ds, cfg.batch_size, workers,
                                  pin_memory=device_type == "cuda")
    val_loader = DataLoader(val_ds, batch_size=1, num_workers=workers)
    steps = math.ceil(len(train_ds) / cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    return train_ds, train_batches, val_loader, steps


def _setup(config: dict[str, Any]) -> _Run:
    """Params, components, restored state, optimisers and loaders of this worker."""
    params = _resolve_params(config)
    cfg, variant = params.train, config["variant"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if not config.get("in_process"):
        # a Ray worker: Ray Train's per-rank INFO lines ("Reporting training result ...")
        # stay out of the console, which shows rank 0's progress lines
        logging.getLogger().setLevel(logging.WARNING)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    device = ray.train.torch.get_device()
    configure_cuda(device, cfg.tf32)

    # the VGG and stage 1 as the driver resolved them (ytmt.cluster.ship_frozen_inputs),
    # never what this node's disk happens to hold
    parts = build_components(params, variant, warn_random_vgg=False,  # the driver warned
                             make_vgg=received_vgg(config))
    model = parts.model
    spec = model_spec(model, params.model.width, params.model.plain_layers)
    with tempfile.TemporaryDirectory(prefix="ytmt-stage1-") as d:
        state = _restore_model(model, variant, received_stage1(config, d))
    frozen = frozen_identity(model)  # once: these tensors never change
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    net = ray.train.torch.prepare_model(model)  # to device; DDP when world > 1
    step = build_step(parts, net, cfg, device)  # precision auto: bf16 where native
    extra = state["extra"] if state else {}
    if state:
        _restore_optimizers(step, extra)
    start_epoch = int(extra.get("epoch", 0))
    dataset_fn = config.get("dataset_fn") or partial(
        shard_dataset, real_share=cfg.real_share, mixtures=cfg.mixtures)
    shards = str(config["shards"])
    loaders = epoch_loaders(dataset_fn, shards, cfg, params.seed, rank, world, device.type)
    return _Run(params, variant, rank, world, parts, spec, frozen, step, fmt, *loaders,
                start_epoch=start_epoch, history=list(extra.get("history", [])),
                starts=[*extra.get("starts", []), start_epoch],
                real_val_loader=real_val_loader(dataset_fn, shards, params.seed, rank, world))


def _open_logger(run: _Run, config: dict[str, Any]):
    """Rank 0's MLflow logger of the caller's run (None elsewhere or without a run): the
    resolved config, tags and the epochs checkpointed before a restart, if not yet logged."""
    mlflow_cfg = config.get("mlflow") or {}
    if run.rank != 0 or not mlflow_cfg.get("run_id"):
        return None
    from ytmt.tracking import RunLogger

    vgg = run.parts.vgg
    logger = RunLogger(mlflow_cfg["tracking_uri"], mlflow_cfg["run_id"])
    logger.log_params(_logged_params(run.params, run.variant, str(config["shards"]),
                                     run.world, vgg.weights.mode,
                                     config.get("stage1_checkpoint"), run.step.precision))
    logger.set_tags({"vgg_weights": vgg.weights.mode, "vgg_source": vgg.weights.source,
                     "variant": run.variant, "started_from_epochs": run.starts})
    for record in run.history:
        logger.log_epoch(int(record["epoch"]), record)
    return logger


# --------------------------------------------------------------------------- per epoch

def _train_and_validate(run: _Run, epoch: int, progress: RunProgress
                        ) -> tuple[dict[str, float], list[list[np.ndarray]]]:
    """Epoch ``epoch`` (0-based) trained and validated: its record (means over all ranks)
    and rank 0's validation samples."""
    cfg, step = run.params.train, run.step
    lr = learning_rate(epoch, cfg)
    for o in step.optimizers():
        for group in o.param_groups:
            group["lr"] = lr
    run.train_ds.set_epoch(epoch)
    on_step = ((lambda i, loss: progress.step(epoch + 1, i, loss)) if run.rank == 0
               else None)
    t0 = time.perf_counter()
    sums = train_epoch(step, run.train_batches, run.steps, run.memory_format, on_step)
    train_time = time.perf_counter() - t0
    sums = all_reduce_sum(sums, step.device)
    train_n = sums.pop("n")
    val_sums, samples = validate(run.parts.model, run.val_loader, step.device,
                                 cfg.sample_count if run.rank == 0 else 0)
    val_sums = all_reduce_sum({k: val_sums.get(k, 0.0) for k in (*VAL_KEYS, "n")},
                              step.device)
    val_n = val_sums.pop("n")
    record = {"epoch": epoch + 1, "lr": lr, "world_size": run.world,  # elastic: can change
              "images_per_s": train_n / max(train_time, 1e-9),
              **{k: v / train_n for k, v in sums.items()},
              **{k: v / val_n for k, v in val_sums.items()},
              **_validate_real(run)}
    return record, samples


def _validate_real(run: _Run) -> dict[str, float]:
    """Means of :data:`VAL_REAL_KEYS` over the held-out real pairs ({} without them)."""
    if run.real_val_loader is None:
        return {}
    sums, _ = validate(run.parts.model, run.real_val_loader, run.step.device, 0,
                       prefix=REAL_PREFIX)
    sums = all_reduce_sum({k: sums.get(k, 0.0) for k in (*VAL_REAL_KEYS, "n")},
                          run.step.device)
    n = sums.pop("n")
    return {k: v / n for k, v in sums.items()}


def _checkpoint_and_report(run: _Run, record: dict[str, float],
                           ckpt_dirs: _CheckpointDirs) -> None:
    """Every rank reports ``record``; rank 0 attaches the checkpoint of this epoch every
    ``train.checkpoint_every`` epochs and at the last. The checkpoint leaves the frozen VGG
    and stage 1 out (recorded by :func:`ytmt.checkpoint.frozen_identity`)."""
    cfg, step, disc = run.params.train, run.step, run.step.discriminator
    epoch = int(record["epoch"])
    if epoch % cfg.checkpoint_every and epoch != cfg.epochs:
        ray.train.report(record)
        return
    ckpt_dir = ckpt_dirs.new()
    checkpoint = None
    if run.rank == 0:
        save_checkpoint(ckpt_dir / CHECKPOINT_FILE, run.parts.model, run.spec, {
            "epoch": record["epoch"], "lr": record["lr"], "history": run.history,
            "starts": run.starts, "optimizer": step.optimizer.state_dict(),
            "discriminator": ({k: v.cpu() for k, v in disc.state_dict().items()}
                              if disc is not None else None),
            "optimizer_d": step.optimizer_d.state_dict() if disc is not None else None},
            frozen=run.frozen)
        checkpoint = ray.train.Checkpoint.from_directory(str(ckpt_dir))
    ray.train.report(record, checkpoint=checkpoint)
    ckpt_dirs.done(ckpt_dir)


# --------------------------------------------------------------------------- the loop

def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Train ``config["variant"]`` (see the module docstring for ``config``)."""
    run = _setup(config)
    cfg, variant = run.params.train, run.variant
    logger = _open_logger(run, config)
    if run.rank == 0 and run.start_epoch:
        console(f"[{variant}] resumed after epoch {run.start_epoch}")
    progress = RunProgress(variant, cfg.epochs, run.steps, run.world * cfg.batch_size,
                        start_epoch=run.start_epoch, every=cfg.log_every_steps)
    ckpt_dirs = _CheckpointDirs(keep_last=bool(config.get("in_process")),
                                root=config.get("checkpoint_root"))
    for epoch in range(run.start_epoch, cfg.epochs):
        record, samples = _train_and_validate(run, epoch, progress)
        run.history.append(record)
        _checkpoint_and_report(run, record, ckpt_dirs)
        if run.rank == 0:
            console(f"[{variant}] epoch {epoch + 1}/{cfg.epochs} loss {record['train_loss']:.4f} "
                    f"val PSNR T {record['val_psnr_t']:.2f} dB "
                    f"(input {record['val_psnr_t_input']:.2f}) R {record['val_psnr_r']:.2f} dB, "
                    f"{record['images_per_s']:.1f} img/s, ETA {progress.eta()}")
        if logger is not None:
            logger.log_epoch(epoch + 1, record)
            if (epoch + 1) % cfg.sample_every == 0 or epoch + 1 == cfg.epochs:
                _log_figures(logger, variant, epoch + 1, samples, run.history)


def _log_figures(logger, variant: str, epoch: int, samples: list[list[np.ndarray]],
                 history: list[dict[str, float]]) -> None:
    """The validation sample grid of this epoch as an image at ``step=epoch`` (key
    ``validation_samples``: the UI's step slider walks through the epochs) and the loss
    curves so far as an artifact."""
    logger.log_image(image_grid_png(samples, SAMPLE_COLUMNS, f"{variant} epoch {epoch}"),
                     key="validation_samples", step=epoch)
    with tempfile.TemporaryDirectory(prefix="ytmt-fig-") as d:
        curves = atomic_write_bytes(Path(d) / "loss_curves.png", curves_png(history, variant))
        logger.log_artifact(curves, "curves")
