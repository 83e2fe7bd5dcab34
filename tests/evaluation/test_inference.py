"""Inference: /16 padding, tiling with blending, image I/O (EXIF, grayscale, RGBA, 16-bit)."""

import io
import itertools
import math

import numpy as np
import pytest
import tifffile
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ytmt.checkpoint import model_from_checkpoint
from ytmt.inference import (
    ImageReadError,
    check_tiling,
    decode_image,
    encode_png,
    iter_tiles,
    load_image,
    save_png,
    separate,
    tile_count,
    tile_starts,
)
from ytmt.metrics import psnr_ssim


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return model_from_checkpoint(tiny_checkpoint)


class PointwiseSplit(nn.Module):
    """A per-pixel separator (no spatial context): tiling must reproduce it exactly."""

    def forward(self, x):
        return x ** 2, x - x ** 2


# --------------------------------------------------------------------------- tiling

@pytest.mark.parametrize("length,tile,overlap", [(100, 32, 8), (64, 32, 0), (33, 32, 16),
                                                 (1000, 256, 32), (20, 32, 8)])
def test_tiles_cover_with_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    covered = np.zeros(length, int)
    for s in starts:
        covered[s:s + min(tile, length)] += 1
    assert covered.min() >= 1 and starts[0] == 0
    assert starts[-1] + min(tile, length) == length
    for a, b in itertools.pairwise(starts):
        assert a + tile - b >= overlap  # neighbours share at least `overlap` pixels


@pytest.mark.parametrize("blend", ["cosine", "linear"])
def test_tiled_equals_untiled_for_a_pointwise_model(blend):
    rng = np.random.default_rng(0)
    image = rng.random((83, 117, 3)).astype(np.float32)
    t_full, r_full = separate(PointwiseSplit(), image, tile=None, device="cpu")
    seen = []
    t_tiled, r_tiled = separate(PointwiseSplit(), image, tile=32, overlap=8, blend=blend,
                                device="cpu", progress=lambda d, n: seen.append((d, n)))
    np.testing.assert_allclose(t_tiled, t_full, atol=1e-6)
    np.testing.assert_allclose(r_tiled, r_full, atol=1e-6)
    assert seen[-1] == (tile_count(83, 117, 32, 8),) * 2 == (len(seen),) * 2


class BoxBlurSplit(nn.Module):
    """T̂ = the mean of the (2ρ+1)² window (edges replicated), R̂ = x − T̂: a separator with a
    known receptive field, ρ pixels on each side."""

    def __init__(self, radius: int) -> None:
        super().__init__()
        self.radius = radius

    def forward(self, x):
        blurred = F.avg_pool2d(F.pad(x, (self.radius,) * 4, mode="replicate"),
                               2 * self.radius + 1, stride=1)
        return blurred, x - blurred


def ramp_weight(k: int, overlap: int, blend: str) -> float:
    """The blending weight ``k`` pixels in from a tile's inner edge (the module docstring's
    ramp: cosine or linear over the overlap)."""
    pos = (k + 0.5) / overlap
    return pos if blend == "linear" else 0.5 - 0.5 * math.cos(math.pi * pos)


def near_inner_edges(length: int, tile: int, overlap: int, radius: int) -> np.ndarray:
    """(length,) bool: within ``radius`` pixels of an edge a tile shares with a neighbour."""
    near = np.zeros(length, bool)
    for start in tile_starts(length, tile, overlap):
        if start > 0:
            near[start:start + radius] = True
        if start + tile < length:
            near[start + tile - radius:start + tile] = True
    return near


@pytest.mark.parametrize("blend", ["cosine", "linear"])
def test_tiles_are_exact_away_from_seams_and_blended_within_the_overlap(blend):
    """A ρ = 3 box blur, 48 px tiles overlapping by 16 on a 112x144 image (multiples of 16:
    no /16 padding): a tile's output is exact wherever the window stays inside the tile, so
    the tiled image equals the untiled one except within ρ of a tile's inner edge. There,
    inside the overlap, a wrong tile value (off by at most the window's share that fell
    outside, (ρ − k)/(2ρ + 1) for values in [0, 1]) carries at most the ramp's weight at k;
    two such edges meet at a corner."""
    radius, tile, overlap = 3, 48, 16
    image = np.random.default_rng(0).random((112, 144, 3)).astype(np.float32)
    model = BoxBlurSplit(radius)
    full = separate(model, image, tile=None, device="cpu")
    tiled = separate(model, image, tile=tile, overlap=overlap, blend=blend, device="cpu")
    rows = near_inner_edges(112, tile, overlap, radius)
    cols = near_inner_edges(144, tile, overlap, radius)
    seams = rows[:, None] | cols[None, :]
    covered = np.zeros((112, 144), int)
    for top, left, h, w in iter_tiles(112, 144, tile, overlap):
        covered[top:top + h, left:left + w] += 1
    assert (covered[seams] >= 2).all() and (~seams).any()  # seams lie inside the overlap
    for ours, want in zip(tiled, full, strict=True):
        np.testing.assert_allclose(ours[~seams], want[~seams], atol=1e-6)
        error = np.abs(ours - want).max(axis=2)
        bound = 2 * max(ramp_weight(k, overlap, blend) * (radius - k) / (2 * radius + 1)
                        for k in range(radius))
        assert 1e-4 < error[seams].max() <= bound  # the blur crosses the seams, bounded


