"""The synthesis model (design.md s2) and the shard set it writes."""

from __future__ import annotations

import contextlib
import json
import signal
from collections import Counter
from dataclasses import replace

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from scipy.signal import convolve2d

from ytmt.data.layout import find_pairs
from ytmt.data.reader import check_shards
from ytmt.data.shards import MANIFEST, shard_set_key
from ytmt.data.sources import read_index
from ytmt.data.synthesis import (
    Item,
    Photo,
    Task,
    blur,
    compose,
    gaussian_kernel,
    overflow_shift,
    pair_epochs,
    plan,
    rescaled_crop,
    rescaled_shape,
    run_task,
    synthesize_shards,
)

from .conftest import TINY, smooth_photo


def table(root, split):
    parts = sorted((root / split).glob("part-*.parquet"))
    return pq.read_table(parts[0] if len(parts) == 1 else parts).to_pandas()


def images(df, column):
    n, h, w = len(df), int(df.height.iloc[0]), int(df.width.iloc[0])
    return np.frombuffer(b"".join(df[column]), np.uint8).reshape(n, h, w, 3)


# ------------------------------------------------------------------ the model


def test_gaussian_kernel_matches_opencv():
    for sigma in (2.0, 3.3, 5.0):
        g = gaussian_kernel(11, sigma)
        assert g.sum() == pytest.approx(1.0)
        np.testing.assert_allclose(g, cv2.getGaussianKernel(11, sigma).ravel(), rtol=1e-6)


def test_blur_equals_direct_2d_convolution():
    rng = np.random.default_rng(0)
    x = rng.random((3, 40, 52, 3), dtype=np.float32)
    sigmas = np.array([2.0, 3.5, 5.0])
    out = blur(x, sigmas, 11)
    for i, s in enumerate(sigmas):
        k = np.outer(gaussian_kernel(11, s), gaussian_kernel(11, s))
        for c in range(3):
            ref = convolve2d(x[i, :, :, c].astype(np.float64), k, mode="same")
            np.testing.assert_allclose(out[i, :, :, c], ref, atol=2e-6)


def test_overflow_rule_on_a_bright_pair():
    t = np.full((1, 24, 24, 3), 0.8, np.float32)
    r = np.zeros_like(t)
    r[0, 8:16, 8:16] = 0.6  # M = 1.4 there, 0.8 elsewhere
    m = overflow_shift(t[0], r[0], 1.3)
    assert m == pytest.approx((1.4 - 1) * 1.3, rel=1e-5)
    assert overflow_shift(t[0] * 0.5, r[0], 1.3) == 0.0  # max(M) <= 1: no shift

    # Through compose: R blurred, then R = clip(R − m), M = clip(T + R), in bytes.
    t8 = np.full((1, 24, 24, 3), 204, np.uint8)  # 0.8
    r8 = np.zeros_like(t8)
    r8[0, 4:20, 4:20] = 255
    sigma, gamma = 2.5, 1.3
    mix, t_out, refl, shifts = compose(t8, r8, np.array([sigma]), np.array([gamma]), 11)
    rb = blur(r8.astype(np.float32) / 255, [sigma], 11)[0]
    s = t8[0] / 255.0 + rb
    expected_m = (s[s > 1].mean() - 1) * gamma
    assert shifts[0] == pytest.approx(expected_m, rel=1e-4)
    expected_r = np.clip(rb - expected_m, 0, 1)
    assert np.abs(refl[0] / 255.0 - expected_r).max() <= 0.5 / 255 + 1e-6
    assert np.array_equal(mix, np.minimum(t_out.astype(int) + refl, 255))
    assert (t_out == t8).all()


def test_compose_without_overflow_keeps_blurred_r():
    t8 = np.full((1, 16, 16, 3), 20, np.uint8)
    r8 = np.full((1, 16, 16, 3), 100, np.uint8)
    mix, _, refl, shifts = compose(t8, r8, np.array([3.0]), np.array([1.3]), 11)
    assert shifts[0] == 0
    rb = blur(r8.astype(np.float32) / 255, [3.0], 11)[0]
    assert np.abs(refl[0].astype(float) - np.rint(rb * 255)).max() <= 1
    assert np.array_equal(mix.astype(int), t8.astype(int) + refl)


def test_rescaled_shape_short_side_and_even_long_side():
    assert rescaled_shape(375, 500, 224) == (224, 298)
    assert rescaled_shape(500, 375, 300) == (400, 300)
    h, w = rescaled_shape(333, 500, 257)
    assert h == 257 and w % 2 == 0


