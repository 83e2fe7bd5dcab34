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
``dataset_fn``         optional ``fn(root, split, crop, augment, seed, rank, world_size)``
                       returning the IterableDataset (default: ``ytmt.data.reader.ShardDataset``)
=====================  ===================================================================

Per epoch every rank calls ``ray.train.report`` exactly once with the epoch's metrics
(``epoch``, ``train_loss``, ``loss_<term>``, ``lr``, ``images_per_s``, ``val_psnr_t`` ... see
:data:`VAL_KEYS`) and rank 0 attaches a checkpoint directory holding ``checkpoint.pt`` (a
ytmt checkpoint whose ``extra`` has ``epoch``, the optimiser states, ``lr`` and the metric
``history``). A (re)started worker resumes from ``ray.train.get_checkpoint()``.

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
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset

from ytmt.archs import get_variant
from ytmt.checkpoint import load_checkpoint, load_stage1, model_spec, save_checkpoint
from ytmt.config import flatten, to_dict
from ytmt.precision import resolve_precision
from ytmt.train.components import (
    autocast,
    build_components,
    compile_for_training,
    generator_step,
    learning_rate,
    make_optimizer,
    resolve_params,
)
from ytmt.train.report import (
    Progress,
    atomic_write_bytes,
    console,
    curves_png,
    sample_grid_png,
)

CHECKPOINT_FILE = "checkpoint.pt"
LOSS_TERMS = ("rec", "perceptual", "exclusion", "adversarial")
PROTOCOLS = ("paper", "strict")
# Validation metrics; the paper protocol carries no suffix. val_psnr_t_input is the identity
# baseline (T̂ = input), the score a model must beat.
VAL_KEYS = tuple(f"val_{m}_{layer}{'' if p == 'paper' else '_' + p}"
                 for p in PROTOCOLS for layer in ("t", "r") for m in ("psnr", "ssim")
                 ) + ("val_psnr_t_input",)

# Identical images have infinite PSNR; one such pair would make the mean infinite.
PSNR_CAP = 100.0

DatasetFn = Callable[[str, str, "int | None", bool, int, int, int], IterableDataset]


def shard_dataset(root: str, split: str, crop: int | None, augment: bool, seed: int,
                  rank: int, world_size: int) -> IterableDataset:
    """The default ``dataset_fn``: ``ytmt.data.reader.ShardDataset`` over ``root/split``."""
    from ytmt.data.reader import ShardDataset

    return ShardDataset(root, split=split, crop=crop, augment=augment, seed=seed, rank=rank,
                        world_size=world_size)


# --------------------------------------------------------------------------- helpers

