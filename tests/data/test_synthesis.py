"""Synthesis into shards (:mod:`ytmt.data.synthesis`): one chunk, the shard set it writes,
resuming an interrupted run, real pairs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ytmt.data.config import FetchConfig
from ytmt.data.layout import PairFiles, find_pairs
from ytmt.data.pairing import Item, Task
from ytmt.data.reader import check_shards
from ytmt.data.shards import MANIFEST, shard_set_key
from ytmt.data.sources import fetch_images, read_index
from ytmt.data.synthesis import fingerprint, run_task, synthesize_shards

from .conftest import TINY, smooth_photo


def table(root, split):
    parts = sorted((root / split).glob("part-*.parquet"))
    return pq.read_table(parts[0] if len(parts) == 1 else parts).to_pandas()


def images(df, column):
    n, h, w = len(df), int(df.height.iloc[0]), int(df.width.iloc[0])
    return np.frombuffer(b"".join(df[column]), np.uint8).reshape(n, h, w, 3)


# ------------------------------------------------------------------ one chunk


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
        "train": 24, "val": 8, "test": 8, "real_train": 0, "real_val": 0, "photos": 4}
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
    mixture_parts = [p for s in ("train", "val", "test") for p in (root / s).glob("part-*")]
    assert metrics["resumed_parts"] == len(mixture_parts) - 1
    assert metrics["written_rows"] == 8
    assert not list(root.rglob("*.tmp"))
    assert {p.name: p.read_bytes() for p in sorted((root / "train").glob("*.parquet"))} == \
        reference


def stored_png_photos(folder, seed: int, n: int = 8):
    """PNGs without compression: the file size depends only on the image size, so a photo
    replaced by another of the same size keeps its byte count."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(smooth_photo(rng, 40, 48)).save(folder / f"p{i}.png", compress_level=0)


def test_a_photo_replaced_by_one_of_the_same_size_is_not_resumed(tmp_path):
    stored_png_photos(tmp_path / "src", seed=0)
    images = tmp_path / "images"
    fetch_images(FetchConfig(source="folder", folder=str(tmp_path / "src"), min_side=16), images)
    out = tmp_path / "shards"
    synthesize_shards(images, out, TINY, seed=0)
    replaced = images / "p3.png"
    size = replaced.stat().st_size
    stored_png_photos(tmp_path / "other", seed=1)
    replaced.write_bytes((tmp_path / "other" / "p3.png").read_bytes())
    assert replaced.stat().st_size == size  # what the old fingerprint looked at
    (out / MANIFEST).unlink()  # as an interrupted run leaves it
    metrics = synthesize_shards(images, out, TINY, seed=0)
    assert metrics["resumed_parts"] == 0  # every part used the old photo's pixels
    fresh = tmp_path / "fresh"
    synthesize_shards(images, fresh, TINY, seed=0)
    for part in sorted(fresh.rglob("part-*.parquet")):
        assert (out / part.relative_to(fresh)).read_bytes() == part.read_bytes(), part


def test_fingerprint_follows_the_code_and_libraries_that_make_the_bytes(images_dir, tmp_path,
                                                                         monkeypatch):
    import ytmt.data.mixing
    import ytmt.data.pairing
    import ytmt.data.shards
    import ytmt.data.sources
    import ytmt.data.synthesis

    entries = read_index(images_dir)
    base = fingerprint(TINY, 0, entries, [])
    assert fingerprint(TINY, 0, entries, []) == base and fingerprint(TINY, 1, entries, []) != base
    # an edit to the synthesis, its plan or model, the shard writer or the image decoder
    for module in (ytmt.data.synthesis, ytmt.data.pairing, ytmt.data.mixing, ytmt.data.shards,
                   ytmt.data.sources):
        edited = tmp_path / Path(module.__file__).name
        edited.write_text(Path(module.__file__).read_text() + "\n# edited\n")
        with monkeypatch.context() as m:
            m.setattr(module, "__file__", str(edited))
            assert fingerprint(TINY, 0, entries, []) != base, module.__name__
    with monkeypatch.context() as m:
        m.setattr(cv2, "__version__", "0.0.0")  # resampling and blur code
        assert fingerprint(TINY, 0, entries, []) != base
    # a real pair whose image is replaced by one of the same size
    for name in ("b.png", "t.png"):
        Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(tmp_path / name, compress_level=0)
    pair = PairFiles("p0", tmp_path / "b.png", tmp_path / "t.png", None)
    with_pair = fingerprint(TINY, 0, entries, [pair])
    Image.fromarray(np.full((40, 48, 3), 9, np.uint8)).save(tmp_path / "b.png", compress_level=0)
    assert fingerprint(TINY, 0, entries, [pair]) != with_pair


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


def test_real_pairs_stay_out_of_the_mixtures(images_dir, shards, tmp_path):
    """Real pairs go to ``real_train`` / ``real_val`` (tests/data/test_real_and_fresh.py),
    never into the synthetic splits: the mixtures are those of a set without them."""
    rng = np.random.default_rng(3)
    real = tmp_path / "real_train"
    for sub in ("blended", "transmission_layer"):
        (real / sub).mkdir(parents=True)
    for i in range(3):
        t = smooth_photo(rng, 50, 70)
        Image.fromarray(t).save(real / "transmission_layer" / f"p{i}.png")
        Image.fromarray(t).save(real / "blended" / f"p{i}.png")
    out = tmp_path / "shards"
    metrics = synthesize_shards(images_dir, out, TINY, 0, find_pairs(real))
    assert metrics["real_pairs"]["train"] == 3 and metrics["splits"]["real_train"]["rows"] == 3
    for split in ("train", "val", "test"):
        df = table(out, split)
        assert not df.is_real.any() and set(df.source) == {"synthetic"}
        assert df.drop(columns=["id"]).equals(table(shards, split).drop(columns=["id"]))


def _marked_task(task, cfg, marks):
    """Stands in for run_task in the pool: records that ``task`` started."""
    (marks / f"{task}").write_text("")
    return task


def test_the_pool_runs_at_most_two_tasks_per_worker_ahead_of_the_writer(tmp_path,
                                                                         monkeypatch):
    """Finished chunks must not pile up in the parent while it writes (issue 13's scale
    bench: the parent's memory grew with the number of mixtures under Pool.imap)."""
    import time
    from functools import partial

    import ytmt.data.synthesis as synthesis

    monkeypatch.setattr(synthesis, "run_task", partial(_marked_task, marks=tmp_path))
    from ytmt.data.config import SynthesizeConfig

    cfg = SynthesizeConfig(workers=2)
    results = synthesis.map_tasks(list(range(12)), cfg)
    for consumed in range(1, 13):
        assert next(results) == consumed - 1  # in task order
        time.sleep(0.05)  # a slow writer
        assert len(list(tmp_path.iterdir())) <= consumed + 2 * 2 - 1
    assert next(results, None) is None