@pytest.mark.parametrize("scale", [60, 120, 200])
@pytest.mark.parametrize("resample", ["pil", "opencv"])
def test_rescaled_crop_equals_rescale_then_crop(resample, scale):
    yy, xx = np.mgrid[0:90, 0:120]
    arr = np.stack([128 + 100 * np.sin(yy / 7 + xx / 11), 128 + 100 * np.cos(xx / 5),
                    128 + 60 * np.sin(yy / 4)], -1).astype(np.uint8)
    y, x, size = 5, 17, 40
    h1, w1 = rescaled_shape(90, 120, scale)
    full = np.asarray(Image.fromarray(arr).resize((w1, h1), Image.BICUBIC))
    ref = full[y:y + size, x:x + size]
    out = rescaled_crop(Photo.of(arr), scale, y, x, size, resample)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - ref).mean()
    if resample == "pil":  # the authors' filter over the exact box: identical
        assert diff == 0
    else:  # a different filter, box snapped to source pixels: close, and the right place
        wrong = np.abs(out.astype(int) - full[y + 4:y + 4 + size, x + 4:x + 4 + size]).mean()
        assert diff < 7 and diff < wrong / 2


# ------------------------------------------------------------------ planning


def test_plan_epochs_halves_and_disjoint_splits(images_dir):
    entries = read_index(images_dir)
    plans = plan(entries, [], TINY, seed=0)
    assert [len(plans[s]) for s in ("train", "val", "test")] == [24, 8, 8]
    photos = {s: {i.t_id for i in p} | {i.r_id for i in p} for s, p in plans.items()}
    assert not photos["train"] & photos["val"]
    assert not photos["train"] & photos["test"]
    assert not photos["val"] & photos["test"]
    by_epoch: dict[int, list] = {}
    for item in plans["train"]:
        by_epoch.setdefault(item.epoch, []).append(item)
    half = len(photos["train"]) // 2
    for items in list(by_epoch.values())[:-1]:
        assert len(items) == half
        ts, rs = {i.t_id for i in items}, {i.r_id for i in items}
        assert len(ts) == half and len(rs) == half and not ts & rs  # T half, R half
    assert len(by_epoch) == 24 // half
    assert by_epoch[0] != by_epoch[1]  # reshuffled each epoch


