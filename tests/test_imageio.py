"""ytmt.imageio: one decoder for training, benchmarks, inference and serving.

Each awkward file (RGBA, 16-bit, greyscale, palette, truncated) goes through the training
path (fetch stage → stored photo → the photo synthesis decodes), the benchmark reader,
``ytmt separate``'s reader and serving's base64 decoder: all must see the same pixels, or
raise the same error. Then the policy's specifics."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps

from ytmt.data.benchmarks import read_pair
from ytmt.data.config import FetchConfig
from ytmt.data.layout import find_pairs
from ytmt.data.sources import fetch_images, read_index
from ytmt.data.synthesis import _photo
from ytmt.imageio import (
    ImageReadError,
    decode,
    decode_image,
    load_image,
    orient,
    probe_format,
    read,
)
from ytmt.inference import load_image as inference_load_image
from ytmt.serving import BadRequest, _b64_image

RNG = np.random.default_rng(0)
BASE = RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8)


def _png(arr: np.ndarray | Image.Image, **kw) -> bytes:
    im = arr if isinstance(arr, Image.Image) else Image.fromarray(arr)
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def _rgb16_png(arr16: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", arr16[..., [2, 1, 0, 3][:arr16.shape[2]]])
    assert ok
    return buf.tobytes()


def _palette_with_transparency() -> bytes:
    pal = Image.fromarray(BASE).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return _png(pal, transparency=int(np.asarray(pal)[0, 0]))


RGB16 = RNG.integers(0, 65536, (24, 32, 3), dtype=np.uint16)
AWKWARD = {
    "rgba": _png(np.dstack([BASE, RNG.integers(0, 256, (24, 32), dtype=np.uint8)])),
    "grey16": _png(RNG.integers(0, 65536, (24, 32), dtype=np.uint16)),
    "rgb16": _rgb16_png(RGB16),
    "rgba16": _rgb16_png(np.dstack([RGB16, RNG.integers(0, 65536, (24, 32), np.uint16)])),
    "grey": _png(BASE[..., 0]),
    "palette": _palette_with_transparency(),
}


@pytest.fixture(scope="module")
def awkward_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("awkward")
    for name, data in AWKWARD.items():
        (folder / f"{name}.png").write_bytes(data)
    good = io.BytesIO()
    Image.fromarray(BASE).save(good, "JPEG")
    (folder / "truncated.jpg").write_bytes(good.getvalue()[: len(good.getvalue()) // 2])
    return folder


def test_training_benchmark_inference_and_serving_see_the_same_pixels(awkward_folder,
                                                                       tmp_path):
    cfg = FetchConfig(source="folder", folder=str(awkward_folder), min_side=16)
    metrics = fetch_images(cfg, tmp_path / "images")
    assert metrics["skipped_by_reason"] == {"truncated": 1}
    stored = {e["id"]: e["path"] for e in read_index(tmp_path / "images")}
    assert sorted(stored) == sorted(AWKWARD)
    for name, data in AWKWARD.items():
        path = awkward_folder / f"{name}.png"
        trained = _photo(stored[name]).array  # what synthesis mixes
        assert trained.dtype == np.uint8 and trained.shape == (24, 32, 3), name
        as_float = trained.astype(np.float32) / 255
        np.testing.assert_array_equal(inference_load_image(path), as_float, err_msg=name)
        served = _b64_image(base64.b64encode(data).decode("ascii"), 0)
        np.testing.assert_array_equal(served, as_float, err_msg=name)
        bench = tmp_path / "bench" / name
        for sub in ("blended", "transmission_layer"):
            (bench / sub).mkdir(parents=True)
            (bench / sub / "x.png").write_bytes(data)
        pair = read_pair(find_pairs(bench)[0], align=False)
        np.testing.assert_array_equal(pair.transmission, as_float, err_msg=name)
        np.testing.assert_array_equal(pair.mixture, as_float, err_msg=name)


def test_truncated_file_is_the_same_error_everywhere(awkward_folder):
    path = awkward_folder / "truncated.jpg"
    for call in (lambda: read(path), lambda: inference_load_image(path)):
        with pytest.raises(ImageReadError) as err:
            call()
        assert err.value.reason == "truncated"
    # the server answers the same reason as a one-line HTTP 400 (BadRequest), naming the row
    with pytest.raises(BadRequest, match="^row 3: truncated"):
        _b64_image(base64.b64encode(path.read_bytes()).decode(), 3)


def test_alpha_is_composited_over_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 100, [[255, 0], [128, 51]]
    img = decode(_png(rgba))
    assert img.notes == ("alpha",)
    a = rgba[..., 3] / 255.0
    expected_red, expected_gb = np.round(100 * a + 255 * (1 - a)), np.round(255 * (1 - a))
    np.testing.assert_array_equal(img.rgb[..., 0], expected_red)
    np.testing.assert_array_equal(img.rgb[..., 2], expected_gb)
    opaque = np.dstack([BASE, np.full(BASE.shape[:2], 255, np.uint8)])
    img = decode(_png(opaque))
    assert img.notes == () and np.array_equal(img.rgb, BASE)  # an opaque alpha is dropped


def test_16_bit_is_rounded_to_8_bits_at_full_depth():
    expected = np.round(RGB16.astype(np.float64) * 255 / 65535).astype(np.uint8)
    img = decode(AWKWARD["rgb16"])
    assert img.notes == ("16bit",) and img.format == "PNG"
    np.testing.assert_array_equal(img.rgb, expected)  # not Pillow's dropped low byte
    buf = io.BytesIO()
    tifffile.imwrite(buf, RGB16, photometric="rgb")
    np.testing.assert_array_equal(decode(buf.getvalue()).rgb, expected)
    grey = np.array([[0, 128, 129, 65535]], np.uint16)
    img = decode(_png(grey))
    assert img.notes == ("16bit", "grayscale")
    np.testing.assert_array_equal(img.rgb[..., 1], [[0, 0, 1, 255]])  # 128/257 = 0.498


def test_grey_palette_and_cmyk_become_rgb():
    img = decode(AWKWARD["grey"])
    assert img.notes == ("grayscale",)
    np.testing.assert_array_equal(img.rgb, np.repeat(BASE[..., :1], 3, axis=2))
    pal = Image.fromarray(BASE).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    img = decode(_png(pal))
    assert img.notes == ("palette",)
    np.testing.assert_array_equal(img.rgb, np.asarray(pal.convert("RGB")))
    img = decode(AWKWARD["palette"])
    assert img.notes == ("palette", "alpha")
    assert (img.rgb[0, 0] == 255).all()  # the transparent palette entry is white
    buf = io.BytesIO()
    Image.fromarray(BASE).convert("CMYK").save(buf, "JPEG")
    assert decode(buf.getvalue()).notes == ("cmyk",)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _png(BASE, exif=exif)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    np.testing.assert_array_equal(orient(BASE, orientation), expected)
    img = decode(data)
    np.testing.assert_array_equal(img.rgb, expected)
    assert ("exif_rotated" in img.notes) == (orientation != 1)


def test_float_readers_and_errors(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(_png(BASE))
    out = load_image(path)
    assert out.dtype == np.float32 and np.array_equal(np.round(out * 255), BASE)
    np.testing.assert_array_equal(decode_image(_png(BASE)), out)
    assert probe_format(_png(BASE)) == "PNG"
    for data, reason in [(b"", "not_an_image"), (b"not an image", "not_an_image")]:
        with pytest.raises(ImageReadError) as err:
            decode(data, "junk.png")
        assert err.value.reason == reason and str(err.value).startswith("junk.png: ")
        with pytest.raises(ImageReadError):
            probe_format(data)
    with pytest.raises(ImageReadError) as err:
        read(path, min_side=25)
    assert err.value.reason == "too_small"
    buf = io.BytesIO()
    Image.fromarray(BASE[..., 0].astype(np.float32)).save(buf, "TIFF")  # mode F
    with pytest.raises(ImageReadError) as err:
        decode(buf.getvalue())
    assert err.value.reason == "unsupported_mode"
    with pytest.raises(FileNotFoundError, match="no such file"):
        read(tmp_path / "missing.png")


def test_decoder_and_data_stages_do_not_import_torch():
    code = ("import sys, ytmt.imageio, ytmt.data.sources, ytmt.data.synthesis, "
            "ytmt.data.benchmarks, ytmt.data.datasets\n"
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
