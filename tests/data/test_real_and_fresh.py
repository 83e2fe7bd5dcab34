"""Real pairs in the shards (``real_train`` / ``real_val``), their share of the training
samples (``train.real_share``), fresh mixtures per epoch (``train.mixtures: fresh``) and the
int64 offsets of the image columns."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from ytmt.data.layout import find_pairs
from ytmt.data.pairing import real_val_pair, split_real_pairs
from ytmt.data.reader import ShardDataset, _images, read_real_pairs, real_val_rows
from ytmt.data.shards import IMAGE_COLUMNS, raw_images
from ytmt.data.synthesis import synthesize_shards

from .conftest import TINY, smooth_photo

SHARE = 0.3
N_TRAIN = 400  # slots of one epoch for the share count


def make_real_pairs(folder, names, shape=(70, 90)):
    """Pairs ``I = min(T + R, 255)`` named ``<name>.png`` in the common layout."""
    rng = np.random.default_rng(5)
    for sub in ("blended", "transmission_layer"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for name in names:
        t = smooth_photo(rng, *shape)
        refl = (smooth_photo(rng, *shape) * 0.3).astype(np.uint8)
        Image.fromarray(t).save(folder / "transmission_layer" / f"{name}.png")
        Image.fromarray(np.minimum(t.astype(int) + refl, 255).astype(np.uint8)).save(
            folder / "blended" / f"{name}.png")
    return find_pairs(folder)


@pytest.fixture(scope="module")
def real_shards(tmp_path_factory, images_dir):
    """Shards with 9 real pairs (ids 1-9; id 3, 6, 9 held out by ``real_val: 3``), a broken
    pair, and enough train rows for a share count."""
    root = tmp_path_factory.mktemp("real")
    pairs = make_real_pairs(root / "real_train", [str(i) for i in range(1, 10)])
    (root / "real_train" / "blended" / "99.png").write_text("not an image")
    (root / "real_train" / "transmission_layer" / "99.png").write_text("not an image")
    cfg = replace(TINY, train_mixtures=N_TRAIN, chunk=40)
    metrics = synthesize_shards(images_dir, root / "shards", cfg, 0,
                                find_pairs(root / "real_train"), real_val=3)
    return root / "shards", pairs, metrics


def test_the_real_val_rule_holds_out_ids_0_mod_n_never_trained_on(real_shards):
    shards, pairs, metrics = real_shards
    assert metrics["real_pairs"] == {"found": 10, "used": 9, "train": 6, "val": 3,
                                     "skipped": 1, "skipped_by_reason": {"not_an_image": 1}}
    train = {n for n, _, _ in read_real_pairs(shards, "real_train")}
    val = {n for n, _, _ in read_real_pairs(shards, "real_val")}
    assert val == {"3", "6", "9"} and not train & val
    assert real_val_rows(shards) == 3
    # Zhang et al.'s numbering with the default every 9: ids 9, 18, ...; names that are not
    # numbers go by their position in name order; 0 holds nothing out
    assert [real_val_pair(f"{i}.jpg", 0, 9) for i in (9, 18, 10)] == [True, True, False]
    assert [real_val_pair(n, i, 2) for i, n in enumerate(["a", "b", "c"])] == [True, False,
                                                                               True]
    assert split_real_pairs(pairs, 0) == (sorted(pairs, key=lambda p: p.name), [])


def test_real_pairs_are_stored_whole_with_the_short_side_bounded(real_shards, tmp_path,
                                                                 images_dir):
    shards, pairs, _ = real_shards
    for name, blended, trans in read_real_pairs(shards, "real_train"):
        assert blended.shape == trans.shape == (48, 62, 3)  # 70x90 -> short side 48
        src = np.asarray(Image.open(next(p for p in pairs if p.name == name).blended))
        assert abs(blended.astype(float).mean() - src.mean()) < 2  # the same picture
    small = make_real_pairs(tmp_path / "small", ["1"], shape=(40, 44))
    synthesize_shards(images_dir, tmp_path / "s", TINY, 0, small)
    (_, blended, _), = read_real_pairs(tmp_path / "s", "real_train")
    assert np.array_equal(blended, np.asarray(Image.open(small[0].blended)))  # kept as is


def test_real_share_counts_and_draws(real_shards):
    shards, _, _ = real_shards
    ds = ShardDataset(shards, "train", crop=24, augment=True, seed=0, real_share=SHARE)
    samples = list(ds)
    real = [s for s in samples if s["is_real"]]
    n = len(samples)
    assert n == N_TRAIN
    bound = 4 * math.sqrt(n * SHARE * (1 - SHARE))  # 4 binomial standard deviations
    assert abs(len(real) - n * SHARE) < bound, len(real)
    for s in real:
        assert s["mixture"].shape == (3, 24, 24)
        # the authors' target: R = I − T, not clipped
        assert torch.allclose(s["reflection"], s["mixture"] - s["transmission"])
        assert s["id"].startswith("real_train-") and s["id"] not in {
            "real_train-3", "real_train-6", "real_train-9"}
    # a real pair drawn twice gets two different crops (the authors' fresh transform)
    by_pair: dict[str, list[torch.Tensor]] = {}
    for s in real:
        by_pair.setdefault(s["id"], []).append(s["transmission"])
    twice = [v for v in by_pair.values() if len(v) >= 2]
    assert twice and all(not torch.equal(v[0], v[1]) for v in twice)
    # a restart (a new dataset, same seed and epoch) replays the stream; another epoch not
    again = ShardDataset(shards, "train", crop=24, augment=True, seed=0, real_share=SHARE)
    replay = list(again)
    assert [s["id"] for s in replay] == [s["id"] for s in samples]
    assert all(torch.equal(a["mixture"], b["mixture"]) for a, b in zip(replay, samples,
                                                                        strict=True))
    again.set_epoch(1)
    assert [s["id"] for s in again] != [s["id"] for s in samples]


def test_the_real_draws_do_not_depend_on_dataloader_workers(real_shards):
    shards, _, _ = real_shards
    ds = ShardDataset(shards, "train", crop=16, augment=True, seed=2, real_share=SHARE)
    alone = sorted(s["id"] for s in ds if s["is_real"])
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    assert sorted(s["id"] for s in loader if s["is_real"]) == alone


def test_no_real_pairs_means_share_0_said_once(shards, caplog):
    with caplog.at_level("WARNING"):
        ds = ShardDataset(shards, "train", crop=16, augment=True, real_share=SHARE)
        ShardDataset(shards, "train", crop=16, augment=True, real_share=SHARE)
        ShardDataset(shards, "train", crop=16, augment=True, real_share=SHARE, rank=1,
                     world_size=2)
    said = [r for r in caplog.records if "real_share" in r.getMessage()]
    assert ds.real_share == 0.0 and not any(s["is_real"] for s in ds)
    assert len(said) <= 1  # once per process (an earlier test may have said it already)
    with pytest.raises(ValueError, match="real_share"):
        ShardDataset(shards, "train", real_share=1.5)


def test_real_val_yields_whole_pairs_aligned_to_16(real_shards):
    shards, _, _ = real_shards
    samples = list(ShardDataset(shards, "real_val"))
    assert [s["id"] for s in samples] == ["real_val-3", "real_val-6", "real_val-9"]
    for s in samples:
        assert s["mixture"].shape == (3, 48, 48) and bool(s["is_real"])  # 48x62 -> 48x48
        assert torch.allclose(s["reflection"], s["mixture"] - s["transmission"])


def test_fresh_epoch_0_equals_the_stored_mixtures_byte_for_byte(real_shards):
    shards, _, _ = real_shards
    stored = ShardDataset(shards, "train")
    fresh = ShardDataset(shards, "train", mixtures="fresh")
    for g in range(len(stored._groups)):
        a, b = stored._read_group(g), fresh._read_group(g)
        assert a[1] == b[1]
        for c in IMAGE_COLUMNS:
            assert a[0][c].dtype == b[0][c].dtype == np.uint8
            assert np.array_equal(a[0][c], b[0][c]), (g, c)
    fresh.set_epoch(1)
    one = fresh._read_group(0)
    assert not np.array_equal(one[0]["mixture"], stored._read_group(0)[0]["mixture"])
    # new pairs, same model: M == min(T + R, 255) byte for byte
    m, t, r = (one[0][c].astype(int) for c in IMAGE_COLUMNS)
    assert np.array_equal(m, np.minimum(t + r, 255))
    pairs_0 = [(i.t_id, i.r_id) for task in fresh.fresh_tasks(0) for i in task.items]
    pairs_1 = [(i.t_id, i.r_id) for task in fresh.fresh_tasks(1) for i in task.items]
    assert pairs_0 != pairs_1  # re-paired
    with pytest.raises(ValueError, match="fresh"):
        ShardDataset(shards, "val", mixtures="fresh")


def test_fresh_mixtures_stream_through_the_reader(real_shards):
    shards, _, _ = real_shards
    ds = ShardDataset(shards, "train", crop=16, augment=True, mixtures="fresh",
                      real_share=SHARE, rank=1, world_size=2)
    ds.set_epoch(3)
    samples = list(ds)
    assert len(samples) == N_TRAIN // 2
    assert 0 < sum(bool(s["is_real"]) for s in samples) < len(samples)


def test_image_columns_read_with_int64_offsets_and_in_several_chunks():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 4, 6, 3), dtype=np.uint8)
    wide = raw_images(imgs)
    assert wide.type == pa.large_binary()
    table = pa.table({"mixture": pa.chunked_array([wide.slice(0, 2), wide.slice(2)])})
    assert np.array_equal(_images(table, "mixture", 4, 6), imgs)
    # int32 offsets (format 1 sets), also as a chunked column
    narrow = pa.chunked_array([wide.cast(pa.binary()).slice(0, 3),
                               wide.cast(pa.binary()).slice(3)])
    assert np.array_equal(_images(pa.table({"mixture": narrow}), "mixture", 4, 6), imgs)
    with pytest.raises(ValueError, match="4x5x3"):
        _images(table, "mixture", 4, 5)


def test_stored_image_columns_are_large_binary(shards):
    part = next((shards / "train").glob("*.parquet"))
    schema = pq.read_schema(part)
    assert all(schema.field(c).type == pa.large_binary() for c in IMAGE_COLUMNS)
