"""Fetch sources: skimage samples, folders full of bad files, a fake VOC over HTTP."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ytmt.data.config import FetchConfig
from ytmt.data.sources import DownloadError, download, fetch_images, read_index
from ytmt.imageio import ImageReadError, read

from .conftest import Server, smooth_photo

# ------------------------------------------------------------------ bad input


def make_bad_folder(folder: Path) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    (folder / "sub").mkdir()
    ok = smooth_photo(rng, 48, 64)
    Image.fromarray(ok).save(folder / "good.jpg")
    Image.fromarray(ok).save(folder / "sub" / "good2.png")
    buf = io.BytesIO()
    Image.fromarray(ok).save(buf, "JPEG")
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (folder / "text.jpg").write_text("this is not a JPEG")
    (folder / "empty.png").write_bytes(b"")
    Image.fromarray(ok[..., 0]).save(folder / "gray.png")
    rgba = np.dstack([ok, np.full(ok.shape[:2], 128, np.uint8)])
    Image.fromarray(rgba).save(folder / "rgba.png")
    Image.fromarray(ok).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(ok[..., 1].astype(np.uint16) * 257).save(folder / "deep16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    Image.fromarray(ok).save(folder / "rotated.jpg", exif=exif)
    Image.fromarray(ok[:10, :10]).save(folder / "tiny.png")
    (folder / "notes.txt").write_text("ignored: not an image suffix")


def load_rgb(path, min_side=1):
    img = read(path, min_side)
    return img.rgb, list(img.notes)


def test_load_rgb_conversions(tmp_path):
    make_bad_folder(tmp_path / "f")
    f = tmp_path / "f"
    arr, notes = load_rgb(f / "good.jpg")
    assert arr.shape == (48, 64, 3) and notes == []
    arr, notes = load_rgb(f / "rotated.jpg")
    assert arr.shape == (64, 48, 3) and notes == ["exif_rotated"]
    arr, notes = load_rgb(f / "deep16.png")
    assert arr.dtype == np.uint8 and "16bit" in notes
    ok = np.asarray(Image.open(f / "sub" / "good2.png"))
    np.testing.assert_array_equal(arr[..., 0], ok[..., 1])  # v·257 rounds back to v exactly
    arr, notes = load_rgb(f / "rgba.png")
    assert notes == ["alpha"] and arr.shape[2] == 3
    assert load_rgb(f / "cmyk.jpg")[1] == ["cmyk"]
    assert load_rgb(f / "gray.png")[1] == ["grayscale"]
    for name, reason in [("truncated.jpg", "truncated"), ("text.jpg", "not_an_image"),
                         ("empty.png", "not_an_image")]:
        with pytest.raises(ImageReadError) as err:
            load_rgb(f / name)
        assert err.value.reason == reason, name
    with pytest.raises(ImageReadError, match="too small") as err:
        load_rgb(f / "tiny.png", min_side=16)
    assert err.value.reason == "too_small"


def test_folder_source_counts_every_outcome(tmp_path):
    make_bad_folder(tmp_path / "f")
    cfg = FetchConfig(source="folder", folder=str(tmp_path / "f"), min_side=16)
    metrics = fetch_images(cfg, tmp_path / "images")
    assert metrics["images"] == 7 and metrics["skipped"] == 4 and metrics["converted"] == 5
    assert metrics["skipped_by_reason"] == {"not_an_image": 2, "too_small": 1,
                                            "truncated": 1}
    assert metrics["converted_by_reason"] == {"16bit": 1, "alpha": 1, "cmyk": 1,
                                              "exif_rotated": 1, "grayscale": 2}
    assert metrics["other_files_ignored"] == 1
    entries = read_index(tmp_path / "images")
    assert {e["id"] for e in entries} >= {"good", "sub__good2", "rotated", "deep16"}
    for e in entries:  # everything stored is clean 8-bit RGB, upright
        arr, notes = load_rgb(e["path"])
        assert notes == [] and (arr.shape[0], arr.shape[1]) == (e["height"], e["width"])
    assert (tmp_path / "images" / "good.jpg").read_bytes() == \
        (tmp_path / "f" / "good.jpg").read_bytes()  # clean files copied as they are
    assert not (tmp_path / "images.tmp").exists()


def test_folder_source_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        fetch_images(FetchConfig(source="folder", folder=str(tmp_path / "nope")),
                     tmp_path / "out")
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "x.jpg").write_text("junk")
    with pytest.raises(ValueError, match="only 0 usable"):
        fetch_images(FetchConfig(source="folder", folder=str(tmp_path / "one")),
                     tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tmp").exists()


def test_samples_source_is_offline(tmp_path):
    metrics = fetch_images(FetchConfig(samples=("astronaut", "coffee", "motorcycle_right"),
                                       limit=2), tmp_path / "images")
    assert metrics["images"] == 2
    assert [e["id"] for e in read_index(tmp_path / "images")] == ["astronaut", "coffee"]


def test_grey_samples_are_read_as_rgb():
    from ytmt.data.config import SAMPLE_GREY_IMAGES
    from ytmt.data.sources import sample_images

    (name, arr), = sample_images(("brick",))
    assert name == "brick" and arr.shape == (512, 512, 3) and arr.dtype == np.uint8
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()
    assert arr.std() > 10  # a photo, not a flat field
    assert {n for n, a in sample_images(SAMPLE_GREY_IMAGES) if a.ndim == 3} == set(
        SAMPLE_GREY_IMAGES)


def photo_folder(folder: Path, seed: int) -> FetchConfig:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(smooth_photo(rng, 40, 48)).save(folder / f"p{seed}_{i}.png")
    return FetchConfig(source="folder", folder=str(folder), min_side=16)


def test_a_new_fetch_replaces_the_folder_whole(tmp_path):
    out = tmp_path / "images"
    fetch_images(photo_folder(tmp_path / "a", 0), out)
    fetch_images(photo_folder(tmp_path / "b", 1), out)
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "p1_0.png", "p1_1.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "images"]  # no leftovers


def test_a_failed_commit_keeps_the_previous_images(tmp_path, monkeypatch):
    import os

    out = tmp_path / "images"
    fetch_images(photo_folder(tmp_path / "a", 0), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rename = os.replace

    def refuse_new_folder(src, dst):  # the new folder cannot be renamed into place
        if Path(src).name == "images.tmp":
            raise OSError("rename refused")
        return rename(src, dst)

    monkeypatch.setattr(os, "replace", refuse_new_folder)
    with pytest.raises(OSError, match="rename refused"):
        fetch_images(photo_folder(tmp_path / "b", 1), out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "images"]


def test_a_fetch_killed_mid_commit_is_cleaned_up_by_the_next(tmp_path):
    out = tmp_path / "images"
    fetch_images(photo_folder(tmp_path / "a", 0), out)
    out.rename(tmp_path / "images.old")  # killed after moving the old folder aside
    fetch_images(photo_folder(tmp_path / "b", 1), out)
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "p1_0.png", "p1_1.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "images"]


# ------------------------------------------------------------------ fake VOC over HTTP


def voc_tar(n: int, extra_members: bool = True) -> bytes:
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name: str, data: bytes, kind: bytes = tarfile.REGTYPE, link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, link, len(data)
            tar.addfile(info, io.BytesIO(data))

        for i in range(n):
            img = io.BytesIO()
            Image.fromarray(smooth_photo(rng, 40, 56)).save(img, "JPEG")
            add(f"VOCdevkit/VOC2012/JPEGImages/2008_{i:06d}.jpg", img.getvalue())
        if extra_members:
            add("VOCdevkit/VOC2012/Annotations/2008_000000.xml", b"<xml/>")
            add("../evil.jpg", b"escape")
            add("VOCdevkit/VOC2012/JPEGImages/../../../evil2.jpg", b"escape")
            add("VOCdevkit/VOC2012/JPEGImages/link.jpg", b"", tarfile.SYMTYPE, "/etc/passwd")
            add("VOCdevkit/VOC2012/JPEGImages/broken.jpg", b"not a jpeg")
    return buf.getvalue()


def voc_cfg(tmp_path: Path, payload: bytes, url: str, **kw) -> FetchConfig:
    return FetchConfig(source="voc2012", voc_url=url, voc_size=len(payload),
                       voc_md5=hashlib.md5(payload).hexdigest(),
                       cache_dir=str(tmp_path / "cache"), timeout_s=5, min_side=16, **kw)


def test_voc_download_check_and_safe_extraction(tmp_path):
    payload = voc_tar(5)
    with Server(payload) as srv:
        metrics = fetch_images(voc_cfg(tmp_path, payload, srv.url, limit=4),
                               tmp_path / "images")
    assert metrics["images"] == 4
    assert [e["id"] for e in read_index(tmp_path / "images")] == \
        [f"2008_{i:06d}" for i in range(4)]
    assert not list(tmp_path.rglob("evil*")) and not list(tmp_path.rglob("link*"))
    assert (tmp_path / "cache" / "VOC.tar").read_bytes() == payload
    # The verified tar is reused (no server now), and voc_tar skips the download.
    metrics = fetch_images(voc_cfg(tmp_path, payload, "http://127.0.0.1:9/VOC.tar"),
                           tmp_path / "again")
    assert metrics["images"] == 5 and metrics["skipped_by_reason"] == {"not_an_image": 1}
    cfg = replace(voc_cfg(tmp_path, payload, "http://127.0.0.1:9/VOC.tar"),
                  voc_tar=str(tmp_path / "cache" / "VOC.tar"), limit=2)
    assert fetch_images(cfg, tmp_path / "local")["images"] == 2


def test_dropped_connections_are_resumed_with_range(tmp_path):
    payload = voc_tar(3)
    with Server(payload, cut=len(payload) // 3 + 1) as srv:
        path = download(srv.url, tmp_path / "VOC.tar", len(payload),
                        hashlib.md5(payload).hexdigest(), retries=3, timeout_s=5)
    assert path.read_bytes() == payload
    assert len(srv.ranges) == 3 and srv.ranges[0] == 0 and srv.ranges[1] > 0


def test_truncated_download_is_a_clear_error_with_nothing_extracted(tmp_path):
    payload = voc_tar(3)
    with Server(payload, cut=100) as srv:
        cfg = voc_cfg(tmp_path, payload, srv.url, retries=1)
        with pytest.raises(DownloadError, match=f"truncated, got 200 of {len(payload)}"):
            fetch_images(cfg, tmp_path / "images")
    assert not (tmp_path / "images").exists() and not (tmp_path / "images.tmp").exists()
    assert not (tmp_path / "cache" / "VOC.tar").exists()
    assert (tmp_path / "cache" / "VOC.tar.part").stat().st_size == 200  # kept for resuming


def test_checksum_mismatch_deletes_the_download_and_extracts_nothing(tmp_path):
    payload = voc_tar(3)
    corrupt = payload[:5000] + bytes([payload[5000] ^ 0xFF]) + payload[5001:]
    with Server(corrupt) as srv:
        cfg = voc_cfg(tmp_path, payload, srv.url)
        with pytest.raises(DownloadError, match="md5 .* != expected"):
            fetch_images(cfg, tmp_path / "images")
    assert not (tmp_path / "images").exists()
    assert not list((tmp_path / "cache").iterdir())
    bad_tar = tmp_path / "bad.tar"
    bad_tar.write_bytes(corrupt)
    with pytest.raises(DownloadError, match="nothing was extracted"):
        fetch_images(replace(cfg, voc_tar=str(bad_tar)), tmp_path / "images")
    bad_tar.write_bytes(payload[:-512])
    with pytest.raises(DownloadError, match="truncated"):
        fetch_images(replace(cfg, voc_tar=str(bad_tar)), tmp_path / "images")
    assert not (tmp_path / "images").exists()


def test_metrics_json_is_serialisable(tmp_path):
    make_bad_folder(tmp_path / "f")
    m = fetch_images(FetchConfig(source="folder", folder=str(tmp_path / "f"), min_side=16),
                     tmp_path / "images")
    assert json.loads(json.dumps(m)) == m
