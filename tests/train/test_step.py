"""The training step and epoch without Ray: the discriminator frozen during the generator's
update (same generator update as without freezing), D's own update, and an epoch seeing
every training sample once whatever ``train.loader_workers`` is."""

import copy

import pytest
import torch

from ytmt.params import resolve_params
from ytmt.train.components import build_components
from ytmt.train.loop import epoch_loaders, shard_dataset
from ytmt.train.step import (
    SampleBatches,
    build_step,
    discriminator_update,
    generate,
    generator_update,
    train_epoch,
    train_step,
)

from .conftest import tiny_params

CPU = torch.device("cpu")


def gan_step(**overrides):
    params = resolve_params(tiny_params(train__gan=True, train__discriminator_width=4,
                                        **overrides))
    parts = build_components(params, "ytmt-ucs")
    return build_step(parts, parts.model, params.train, CPU), parts


def batch(size=32, n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, 3, size, size, generator=g) * 0.6
    r = torch.rand(n, 3, size, size, generator=g) * 0.4
    return (t + r).clamp(0, 1), t, r


def test_the_generator_update_computes_no_discriminator_gradients():
    step, parts = gan_step()
    disc = parts.discriminator
    before = copy.deepcopy(disc.state_dict())
    prediction = generate(step, batch()[0])
    terms = generator_update(step, batch(), prediction)
    t_hat = prediction[0]
    assert terms["adversarial"] > 0
    assert all(p.grad is None for p in disc.parameters())
    assert all(p.requires_grad for p in disc.parameters())  # unfrozen for its own update
    assert all(torch.equal(v, before[k]) for k, v in disc.state_dict().items())
    discriminator_update(step, t_hat, batch()[1])
    assert all(p.grad is not None for p in disc.parameters())
    moved = [k for k, v in disc.state_dict().items()
             if v.is_floating_point() and not torch.equal(v, before[k])]
    assert moved


def test_freezing_the_discriminator_leaves_the_generator_update_unchanged():
    """The adversarial gradient still flows through the frozen D into T̂: the generator's
    update is the one computed with D's gradients (which were then thrown away)."""
    step, parts = gan_step()
    ref_model, ref_disc = copy.deepcopy(parts.model), copy.deepcopy(parts.discriminator)
    images = batch()
    generator_update(step, images, generate(step, images[0]))

    opt = torch.optim.Adam(ref_model.trainable_parameters(), **step.optimizer.defaults)
    terms = parts.criterion(*ref_model(images[0]), images[1], images[2], images[0], ref_disc)
    opt.zero_grad()
    terms["total"].backward()
    assert any(p.grad is not None for p in ref_disc.parameters())  # what freezing avoids
    opt.step()
    for (name, a), b in zip(parts.model.named_parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=name)


def test_train_step_reports_generator_and_discriminator_losses():
    step, _ = gan_step()
    terms = train_step(step, batch())
    assert {"total", "rec", "perceptual", "exclusion", "adversarial", "discriminator"} <= \
        set(terms)
    assert terms["discriminator"] > 0


@pytest.mark.parametrize("workers", [0, 2])
def test_an_epoch_sees_every_training_sample_once(shards, workers):
    """Batch 5 over 64 samples: 13 steps, the last of 4. With 2 loader workers of 32
    samples, each batching its own, the epoch would end on two partial batches (14) and
    the step guard dropped the last one."""
    params = resolve_params(tiny_params(train__batch_size=5, train__loader_workers=workers))
    parts = build_components(params, "ytmt-ucs")
    step = build_step(parts, parts.model, params.train, CPU)
    train_ds, batches, _, steps = epoch_loaders(shard_dataset, str(shards), params.train,
                                                params.seed, 0, 1)
    assert len(train_ds) == 64 and steps == 13
    sums = train_epoch(step, batches, steps)
    assert sums["n"] == 64


class _Numbered(torch.utils.data.IterableDataset):
    """Samples 0..n-1 as the reader yields them (uint8 images, an int16 reflection, a flag,
    an id), split between DataLoader workers in contiguous blocks of unequal length."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        workers, wid = (info.num_workers, info.id) if info else (1, 0)
        bounds = [round(self.n * k / workers) for k in range(workers + 1)]
        for i in range(bounds[wid], bounds[wid + 1]):
            yield {"mixture": torch.full((3, 2, 2), i % 256, dtype=torch.uint8),
                   "transmission": torch.full((3, 2, 2), i % 256, dtype=torch.uint8),
                   "reflection": torch.full((3, 2, 2), -i, dtype=torch.int16),
                   "is_real": torch.tensor(i % 2 == 0), "id": f"s{i}"}


@pytest.mark.parametrize("workers", [0, 2, 3])
def test_sample_batches_are_full_but_the_last_and_hold_every_sample_once(workers):
    """23 samples, batch 4: 6 batches, the first 5 full, every sample once with its fields
    intact, whatever the loader workers (each of which ends on a partial batch of its own:
    2 workers hold 12 + 11 samples, 3 workers 8 + 7 + 8). The control: a DataLoader's
    batches straight from 3 workers come [4, 4, 4, 4, 3, 4]."""
    batches = list(SampleBatches(_Numbered(23), 4, workers))
    assert [len(b["id"]) for b in batches] == [4, 4, 4, 4, 4, 3]
    ids = [int(i[1:]) for b in batches for i in b["id"]]
    assert sorted(ids) == list(range(23))
    for b in batches:
        numbers = torch.tensor([int(i[1:]) for i in b["id"]])
        assert b["mixture"].dtype == torch.uint8 and b["reflection"].dtype == torch.int16
        assert torch.equal(b["mixture"][:, 0, 0, 0].long(), numbers % 256)
        assert torch.equal(b["reflection"][:, 0, 0, 0].long(), -numbers)
        assert torch.equal(b["is_real"], numbers % 2 == 0)
