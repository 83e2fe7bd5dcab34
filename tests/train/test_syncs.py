"""Host syncs of the training step (issue 27): none in a step that does not log, one loss
value per logging interval, the epoch's sums read once; and the uint8 batches the step
turns into floats on the device are the reader's float images exactly.

Syncs are counted two ways, since a CPU-only run has no device→host copy to see: a
``TorchDispatchMode`` records ``aten._local_scalar_dense`` (what ``.item()`` and ``if
tensor:`` run) and any copy to the CPU from another device, and ``Tensor.tolist``,
``Tensor.cpu``, ``Tensor.numpy`` and ``Tensor.item`` are wrapped while counting."""

from __future__ import annotations

import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import default_collate

from ytmt.params import resolve_params
from ytmt.progress import RunProgress
from ytmt.train.components import build_components
from ytmt.train.loop import epoch_loaders, shard_dataset
from ytmt.train.step import UINT8_SCALE, build_step, to_device, train_epoch

from .conftest import tiny_params

CPU = torch.device("cpu")
HOST_CALLS = ("tolist", "cpu", "numpy", "item")


class SyncCounter(TorchDispatchMode):
    """Records host syncs: ``_local_scalar_dense``, copies to CPU from another device, and
    calls of :data:`HOST_CALLS` on tensors (patched by :meth:`counting` for the test)."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten._local_scalar_dense.default:
            self.events.append("_local_scalar_dense")
        elif func in (torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default):
            src = args[1] if func is torch.ops.aten.copy_.default else args[0]
            dst = args[0].device if func is torch.ops.aten.copy_.default else \
                kwargs.get("device")
            if dst is not None and torch.device(dst).type == "cpu" and src.device.type != "cpu":
                self.events.append("device_to_host_copy")
        return func(*args, **kwargs)

    @contextlib.contextmanager
    def counting(self, monkeypatch):
        for name in HOST_CALLS:
            original = getattr(torch.Tensor, name)

            def wrapped(tensor, *a, _name=name, _original=original, **k):
                self.events.append(_name)
                return _original(tensor, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, wrapped)
        with self:
            yield self


def test_the_counter_sees_item_tolist_and_cpu(monkeypatch):
    """Control: what the step must not do is seen."""
    x = torch.ones(3)
    with SyncCounter().counting(monkeypatch) as counter:
        assert counter.events == []
        x.sum().item()
        assert "_local_scalar_dense" in counter.events and "item" in counter.events
        n = len(counter.events)
        x.tolist()
        x.cpu()
        assert counter.events[n:] == ["tolist", "cpu"]
        if x.sum() > 0:  # a tensor in a Python condition syncs too
            pass
        assert counter.events[-1] == "_local_scalar_dense"


def uint8_batches(n: int, size: int = 32, batch: int = 2, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        t = torch.randint(0, 150, (batch, 3, size, size), generator=g, dtype=torch.uint8)
        r = torch.randint(0, 100, (batch, 3, size, size), generator=g, dtype=torch.uint8)
        out.append({"mixture": t + r, "transmission": t, "reflection": r.short()})
    return out


def test_a_step_syncs_only_when_it_logs(monkeypatch):
    """A GAN step (generator and discriminator updates), 4 steps, a progress line every 2:
    a sync at step 2 only (its loss for the line; step 4 is the epoch's last, whose line
    the loop prints from the sums), then one read of the epoch's sums."""
    params = resolve_params(tiny_params(train__gan=True, train__discriminator_width=4))
    parts = build_components(params, "ytmt-ucs")
    step = build_step(parts, parts.model, params.train, CPU)
    lines: list[str] = []
    progress = RunProgress("t", 1, 4, 2, every=2, printer=lines.append)
    counter = SyncCounter()
    marks = [0]  # events so far after each step (its progress call included)

    def on_step(i, loss):
        progress.step(1, i, loss)
        marks.append(len(counter.events))

    with counter.counting(monkeypatch):
        sums = train_epoch(step, uint8_batches(4, size=16), 4, on_step=on_step)
        events = list(counter.events)
    per_step = [events[a:b] for a, b in zip(marks, marks[1:], strict=False)]
    assert len(lines) == 1 and "step 2/4" in lines[0]
    assert per_step == [[], ["item", "_local_scalar_dense"], [], []]
    assert events[marks[-1]:] == ["tolist"]  # the epoch's sums, read once
    assert sums["n"] == 8 and sums["loss_discriminator"] > 0


def test_uint8_batches_become_the_readers_float_images(shards):
    """The step sees exactly the images of the reader's float path."""
    from ytmt.data.reader import UINT8_SCALE as READER_SCALE
    from ytmt.data.reader import ShardDataset

    assert UINT8_SCALE == READER_SCALE
    kwargs = {"split": "train", "crop": 32, "augment": True, "seed": 3}
    as_float = list(ShardDataset(shards, **kwargs))[:5]
    as_bytes = list(ShardDataset(shards, uint8=True, **kwargs))[:5]
    assert as_bytes[0]["mixture"].dtype == torch.uint8
    assert as_bytes[0]["reflection"].dtype == torch.int16
    got = to_device(default_collate(as_bytes), CPU)
    want = default_collate(as_float)
    for key, image in zip(("mixture", "transmission", "reflection"), got, strict=True):
        assert image.dtype == torch.float32
        assert torch.equal(image, want[key]), key


def test_the_loop_reads_uint8_batches_pinned_only_for_cuda(shards):
    params = resolve_params(tiny_params(train__batch_size=4))
    cfg = params.train
    assert cfg.loader_workers is None  # auto
    _, batches, _, _ = epoch_loaders(shard_dataset, str(shards), cfg, 0, 0, 1)
    assert batches.loader.num_workers == 0 and batches.pin_memory is False
    first = next(iter(batches))
    assert first["mixture"].dtype == torch.uint8 and first["mixture"].shape == (4, 3, 32, 32)
    _, batches, val, _ = epoch_loaders(shard_dataset, str(shards), cfg, 0, 0, 1, "cuda")
    assert batches.pin_memory is True
    assert batches.loader.num_workers == val.num_workers == 4  # the per-GPU default
    fixed = resolve_params(tiny_params(train__loader_workers=1)).train
    assert fixed.resolved_loader_workers("cuda") == fixed.resolved_loader_workers("cpu") == 1
