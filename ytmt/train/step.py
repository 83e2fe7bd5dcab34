"""One training step and one epoch of steps: what the loop runs and the benchmarks time.

:func:`train_step` is the seam BasicSR calls ``optimize_parameters`` and follows the
authors' order (``optimize_parameters`` of their ``YTMTNetModel``): the generator's forward,
then, with ``train.gan``, the discriminator's update on the detached T̂ of that forward,
then the generator's loss (its adversarial term through the *updated* discriminator),
backward and Adam step. The discriminator's parameters are frozen (``requires_grad``
False) while the generator's loss is back-propagated: its gradient flows *through* D into
T̂, but D's own gradients, which nothing would use, are never computed.

Host syncs: none in a step. The loss terms are summed on the device; a loss value reaches
the host only when the progress line asks for it (every ``train.log_every_steps`` steps) and
once per epoch for the sums. Batches may arrive as ``uint8`` (from pinned memory on CUDA):
they are copied with ``non_blocking=True`` and turned into floats in [0, 1] on the device.

Nothing here imports Ray: the benchmarks run it on machines without it. Under DDP (more
than one process) the generator's gradients are averaged by the DDP wrapper, the
discriminator's by :func:`average_gradients` in one flattened all_reduce.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset, default_collate

from ytmt.precision import autocast, resolve_precision
from ytmt.train.components import Components, compile_for_training, make_optimizer
from ytmt.train.config import TrainConfig

LOSS_TERMS = ("rec", "perceptual", "exclusion", "adversarial")
IMAGE_KEYS = ("mixture", "transmission", "reflection")
Images = tuple[Tensor, Tensor, Tensor]  # (mixture, T, R), each (B,3,H,W) in [0,1]
UINT8_SCALE = 1.0 / 255.0  # ytmt.data.reader.UINT8_SCALE (a test checks they agree)


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
    """Mean of ``module``'s gradients over ranks in ONE all_reduce of all of them flattened
    into a buffer (the discriminator is not DDP-wrapped: it runs several forwards per
    backward, which DDP's reducer does not allow). Parameters without a gradient are left
    out on every rank alike (the same module and loss on every rank)."""
    if not distributed():
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(dist.get_world_size())
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


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


def generate(step: TrainStep, mixture: Tensor) -> tuple[Tensor, Tensor]:
    """The generator's forward under ``step.precision``: (T̂, R̂), each (B,3,H,W)."""
    with autocast(step.device, step.precision):
        return step.net(mixture)


def generator_update(step: TrainStep, batch: Images,
                     prediction: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
    """Loss of ``prediction`` = (T̂, R̂) of ``batch`` (from :func:`generate`) under
    ``step.precision`` (the loss sees fp32 images; under bf16 its VGG convs still run in
    bf16), backward, optimiser step, with the discriminator frozen. Returns the loss terms."""
    mixture, t, r = batch
    t_hat, r_hat = prediction
    disc = step.discriminator
    if disc is not None:
        disc.requires_grad_(False)
    try:
        with autocast(step.device, step.precision):
            terms = step.loss_fn(t_hat.float(), r_hat.float(), t, r, mixture, disc)
        step.optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
    finally:
        if disc is not None:
            disc.requires_grad_(True)
    step.optimizer.step()
    return terms


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
    """One training step on ``batch`` = (mixture, T, R), each (B,3,H,W) in [0,1], in the
    authors' order: forward; the discriminator's update on this T̂ when there is one; the
    generator's update (adversarial term through the updated D). Returns the generator's
    loss terms (``total``, :data:`LOSS_TERMS`) and, with a discriminator, ``discriminator``
    (D's loss before its update), all device tensors (no host sync)."""
    prediction = generate(step, batch[0])
    d_loss = None
    if step.discriminator is not None:
        d_loss = discriminator_update(step, prediction[0], batch[1])
    terms = generator_update(step, batch, prediction)
    return terms if d_loss is None else {**terms, "discriminator": d_loss}


# --------------------------------------------------------------------------- the epoch

class SampleBatches:
    """Batches of ``batch_size`` samples of ``dataset`` (an IterableDataset of sample dicts)
    read by ``workers`` DataLoader workers, every batch full but the epoch's last.

    Each worker collates batches of its own samples: one shared-memory tensor per image and
    batch crosses to this process, where a sample at a time would cost one per image and
    sample (``bench/bench_reader.py``: 1.8x the samples/s with one loader process, 2.2x with
    two). A worker's last batch of the epoch may be partial; those are split into samples
    and batched again here, so an epoch takes ``ceil(len / batch_size)`` batches whatever
    ``workers`` is (each worker ending on a partial batch of its own would add steps). Each
    worker keeps up to two batches ready. ``pin_memory``: the images of each batch are put
    in page-locked memory, so that the copy to a CUDA device can run asynchronously
    (``non_blocking``)."""

    def __init__(self, dataset: IterableDataset, batch_size: int, workers: int,
                 pin_memory: bool = False) -> None:
        self.dataset, self.batch_size, self.pin_memory = dataset, batch_size, pin_memory
        prefetch = {"prefetch_factor": 2} if workers else {}
        self.loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers,
                                 **prefetch)

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def __iter__(self) -> Iterator[dict]:
        pending: list[dict] = []  # samples of the workers' partial batches
        for batch in self.loader:
            if len(batch[IMAGE_KEYS[0]]) == self.batch_size:
                yield self._pinned(batch)
                continue
            pending.extend(unbatch(batch))
            while len(pending) >= self.batch_size:
                yield self._pinned(default_collate(pending[:self.batch_size]))
                del pending[:self.batch_size]
        if pending:
            yield self._pinned(default_collate(pending))

    def _pinned(self, batch: dict) -> dict:
        if self.pin_memory:
            batch.update({k: batch[k].pin_memory() for k in IMAGE_KEYS})
        return batch


def unbatch(batch: dict) -> list[dict]:
    """The samples of a collated batch of sample dicts (tensors and lists per key)."""
    n = len(batch[IMAGE_KEYS[0]])
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


def to_device(batch: dict, device: torch.device,
              memory_format: torch.memory_format = torch.contiguous_format) -> Images:
    """(mixture, T, R) of a collated ``batch`` on ``device`` as float32 (B,3,H,W) in [0, 1]:
    integer images (``uint8``, and ``int16`` reflections that may be negative: the reader's
    ``uint8`` mode) are copied as they are (``non_blocking``: asynchronous from pinned
    memory) and scaled on the device by :data:`UINT8_SCALE`, the reader's own float
    conversion; float images are copied as they are."""
    images = []
    for key in IMAGE_KEYS:
        x = batch[key].to(device, non_blocking=True)
        if not x.is_floating_point():
            x = x.float().mul_(UINT8_SCALE)
        images.append(x.contiguous(memory_format=memory_format))
    return images[0], images[1], images[2]


LossProbe = Callable[[], float]


def train_epoch(step: TrainStep, batches: Iterable[dict], steps: int,
                memory_format: torch.memory_format = torch.contiguous_format,
                on_step: Callable[[int, LossProbe], None] | None = None) -> dict[str, float]:
    """Up to ``steps`` training steps over ``batches``. Returns this rank's sums over its
    samples: ``n`` (samples), ``train_loss``, ``loss_<term>`` and, with a discriminator,
    ``loss_discriminator``, each weighted by the batch size. ``on_step(step, loss)`` after
    each step (1-based); ``loss()`` gives the step's total loss as a float, a host sync that
    only a caller that shows it should pay (:class:`ytmt.train.report.Progress` does so once
    per logging interval). The sums are kept on the device and read once, at the end."""
    step.net.train()
    keys = ["train_loss", *(f"loss_{t}" for t in LOSS_TERMS)]
    sums: Tensor | None = None
    n = 0
    for i, batch in enumerate(batches, 1):
        if i > steps:
            break
        images = to_device(batch, step.device, memory_format)
        terms = train_step(step, images)
        values = [terms["total"], *(terms[t] for t in LOSS_TERMS)]
        if "discriminator" in terms:
            values.append(terms["discriminator"])
        batch_size = images[0].shape[0]
        weighted = torch.stack([v.detach().double() for v in values]) * batch_size
        sums = weighted if sums is None else sums + weighted
        n += batch_size
        if on_step is not None:
            total = terms["total"].detach()
            on_step(i, lambda total=total: total.item())
    if sums is None:
        return {"n": 0.0}
    if len(sums) > len(keys):
        keys.append("loss_discriminator")
    return {"n": float(n), **dict(zip(keys, sums.tolist(), strict=True))}
