"""The training reader: API, sharding across ranks and workers, augmentation, errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch.utils.data import DataLoader

from ytmt.data.reader import ShardDataset, check_shards
from ytmt.data.shards import MANIFEST


def ids(ds):
    return [s["id"] for s in ds]


def test_samples_have_the_documented_layout(shards):
    ds = ShardDataset(shards, split="train", crop=24, augment=True, seed=0)
    assert len(ds) == 24
    sample = next(iter(ds))
    for key in ("mixture", "transmission", "reflection"):
        x = sample[key]
        assert x.shape == (3, 24, 24) and x.dtype == torch.float32
        assert 0 <= x.min() and x.max() <= 1
    assert sample["is_real"].dtype == torch.bool and isinstance(sample["id"], str)


def test_augmentation_is_identical_on_m_t_r(shards):
    # M == clip(T + R) holds pixel for pixel only if crop and flip were the same for all.
    ds = ShardDataset(shards, split="train", crop=20, augment=True, seed=3)
    for s in ds:
        assert torch.allclose(s["mixture"], (s["transmission"] + s["reflection"]).clamp(0, 1),
                              atol=1e-6)


def test_full_size_and_centre_crop_for_evaluation(shards):
    full = next(iter(ShardDataset(shards, split="val", crop=None)))
    assert full["mixture"].shape == (3, 32, 32)
    centre = next(iter(ShardDataset(shards, split="val", crop=16)))
    assert torch.equal(centre["mixture"], full["mixture"][:, 8:24, 8:24])
    assert ids(ShardDataset(shards, "val")) == [f"val-{i:06d}" for i in range(8)]


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_ranks_get_equal_disjoint_shares(big_shards, world_size):
    per_rank = [ids(ShardDataset(big_shards, "train", crop=16, augment=True, seed=0,
                                 rank=r, world_size=world_size)) for r in range(world_size)]
    n = 61
    assert all(len(p) == -(-n // world_size) for p in per_rank)
    every = [i for p in per_rank for i in p]
    assert set(every) == {f"train-{i:06d}" for i in range(n)}  # nothing lost
    assert len(every) - len(set(every)) == len(every) - n < world_size  # only wrap padding
    for p in per_rank:
        assert len(set(p)) == len(p)


def test_dataloader_workers_split_a_rank_without_overlap(big_shards):
    ds = ShardDataset(big_shards, "train", crop=16, augment=True, seed=0, rank=1,
                      world_size=2)
    alone = sorted(ids(ds))
    loader = DataLoader(ds, batch_size=4, num_workers=2)
    got = sorted(i for batch in loader for i in batch["id"])
    assert got == alone and len(got) == len(ds)


def test_set_epoch_reshuffles_deterministically(big_shards):
    ds = ShardDataset(big_shards, "train", crop=16, augment=True, seed=0)
    e0 = ids(ds)
    ds.set_epoch(1)
    e1 = ids(ds)
    assert e0 != e1 and sorted(e0) == sorted(e1)
    ds.set_epoch(0)
    again = list(ds)
    assert [s["id"] for s in again] == e0
    first = next(iter(ShardDataset(big_shards, "train", crop=16, augment=True, seed=0)))
    assert torch.equal(again[0]["mixture"], first["mixture"])  # same crop and flip too
    other_seed = ids(ShardDataset(big_shards, "train", crop=16, augment=True, seed=5))
    assert other_seed != e0


def test_check_shards_errors(shards, tmp_path):
    check_shards(shards)
    with pytest.raises(FileNotFoundError, match="no shard folder"):
        check_shards(tmp_path / "nothing")
    root = tmp_path / "copy"
    shutil.copytree(shards, root)
    part = next((root / "train").glob("*.parquet"))
    part.write_bytes(part.read_bytes()[:-10])
    with pytest.raises(ValueError, match="truncated"):
        check_shards(root)
    part.unlink()
    with pytest.raises(FileNotFoundError, match="missing"):
        check_shards(root)
    manifest = json.loads((shards / MANIFEST).read_text())
    del manifest["splits"]["test"]
    shutil.rmtree(root)
    shutil.copytree(shards, root)
    (root / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="no split"):
        check_shards(root)
    with pytest.raises(ValueError, match="no split 'test'"):
        ShardDataset(root, "test")
    (root / MANIFEST).unlink()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        ShardDataset(root, "train")


def test_bad_arguments(shards):
    with pytest.raises(ValueError, match="crop = 33"):
        ShardDataset(shards, "train", crop=33)
    with pytest.raises(ValueError, match="rank"):
        ShardDataset(shards, "train", rank=2, world_size=2)
