"""Building blocks of a training run that need no Ray: the seeded
model/criterion/discriminator, the learning-rate schedule, the optimiser, ``torch.compile``
(params with overrides: :func:`ytmt.params.resolve_params`). Benchmarks import these on
machines without Ray (the step itself: :mod:`ytmt.train.step`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ytmt.archs import SeparationModel, VGG19Features, build_model, load_vgg19
from ytmt.archs.discriminator import Discriminator
from ytmt.losses import SeparationLoss
from ytmt.train.config import TrainConfig


def learning_rate(epoch: int, cfg: TrainConfig) -> float:
    """Learning rate of 0-based ``epoch``: ``lr · gamma^(number of milestones ≤ epoch)``."""
    return cfg.lr * cfg.lr_gamma ** sum(epoch >= m for m in cfg.lr_milestones)


@dataclass
class Components:
    """What a worker trains: the model, its criterion, the optional discriminator, and the
    ONE VGG-19 that the hypercolumn and the perceptual loss share (its ``.weights`` say which
    weights were actually loaded)."""

    model: SeparationModel
    criterion: SeparationLoss
    discriminator: Discriminator | None
    vgg: VGG19Features


def build_components(params, variant: str, warn_random_vgg: bool = True,
                     make_vgg: Callable[[], VGG19Features] | None = None) -> Components:
    """Components with their initial weights, seeded by ``params.seed``: every rank builds
    the same network (DDP broadcasts rank 0's weights anyway). ``warn_random_vgg`` False:
    the caller has already said, once, that VGG falls back to random weights
    (:func:`ytmt.archs.vgg.warn_if_random`). ``make_vgg``: builds the frozen VGG-19 instead of
    loading one per ``model.vgg_*`` (what a cluster driver shipped: :mod:`ytmt.cluster`)."""
    mcfg = params.model
    torch.manual_seed(params.seed)
    if make_vgg is not None:
        vgg = make_vgg()
    else:
        vgg = load_vgg19(mcfg.vgg_weights, mcfg.vgg_path, mcfg.vgg_seed, warn=warn_random_vgg)
    model = build_model(variant, width=mcfg.width, hypercolumn=mcfg.hypercolumn, vgg=vgg,
                        plain_layers=mcfg.plain_layers, fuse_streams=params.train.fuse_streams)
    criterion = SeparationLoss(params.loss, vgg)
    use_gan = params.train.gan and params.loss.adversarial > 0
    disc = Discriminator(3, params.train.discriminator_width) if use_gan else None
    return Components(model, criterion, disc, vgg)


def make_optimizer(parameters, cfg: TrainConfig, device: torch.device) -> torch.optim.Adam:
    """Adam with the recipe's ``lr``, ``betas`` and ``adam_eps`` for ``parameters`` (fp32) on
    ``device``; the fused implementation (one kernel over all tensors) where torch has one."""
    fused = device.type in ("cpu", "cuda") or None
    return torch.optim.Adam(parameters, lr=cfg.lr, betas=(cfg.betas[0], cfg.betas[1]),
                            eps=cfg.adam_eps, fused=fused)


def compile_for_training(net: nn.Module, criterion: nn.Module,
                         cfg: TrainConfig) -> tuple[nn.Module, nn.Module]:
    """``(net, criterion)`` wrapped in ``torch.compile`` when ``train.compile`` (else as they
    are). Give it the DDP-wrapped model: compiled after DDP, dynamo splits the graph at DDP's
    gradient buckets so communication overlaps the backward. Checkpoint and validate the
    unwrapped model (its parameter names carry no ``_orig_mod.`` prefix)."""
    if not cfg.compile:
        return net, criterion
    mode = cfg.compile_mode if cfg.compile_backend == "inductor" else None
    return (torch.compile(net, backend=cfg.compile_backend, mode=mode),
            torch.compile(criterion, backend=cfg.compile_backend, mode=mode))
