"""One training step and one epoch of steps: what the loop runs and the benchmarks time.

:func:`train_step` is the seam BasicSR calls ``optimize_parameters``: the generator update
(forward, loss, backward, Adam step), then, with ``train.gan``, the discriminator update.
The discriminator's parameters are frozen (``requires_grad`` False) while the generator's
adversarial loss is computed and back-propagated: its gradient flows *through* D into T̂,
but D's own gradients, which D's update would discard anyway, are never computed.

Nothing here imports Ray: the benchmarks run it on machines without it. Under DDP (more
than one process) the generator's gradients are averaged by the DDP wrapper, the
discriminator's by :func:`average_gradients`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset, default_collate

from ytmt.precision import autocast, resolve_precision
from ytmt.train.components import Components, compile_for_training, make_optimizer
from ytmt.train.config import TrainConfig

LOSS_TERMS = ("rec", "perceptual", "exclusion", "adversarial")
Images = tuple[Tensor, Tensor, Tensor]  # (mixture, T, R), each (B,3,H,W) in [0,1]


# --------------------------------------------------------------------------- distributed

def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Sum ``values`` over all ranks (identity on one worker)."""
    if not distributed():
        return dict(values)
    keys = sorted(values)
    buf = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(buf)
    return dict(zip(keys, buf.tolist(), strict=True))


def average_gradients(module: nn.Module) -> None:
    """Mean of ``module``'s gradients over ranks (the discriminator is not DDP-wrapped: it
    runs several forwards per backward, which DDP's reducer does not allow)."""
    if not distributed():
        return
    world = dist.get_world_size()
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


# --------------------------------------------------------------------------- the step

@dataclass
class TrainStep:
    """What a step updates. ``net`` and ``loss_fn``: the model and criterion as called (DDP-
    wrapped, compiled, or as they are); ``criterion``: the plain criterion (the
    discriminator's loss); ``precision``: resolved (fp32 or bf16)."""

    net: nn.Module
    loss_fn: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    precision: str
    discriminator: nn.Module | None = None
    optimizer_d: torch.optim.Optimizer | None = None

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [o for o in (self.optimizer, self.optimizer_d) if o is not None]


def build_step(parts: Components, net: nn.Module, cfg: TrainConfig,
               device: torch.device) -> TrainStep:
    """The step of ``parts`` training ``net`` (``parts.model`` on ``device``, possibly DDP-
    wrapped): criterion and discriminator moved to ``device``, ``torch.compile`` per
    ``train.compile``, Adam for the model's trainable parameters and for D."""
    parts.criterion.to(device)
    net, loss_fn = compile_for_training(net, parts.criterion, cfg)
    opt = make_optimizer(parts.model.trainable_parameters(), cfg, device)
    disc, opt_d = parts.discriminator, None
    if disc is not None:
        fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
        disc.to(device, memory_format=fmt)
        opt_d = make_optimizer(disc.parameters(), cfg, device)
    return TrainStep(net, loss_fn, parts.criterion, opt, device,
                     resolve_precision(cfg.precision, device), disc, opt_d)


def generator_update(step: TrainStep, batch: Images) -> tuple[dict[str, Tensor], Tensor]:
    """Forward and loss under ``step.precision`` (the loss sees fp32 images; under bf16 its
    VGG convs still run in bf16), backward, optimiser step, with the discriminator frozen.
    Returns the loss terms and T̂."""
    mixture, t, r = batch
    disc = step.discriminator
    if disc is not None:
        disc.requires_grad_(False)
    try:
        with autocast(step.device, step.precision):
            t_hat, r_hat = step.net(mixture)
            terms = step.loss_fn(t_hat.float(), r_hat.float(), t, r, mixture, disc)
        step.optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
    finally:
        if disc is not None:
            disc.requires_grad_(True)
    step.optimizer.step()
    return terms, t_hat


def discriminator_update(step: TrainStep, t_hat: Tensor, t: Tensor) -> Tensor:
    """One RaGAN update of the discriminator on real T vs the (detached) T̂."""
    disc, opt_d = step.discriminator, step.optimizer_d
    opt_d.zero_grad(set_to_none=True)
    with autocast(step.device, step.precision):
        d_loss = step.criterion.discriminator_loss(disc, t_hat.detach().float(), t)
    d_loss.backward()
    average_gradients(disc)
    opt_d.step()
    return d_loss


def train_step(step: TrainStep, batch: Images) -> dict[str, Tensor]:
    """One training step on ``batch`` = (mixture, T, R), each (B,3,H,W) in [0,1]: the
    generator update, then the discriminator's when there is one. Returns the generator's
    loss terms (``total``, :data:`LOSS_TERMS`) and, with a discriminator, ``discriminator``."""
    terms, t_hat = generator_update(step, batch)
    if step.discriminator is not None:
        terms = {**terms, "discriminator": discriminator_update(step, t_hat, batch[1])}
    return terms


# --------------------------------------------------------------------------- the epoch

class SampleBatches:
    """Batches of ``batch_size`` samples of ``dataset`` (an IterableDataset of sample dicts)
    read by ``workers`` DataLoader workers: the workers yield samples and batches are formed
    here, so every batch is full but the epoch's last. (Batched in the workers, each worker
    would end on a partial batch of its own and an epoch would take more batches than
    ``ceil(len / batch_size)``.) Each worker keeps up to two batches' worth of samples
    ready."""

    def __init__(self, dataset: IterableDataset, batch_size: int, workers: int) -> None:
        self.dataset, self.batch_size = dataset, batch_size
        prefetch = {"prefetch_factor": 2 * batch_size} if workers else {}
        self.loader = DataLoader(dataset, batch_size=None, num_workers=workers, **prefetch)

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self) -> Iterator[dict]:
        samples = iter(self.loader)
        while chunk := list(islice(samples, self.batch_size)):
            yield default_collate(chunk)


def train_epoch(step: TrainStep, batches: Iterable[dict], steps: int,
                memory_format: torch.memory_format = torch.contiguous_format,
                on_step: Callable[[int, float], None] | None = None) -> dict[str, float]:
    """Up to ``steps`` training steps over ``batches``. Returns this rank's sums over its
    samples: ``n`` (samples), ``train_loss``, ``loss_<term>`` and, with a discriminator,
    ``loss_discriminator``, each weighted by the batch size. ``on_step(step, loss)`` after
    each step (1-based)."""
    step.net.train()
    sums: dict[str, float] = defaultdict(float)
    for i, batch in enumerate(batches, 1):
        if i > steps:
            break
        images = tuple(batch[k].to(step.device).contiguous(memory_format=memory_format)
                       for k in ("mixture", "transmission", "reflection"))
        terms = train_step(step, images)
        n = images[0].shape[0]
        sums["n"] += n
        sums["train_loss"] += terms["total"].item() * n
        for term in LOSS_TERMS:
            sums[f"loss_{term}"] += terms[term].detach().item() * n
        if "discriminator" in terms:
            sums["loss_discriminator"] += terms["discriminator"].item() * n
        if on_step is not None:
            on_step(i, terms["total"].item())
    return sums
