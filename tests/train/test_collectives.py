"""Collectives of a training step under DDP (issue 27), two gloo processes on 127.0.0.1:
the discriminator's gradients are averaged in ONE all_reduce whatever its number of
tensors, equal to the old per-parameter mean; a whole GAN step (DDP generator, D) calls
exactly that one collective from Python (DDP's reducer averages the generator's)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "broadcast",
               "reduce_scatter", "reduce_scatter_tensor", "all_reduce_coalesced", "barrier")


def per_parameter_mean(module: nn.Module) -> None:
    """The old ``average_gradients``: one blocking all_reduce per parameter."""
    world = dist.get_world_size()
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


class CallCounter:
    """Counts calls of torch.distributed's collectives while installed."""

    def __init__(self, monkeypatch_like: list) -> None:
        self.calls: list[str] = []
        self.saved = monkeypatch_like

    def __enter__(self):
        for name in COLLECTIVES:
            original = getattr(dist, name)

            def wrapped(*a, _name=name, _original=original, **k):
                self.calls.append(_name)
                return _original(*a, **k)

            self.saved.append((name, original))
            setattr(dist, name, wrapped)
        return self

    def __exit__(self, *exc):
        for name, original in self.saved:
            setattr(dist, name, original)
        self.saved.clear()


def discriminator_gradients(rank: int, layers: int) -> list[dict]:
    """Per case: calls made by average_gradients, and its max deviation from the
    per-parameter mean."""
    from ytmt.train.step import average_gradients

    torch.manual_seed(0)
    disc = nn.Sequential(*[nn.Linear(5, 5) for _ in range(layers)])
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(rank + 1))
    disc(x).square().mean().backward()
    grads = [p.grad.clone() for p in disc.parameters()]
    per_parameter_mean(disc)
    want = [p.grad.clone() for p in disc.parameters()]
    for p, g in zip(disc.parameters(), grads, strict=True):
        p.grad = g.clone()
    with CallCounter([]) as counter:
        average_gradients(disc)
    deviation = max((p.grad - w).abs().max().item()
                    for p, w in zip(disc.parameters(), want, strict=True))
    moved = any(not torch.equal(g, w) for g, w in zip(grads, want, strict=True))
    return [{"tensors": 2 * layers, "calls": counter.calls, "deviation": deviation,
             "ranks_differed": moved}]


def gan_step_calls() -> dict:
    """A whole GAN training step of a DDP-wrapped tiny ytmt-ucs: the collectives it calls
    from Python, and whether D's gradients agree across ranks afterwards."""
    from torch.nn.parallel import DistributedDataParallel

    from tests.train.conftest import tiny_params
    from ytmt.params import resolve_params
    from ytmt.train.components import build_components
    from ytmt.train.step import build_step, train_step

    params = resolve_params(tiny_params(train__gan=True, train__discriminator_width=4))
    parts = build_components(params, "ytmt-ucs")
    net = DistributedDataParallel(parts.model)
    step = build_step(parts, net, params.train, torch.device("cpu"))
    g = torch.Generator().manual_seed(dist.get_rank() + 10)
    t, r = torch.rand(2, 3, 32, 32, generator=g) * 0.6, torch.rand(2, 3, 32, 32, generator=g) * 0.4
    with CallCounter([]) as counter:
        train_step(step, ((t + r).clamp(0, 1), t, r))
    grad = torch.cat([p.grad.reshape(-1) for p in parts.discriminator.parameters()])
    gathered = [torch.zeros_like(grad) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, grad)
    return {"calls": counter.calls, "d_grads_equal": torch.equal(gathered[0], gathered[1])}


def worker(rank: int, world: int, store_path: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    store = dist.FileStore(store_path, world)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world)
    try:
        result = {"linear": discriminator_gradients(rank, 1) + discriminator_gradients(rank, 6),
                  "step": gan_step_calls()}
    finally:
        dist.destroy_process_group()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("gloo")
    mp.spawn(worker, args=(2, str(tmp / "store"), str(tmp)), nprocs=2, join=True)
    return [json.loads((tmp / f"rank{r}.json").read_text()) for r in range(2)]


def test_discriminator_gradients_take_one_all_reduce_whatever_their_number(results):
    for rank in results:
        cases = rank["linear"]
        assert [c["tensors"] for c in cases] == [2, 12]
        for case in cases:
            assert case["calls"] == ["all_reduce"], case
            assert case["deviation"] <= 1e-7, case
            assert case["ranks_differed"]  # the ranks' gradients were not already equal


def test_a_gan_step_calls_one_collective_from_python(results):
    for rank in results:
        assert rank["step"]["calls"] == ["all_reduce"]
        assert rank["step"]["d_grads_equal"]
