"""The reflection model on arrays (:mod:`ytmt.data.mixing`, design.md s2)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy.signal import convolve2d

from ytmt.data.mixing import (
    Photo,
    blur,
    compose,
    gaussian_kernel,
    overflow_shift,
    rescaled_crop,
    rescaled_shape,
)


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