def test_too_few_photos_for_held_out_splits(images_dir, tmp_path):
    entries = read_index(images_dir)[:5]
    with pytest.raises(ValueError, match="held-out photos"):
        plan(entries, [], TINY, seed=0)
    assert len(plan(entries, [], replace(TINY, val_mixtures=0, test_mixtures=0), 0)["val"]) == 0


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail with TimeoutError instead of hanging when the block runs longer than this."""
    def expire(signum, frame):
        raise TimeoutError(f"did not return within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_pairing_fewer_than_two_photos_fails_instead_of_looping():
    rng = np.random.default_rng(0)
    one = [{"id": "a", "path": "a.png"}]
    assert pair_epochs(one, 0, rng) == [] and pair_epochs([], 0, rng) == []
    for photos in (one, []):
        with deadline(5), pytest.raises(ValueError, match=f"{len(photos)} photo\\(s\\) cannot "
                                                          "give 3 mixtures: pairing a "
                                                          "transmission with a reflection "
                                                          "needs at least 2"):
            pair_epochs(photos, 3, rng)


def test_drawn_scales_are_even_and_inside_the_range(images_dir):
    photos = read_index(images_dir)
    items = tuple(Item("synthetic", a["id"], a["path"], b["id"], b["path"], 0)
                  for a, b in zip(photos[:4], photos[4:8], strict=True))
    task = Task("train", 0, 0, items * 8, seed=0)
    odd_bounds = run_task(task, replace(TINY, size=33, scale_min=33, scale_max=36))
    assert set(odd_bounds.meta["scale"]) == {34, 36}
    assert odd_bounds.mixture.shape[1:] == (33, 33, 3)
    # a range without an even size (refused by the config) is refused here too, rather
    # than drawing a scale below the stored size
    with pytest.raises(ValueError, match="no even short side in \\[33, 33\\]"):
        run_task(task, replace(TINY, size=33, scale_min=33, scale_max=33))


# ------------------------------------------------------------------ shards


def test_shards_hold_the_model(shards):
    check_shards(shards)
    manifest = json.loads((shards / MANIFEST).read_text())
    assert manifest["size"] == [32, 32]
    assert {s: manifest["splits"][s]["rows"] for s in manifest["splits"]} == {
        "train": 24, "val": 8, "test": 8}
    df = table(shards, "train")
    m, t, r = images(df, "mixture"), images(df, "transmission"), images(df, "reflection")
    assert np.array_equal(m, np.minimum(t.astype(int) + r, 255))  # M == clip(T + R)
    assert df.id.is_unique and (df.split == "train").all() and not df.is_real.any()
    assert ((df.sigma >= 2) & (df.sigma <= 5)).all()
    assert np.allclose(df.gamma, 1.3) and (df.kernel_size == 11).all()
    assert ((df.scale >= 32) & (df.scale <= 48) & (df.scale % 2 == 0)).all()
    assert (df.overflow >= 0).all() and (df.t_id != df.r_id).all()
    assert set(df.flip) == {True, False}
    meta = pq.read_schema(sorted((shards / "train").glob("*.parquet"))[0]).metadata
    assert meta[b"encoding"] == b"raw-rgb8"


def test_same_seed_gives_byte_identical_shards_whatever_the_workers(images_dir, shards,
                                                                      tmp_path):
    out = tmp_path / "two_workers"
    synthesize_shards(images_dir, out, replace(TINY, workers=2), seed=0)
    for split in ("train", "val", "test"):
        for a in sorted((shards / split).iterdir()):
            assert (out / split / a.name).read_bytes() == a.read_bytes(), a
    other = tmp_path / "seed1"
    synthesize_shards(images_dir, other, TINY, seed=1)
    a = (shards / "train" / "part-00000.parquet").read_bytes()
    assert (other / "train" / "part-00000.parquet").read_bytes() != a


def test_interrupted_set_is_incomplete_and_a_rerun_finishes_it(images_dir, big_shards,
                                                                 tmp_path):
    import shutil

    root = tmp_path / "shards"
    shutil.copytree(big_shards, root)
    parts = sorted((root / "train").glob("part-*.parquet"))
    assert len(parts) > 2
    reference = {p.name: p.read_bytes() for p in parts}
    # What a kill leaves behind: no manifest, a missing part, a half-written temp file.
    (root / MANIFEST).unlink()
    parts[1].unlink()
    (root / "train" / (parts[2].name + ".tmp")).write_bytes(b"PAR1 half written")
    with pytest.raises(FileNotFoundError, match="incomplete"):
        check_shards(root)
    cfg = replace(TINY, train_mixtures=61, chunk=4, shard_mb=0.09)
    metrics = synthesize_shards(images_dir, root, cfg, seed=1)
    check_shards(root)
    assert metrics["resumed_parts"] == len(list(root.rglob("part-*.parquet"))) - 1
    assert metrics["written_rows"] == 8
    assert not list(root.rglob("*.tmp"))
    assert {p.name: p.read_bytes() for p in sorted((root / "train").glob("*.parquet"))} == \
        reference


def test_shard_set_key_follows_the_manifest_content(shards, big_shards, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(shards, copy)
    assert shard_set_key(copy) == shard_set_key(shards)  # content, not the path
    assert shard_set_key(big_shards) != shard_set_key(shards)
    (copy / MANIFEST).unlink()
    with pytest.raises(FileNotFoundError, match="manifest.json: missing, so the shard set is "
                                                "incomplete"):
        shard_set_key(copy)


def test_real_pairs_join_train_marked_real(images_dir, tmp_path):
    rng = np.random.default_rng(3)
    real = tmp_path / "real_train"
    for sub in ("blended", "transmission_layer"):
        (real / sub).mkdir(parents=True)
    for i in range(3):
        t = smooth_photo(rng, 50, 70)
        refl = (smooth_photo(rng, 50, 70) * 0.3).astype(np.uint8)
        Image.fromarray(t).save(real / "transmission_layer" / f"p{i}.png")
        Image.fromarray(np.minimum(t.astype(int) + refl, 255).astype(np.uint8)).save(
            real / "blended" / f"p{i}.png")
    (real / "blended" / "p3.png").write_text("not an image")  # broken pair: skipped
    (real / "transmission_layer" / "p3.png").write_text("not an image")
    out = tmp_path / "shards"
    metrics = synthesize_shards(images_dir, out, replace(TINY, real_copies=2), 0,
                                find_pairs(real))
    assert metrics["real_pairs"] == {"found": 4, "used": 3, "skipped": 1,
                                     "skipped_by_reason": {"not_an_image": 1}}
    df = table(out, "train")
    assert len(df) == 24 + 6 and df.is_real.sum() == 6
    reals = df[df.is_real]
    assert set(reals.source) == {"real"} and reals.r_id.isna().all()
    assert not df.is_real.iloc[-6:].all()  # scattered among the synthetic rows
    m, t, r = images(reals, "mixture"), images(reals, "transmission"), images(reals,
                                                                            "reflection")
    assert np.array_equal(r, np.clip(m.astype(int) - t, 0, 255))
    assert Counter(reals.t_id) == {"p0": 2, "p1": 2, "p2": 2}