def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _all_reduce_sum(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Sum ``values`` over all ranks (identity on one worker)."""
    if not _distributed():
        return dict(values)
    keys = sorted(values)
    buf = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(buf)
    return dict(zip(keys, buf.tolist()))


def _average_gradients(module: nn.Module) -> None:
    """Mean of ``module``'s gradients over ranks (the discriminator is not DDP-wrapped: it
    runs several forwards per backward, which DDP's reducer does not allow)."""
    if not _distributed():
        return
    world = dist.get_world_size()
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def _hwc(x: Tensor) -> np.ndarray:
    """(3,H,W) tensor in [0,1] → (H,W,3) float32 numpy, clipped to [0,1]."""
    return x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


class _CheckpointDirs:
    """Temporary checkpoint directories. Ray Train copies a reported directory to its storage
    and the copy here can go; in-process mode (num_workers=0) keeps the last one, since the
    Result points at it."""

    def __init__(self, keep_last: bool) -> None:
        self.keep_last = keep_last
        self.previous: Path | None = None

    def new(self) -> Path:
        return Path(tempfile.mkdtemp(prefix="ytmt-ckpt-"))

    def done(self, path: Path) -> None:
        if not self.keep_last:
            shutil.rmtree(path, ignore_errors=True)
            return
        if self.previous is not None:
            shutil.rmtree(self.previous, ignore_errors=True)
        self.previous = path


def _validate(model: nn.Module, loader: DataLoader, device: torch.device,
              keep_samples: int) -> tuple[dict[str, float], list[list[np.ndarray]]]:
    """Sums of every VAL_KEYS metric over this rank's validation images, their count
    (``n``), and up to ``keep_samples`` rows (input, T̂, R̂, T, R) for the sample grid."""
    from ytmt.metrics import psnr_ssim

    sums: dict[str, float] = defaultdict(float)
    samples: list[list[np.ndarray]] = []
    model.eval()
    with torch.no_grad():
        for batch in loader:
            mixture = batch["mixture"].to(device)
            t_hat, r_hat = model(mixture)
            for i in range(mixture.shape[0]):
                m, th, rh = _hwc(mixture[i]), _hwc(t_hat[i]), _hwc(r_hat[i])
                t, r = _hwc(batch["transmission"][i]), _hwc(batch["reflection"][i])
                for protocol in PROTOCOLS:
                    suffix = "" if protocol == "paper" else f"_{protocol}"
                    for layer, pred, target in (("t", th, t), ("r", rh, r)):
                        psnr, ssim = psnr_ssim(pred, target, protocol=protocol)
                        sums[f"val_psnr_{layer}{suffix}"] += min(psnr, PSNR_CAP)
                        sums[f"val_ssim_{layer}{suffix}"] += ssim
                sums["val_psnr_t_input"] += min(psnr_ssim(m, t, protocol="paper")[0], PSNR_CAP)
                sums["n"] += 1
                if len(samples) < keep_samples:
                    samples.append([m, th, rh, t, r])
    model.train()
    return sums, samples


def _logged_params(params, variant: str, shards: str, world: int, vgg_mode: str,
                   stage1: str | None, precision: str) -> dict[str, Any]:
    """The full resolved config, flattened for MLflow (``loss.perceptual``, ...), with the
    VGG weights and the compute precision actually used (``train.precision: auto`` resolved)."""
    resolved = {k: to_dict(getattr(params, k)) for k in ("model", "loss", "train")}
    return {"variant": variant, "seed": params.seed, "shards": shards, "world_size": world,
            "vgg_weights_used": vgg_mode, "stage1_checkpoint": stage1 or "none",
            "precision_used": precision, **flatten(resolved)}


# --------------------------------------------------------------------------- the loop

def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Train ``config["variant"]`` (see the module docstring for ``config``)."""
    overrides = dict(config.get("overrides") or {})
    if config.get("epochs"):
        overrides["train.epochs"] = int(config["epochs"])
    if config.get("seed") is not None:
        overrides["seed"] = int(config["seed"])  # the run seed: weights and data order
    params = resolve_params(config["params"], overrides)
    cfg, mcfg = params.train, params.model
    variant, shards = config["variant"], str(config["shards"])
    spec_variant = get_variant(variant)
    stage1 = config.get("stage1_checkpoint")
    dataset_fn: DatasetFn = config.get("dataset_fn") or shard_dataset
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if not config.get("in_process"):
        # a Ray worker: Ray Train's per-rank INFO lines ("Reporting training result ...")
        # stay out of the console, which shows rank 0's progress lines
        logging.getLogger().setLevel(logging.WARNING)
    if cfg.torch_threads:
        torch.set_num_threads(cfg.torch_threads)
    device = ray.train.torch.get_device()
    precision = resolve_precision(cfg.precision, device)  # auto: bf16 where native

    parts = build_components(params, variant, warn_random_vgg=False)  # the driver warned
    model, criterion, disc, vgg = parts.model, parts.criterion, parts.discriminator, parts.vgg
    spec = model_spec(model, mcfg.width, mcfg.plain_layers)

    restored = ray.train.get_checkpoint()
    state = None
    if restored is not None:
        with restored.as_directory() as d:
            state = load_checkpoint(Path(d) / CHECKPOINT_FILE)
        model.load_state_dict(state["state_dict"])
    elif spec_variant.stages > 1:
        if not stage1:
            raise ValueError(f"{variant} is two-stage: pass the trained "
                             f"{spec_variant.stage1_variant} as config['stage1_checkpoint']")
        load_stage1(model, stage1)

    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    net = ray.train.torch.prepare_model(model)  # to device; DDP when world > 1
    criterion.to(device)
    net, loss_fn = compile_for_training(net, criterion, cfg)
    opt = make_optimizer(model.trainable_parameters(), cfg, device)
    opt_d = None
    if disc is not None:
        disc.to(device, memory_format=fmt)
        opt_d = make_optimizer(disc.parameters(), cfg, device)
    extra = state["extra"] if state else {}
    if state:
        opt.load_state_dict(extra["optimizer"])
        if disc is not None and extra.get("discriminator"):
            disc.load_state_dict(extra["discriminator"])
            opt_d.load_state_dict(extra["optimizer_d"])
    start_epoch = int(extra.get("epoch", 0))
    history: list[dict[str, float]] = list(extra.get("history", []))
    starts = [*extra.get("starts", []), start_epoch]  # epochs this run (re)started from

    # Data: each rank reads its own disjoint part (the dataset shards by rank).
    train_ds = dataset_fn(shards, "train", cfg.crop, True, params.seed, rank, world)
    val_ds = dataset_fn(shards, "val", None, False, params.seed, rank, world)
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise ValueError(f"{shards}: rank {rank} of {world} got {len(train_ds)} training and "
                         f"{len(val_ds)} validation samples; both must be > 0")
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size,
                              num_workers=cfg.loader_workers)
    val_loader = DataLoader(val_ds, batch_size=1, num_workers=cfg.loader_workers)
    steps = math.ceil(len(train_ds) / cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)

    logger = None
    mlflow_cfg = config.get("mlflow") or {}
    if rank == 0 and mlflow_cfg.get("run_id"):
        from ytmt.tracking import RunLogger

        logger = RunLogger(mlflow_cfg["tracking_uri"], mlflow_cfg["run_id"])
        logger.log_params(_logged_params(params, variant, shards, world, vgg.weights.mode,
                                         stage1, precision))
        logger.set_tags({"vgg_weights": vgg.weights.mode, "vgg_source": vgg.weights.source,
                         "variant": variant, "started_from_epochs": starts})
        for record in history:  # epochs checkpointed before a restart, if not yet logged
            logger.log_epoch(int(record["epoch"]), record)
    if rank == 0 and start_epoch:
        console(f"[{variant}] resumed after epoch {start_epoch}")

    progress = Progress(variant, cfg.epochs, steps, world * cfg.batch_size,
                        start_epoch=start_epoch, every=cfg.log_every_steps)
    ckpt_dirs = _CheckpointDirs(keep_last=bool(config.get("in_process")))
    for epoch in range(start_epoch, cfg.epochs):
        lr = learning_rate(epoch, cfg)
        for o in (opt, opt_d):
            for group in (o.param_groups if o is not None else []):
                group["lr"] = lr
        train_ds.set_epoch(epoch)
        net.train()
        sums: dict[str, float] = defaultdict(float)
        t0 = time.perf_counter()
        for step, batch in enumerate(train_loader, 1):
            if step > steps:
                break
            mixture, t, r = (batch[k].to(device).contiguous(memory_format=fmt)
                             for k in ("mixture", "transmission", "reflection"))
            terms, (t_hat, _) = generator_step(net, loss_fn, opt, (mixture, t, r), device,
                                               precision, disc)
            if disc is not None:
                opt_d.zero_grad(set_to_none=True)  # drops the generator step's D gradients
                with autocast(device, precision):
                    d_loss = criterion.discriminator_loss(disc, t_hat.detach().float(), t)
                d_loss.backward()
                _average_gradients(disc)
                opt_d.step()
                sums["loss_discriminator"] += d_loss.item() * mixture.shape[0]
            n = mixture.shape[0]
            sums["n"] += n
            sums["train_loss"] += terms["total"].item() * n
            for term in LOSS_TERMS:
                sums[f"loss_{term}"] += terms[term].detach().item() * n
            if rank == 0:
                progress.step(epoch + 1, step, terms["total"].item())
        train_time = time.perf_counter() - t0
        sums = _all_reduce_sum(sums, device)
        train_n = sums.pop("n")
        val_sums, samples = _validate(model, val_loader, device,
                                      cfg.sample_count if rank == 0 else 0)
        val_sums = _all_reduce_sum({k: val_sums.get(k, 0.0) for k in (*VAL_KEYS, "n")},
                                   device)
        val_n = val_sums.pop("n")
        record = {"epoch": epoch + 1, "lr": lr,
                  "images_per_s": train_n / max(train_time, 1e-9),
                  **{k: v / train_n for k, v in sums.items()},
                  **{k: v / val_n for k, v in val_sums.items()}}
        history.append(record)

        ckpt_dir = ckpt_dirs.new()
        checkpoint = None
        if rank == 0:
            save_checkpoint(ckpt_dir / CHECKPOINT_FILE, model, spec, {
                "epoch": epoch + 1, "lr": lr, "history": history, "starts": starts,
                "optimizer": opt.state_dict(),
                "discriminator": ({k: v.cpu() for k, v in disc.state_dict().items()}
                                  if disc is not None else None),
                "optimizer_d": opt_d.state_dict() if opt_d is not None else None})
            checkpoint = ray.train.Checkpoint.from_directory(str(ckpt_dir))
        ray.train.report(record, checkpoint=checkpoint)
        ckpt_dirs.done(ckpt_dir)

        if rank == 0:
            console(f"[{variant}] epoch {epoch + 1}/{cfg.epochs} loss {record['train_loss']:.4f} "
                    f"val PSNR T {record['val_psnr_t']:.2f} dB "
                    f"(input {record['val_psnr_t_input']:.2f}) R {record['val_psnr_r']:.2f} dB, "
                    f"{record['images_per_s']:.1f} img/s, ETA {progress.eta()}")
        if logger is not None:
            logger.log_epoch(epoch + 1, record)
            last = epoch + 1 == cfg.epochs
            if (epoch + 1) % cfg.sample_every == 0 or last:
                _log_figures(logger, variant, epoch + 1, samples, history)


def _log_figures(logger, variant: str, epoch: int, samples: list[list[np.ndarray]],
                 history: list[dict[str, float]]) -> None:
    """The validation sample grid of this epoch as an image at ``step=epoch`` (key
    ``validation_samples``: the UI's step slider walks through the epochs) and the loss
    curves so far as an artifact."""
    logger.log_image(sample_grid_png(samples, f"{variant} epoch {epoch}"),
                     key="validation_samples", step=epoch)
    with tempfile.TemporaryDirectory(prefix="ytmt-fig-") as d:
        curves = atomic_write_bytes(Path(d) / "loss_curves.png", curves_png(history, variant))
        logger.log_artifact(curves, "curves")