def test_tiled_matches_untiled_within_half_a_db(model, photo):
    """The acceptance check: on an image small enough for one pass, tiled inference scores
    within 0.5 dB of untiled inference (against the true layers), and both outputs agree."""
    rng = np.random.default_rng(1)
    reflection = np.clip(rng.random((96, 128, 3)).astype(np.float32) * 0.3, 0, 1)
    mixture = np.clip(photo + reflection, 0, 1)
    t_full, r_full = separate(model, mixture, tile=None)
    t_tiled, r_tiled = separate(model, mixture, tile=64, overlap=16)
    assert t_tiled.shape == r_tiled.shape == mixture.shape
    assert abs(psnr_ssim(t_tiled, photo)[0] - psnr_ssim(t_full, photo)[0]) < 0.5
    assert abs(psnr_ssim(r_tiled, reflection)[0] - psnr_ssim(r_full, reflection)[0]) < 0.5
    assert psnr_ssim(t_tiled, t_full)[0] > 30


@pytest.mark.parametrize("shape", [(37, 50), (16, 16), (9, 23)])
def test_any_size_gives_outputs_of_the_input_size(model, shape):
    image = np.random.default_rng(2).random((*shape, 3)).astype(np.float32)
    t_hat, r_hat = separate(model, image, tile=None)
    assert t_hat.shape == r_hat.shape == (*shape, 3)
    assert t_hat.dtype == np.float32 and 0 <= t_hat.min() and t_hat.max() <= 1


def test_separate_matches_the_model_on_aligned_input(model, photo):
    t_hat, r_hat = separate(model, photo, tile=None)
    with torch.inference_mode():
        want_t, want_r = model(torch.from_numpy(photo.transpose(2, 0, 1))[None])
    np.testing.assert_allclose(t_hat, want_t[0].numpy().transpose(1, 2, 0), atol=1e-6)
    np.testing.assert_allclose(r_hat, want_r[0].numpy().transpose(1, 2, 0), atol=1e-6)


def test_bad_tiling_and_layout_are_refused(model):
    with pytest.raises(ValueError, match="multiple of 16"):
        check_tiling(100, 8)
    with pytest.raises(ValueError, match="overlap"):
        check_tiling(64, 40)
    with pytest.raises(ValueError, match="HxWx3"):
        separate(model, np.zeros((32, 32), np.float32))
    assert list(iter_tiles(40, 20, 32, 8)) == [(0, 0, 32, 20), (8, 0, 32, 20)]


# --------------------------------------------------------------------------- image I/O

def _png(arr, **kw):
    buf = io.BytesIO()
    Image.fromarray(arr, **kw).save(buf, "PNG")
    return buf.getvalue()


def test_exif_orientation_is_honoured(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "rotated.jpg"
    Image.fromarray(arr).save(path, exif=exif, quality=100)
    img = load_image(path)
    assert img.shape == (40, 20, 3)  # displayed upright: portrait
    assert img[:18].mean() > 0.9 and img[22:].mean() < 0.1  # white half now on top


def test_grayscale_rgba_palette_and_16_bit(tmp_path):
    """The inference readers follow ytmt.imageio's policy (tests/test_imageio.py holds the
    details): grey repeated, alpha over white, palette colours, 16 bits rounded to 8."""
    gray = np.arange(0, 256, dtype=np.uint8).reshape(16, 16)
    g = decode_image(_png(gray))
    assert g.shape == (16, 16, 3) and np.allclose(g[..., 0], gray / 255) and np.all(
        g[..., 0] == g[..., 2])

    rgba = np.random.default_rng(3).integers(0, 256, (16, 16, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent: white, as the training photos are composited
    np.testing.assert_array_equal(decode_image(_png(rgba)), np.ones((16, 16, 3), np.float32))

    pal = Image.fromarray(rgba[..., :3]).convert("P")
    buf = io.BytesIO()
    pal.save(buf, "PNG")
    np.testing.assert_allclose(decode_image(buf.getvalue()),
                               np.asarray(pal.convert("RGB")) / 255, atol=1e-6)

    g16 = (np.arange(256, dtype=np.uint16).reshape(16, 16) * 257)  # full 16-bit range
    buf = io.BytesIO()
    Image.fromarray(g16).save(buf, "PNG")
    out = decode_image(buf.getvalue())
    np.testing.assert_allclose(out[..., 1], g16 / 65535, atol=1e-6)  # v·257 is exact in 8 bits

    rgb16 = np.random.default_rng(4).integers(0, 65536, (16, 16, 3), dtype=np.uint16)
    path = tmp_path / "rgb16.tif"
    tifffile.imwrite(path, rgb16, photometric="rgb")
    expected = np.round(rgb16.astype(np.float64) * 255 / 65535) / 255  # rounded to 8 bits
    np.testing.assert_allclose(load_image(path), expected, atol=1e-6)


def test_non_images_get_a_clear_error(tmp_path):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(ImageReadError, match="notes.png: not an image"):
        load_image(bad)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_image(tmp_path / "missing.jpg")


def test_png_round_trip_is_atomic(tmp_path):
    img = np.random.default_rng(5).random((20, 30, 3)).astype(np.float32)
    path = save_png(img, tmp_path / "out" / "x_T.png")
    assert [p.name for p in path.parent.iterdir()] == ["x_T.png"]  # no temp file left
    np.testing.assert_allclose(load_image(path), img, atol=0.5 / 255 + 1e-6)
    assert decode_image(encode_png(img)).shape == (20, 30, 3)
