"""Metrics against direct scikit-image calls; /16 alignment; the I − T reflection target."""

import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ytmt.metrics import (
    PSNR_CAP,
    align16,
    aligned_size,
    metric_names,
    psnr_ssim,
    reflection_target,
    score_images,
)


def _pair(seed=0, shape=(37, 53, 3), noise=0.08):
    rng = np.random.default_rng(seed)
    target = rng.random(shape).astype(np.float32)
    pred = (target + rng.normal(0, noise, shape)).astype(np.float32)  # leaves [0,1]: clipped
    return pred, target


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paper_protocol_is_per_channel_skimage_on_0_255_floats(seed):
    pred, target = _pair(seed)
    p = np.clip(pred.astype(np.float64), 0, 1) * 255
    t = np.clip(target.astype(np.float64), 0, 1) * 255
    want_psnr = np.mean([peak_signal_noise_ratio(t[..., c], p[..., c], data_range=255)
                         for c in range(3)])
    want_ssim = np.mean([structural_similarity(t[..., c], p[..., c], data_range=255)
                         for c in range(3)])
    psnr, ssim = psnr_ssim(pred, target, "paper")
    assert psnr == pytest.approx(want_psnr, abs=1e-9)
    assert ssim == pytest.approx(want_ssim, abs=1e-9)


def test_paper_protocol_does_not_round_to_8_bit():
    rng = np.random.default_rng(3)
    target = rng.random((32, 32, 3))
    pred = target + 0.3 / 255  # below half an 8-bit step: invisible after rounding
    psnr, _ = psnr_ssim(pred, target, "paper")
    assert psnr == pytest.approx(10 * np.log10(255**2 / 0.3**2), rel=1e-3)


def test_strict_protocol_is_joint_rgb_on_uint8():
    pred, target = _pair(4)
    p = np.round(np.clip(pred, 0, 1) * 255).astype(np.uint8)
    t = np.round(np.clip(target, 0, 1) * 255).astype(np.uint8)
    psnr, ssim = psnr_ssim(pred, target, "strict")
    assert psnr == pytest.approx(peak_signal_noise_ratio(t, p, data_range=255), abs=1e-9)
    assert ssim == pytest.approx(
        structural_similarity(t, p, data_range=255, channel_axis=2), abs=1e-9)


def test_protocols_differ_when_channels_differ():
    # One channel much worse than the others: mean of per-channel PSNRs != joint PSNR.
    rng = np.random.default_rng(5)
    target = rng.random((32, 32, 3))
    pred = target.copy()
    pred[..., 0] = np.clip(pred[..., 0] + rng.normal(0, 0.2, (32, 32)), 0, 1)
    pred[..., 1:] = np.clip(pred[..., 1:] + rng.normal(0, 0.01, (32, 32, 2)), 0, 1)
    assert psnr_ssim(pred, target, "paper")[0] > psnr_ssim(pred, target, "strict")[0] + 3


def test_identical_images_and_bad_input():
    _, target = _pair(6)
    psnr, ssim = psnr_ssim(target, target)
    assert psnr == float("inf") and ssim == pytest.approx(1.0)
    with pytest.raises(ValueError, match="protocol"):
        psnr_ssim(target, target, "jpeg")
    with pytest.raises(ValueError, match="differ in shape"):
        psnr_ssim(target[:-1], target)
    with pytest.raises(ValueError, match="HxWx3"):
        psnr_ssim(target[..., 0], target[..., 0])


def test_align16_sizes_and_pil_bicubic():
    assert aligned_size(337, 500) == (336, 496)
    assert aligned_size(32, 16) == (32, 16)
    with pytest.raises(ValueError, match="smaller than 16x16"):
        aligned_size(15, 100)
    rng = np.random.default_rng(7)
    u8 = (rng.random((50, 71, 3)) * 255).astype(np.uint8)
    out = align16(u8)
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    # The authors' loader: PIL resize((w//16*16, h//16*16)) with the default (bicubic) filter.
    want = np.asarray(Image.fromarray(u8).resize((64, 48)))
    np.testing.assert_array_equal(out, want)
    # Float images follow the same bicubic resize without 8-bit rounding.
    f = align16(u8.astype(np.float32) / 255)
    assert f.shape == (48, 64, 3) and f.dtype == np.float32
    assert np.abs(f * 255 - want).mean() < 1.0
    aligned = np.zeros((32, 48, 3), np.float32)
    assert align16(aligned) is aligned


def test_reflection_target_is_mixture_minus_transmission():
    rng = np.random.default_rng(8)
    t = rng.random((16, 16, 3)).astype(np.float32)
    r = rng.random((16, 16, 3)).astype(np.float32) * 0.3
    mixture = np.clip(t + r, 0, 1)
    target = reflection_target(mixture, t)
    np.testing.assert_allclose(target, mixture - t)
    assert target.min() >= -1e-6 and target.dtype == np.float32
    # Where nothing saturated, I − T recovers the reflection exactly.
    unsaturated = (t + r) <= 1
    np.testing.assert_allclose(target[unsaturated], r[unsaturated], atol=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        reflection_target(mixture[:8], t)


def test_score_images_is_every_metric_of_every_protocol_and_the_identity_baseline():
    t_hat, t = _pair(9)
    r_hat, r = _pair(10, noise=0.02)
    mixture = np.clip(t + r * 0.5, 0, 1)
    scores = score_images(t_hat, r_hat, mixture, t, r, ("paper", "strict"))
    assert list(scores) == metric_names(("paper", "strict")) == [
        "psnr_t", "ssim_t", "psnr_r", "ssim_r", "psnr_t_strict", "ssim_t_strict",
        "psnr_r_strict", "ssim_r_strict", "psnr_t_input", "ssim_t_input"]
    assert (scores["psnr_r_strict"], scores["ssim_r_strict"]) == psnr_ssim(r_hat, r, "strict")
    assert (scores["psnr_t_input"], scores["ssim_t_input"]) == psnr_ssim(mixture, t, "paper")
    assert list(score_images(t_hat, r_hat, mixture, t, r, ("strict",))) == [
        "psnr_t_strict", "ssim_t_strict", "psnr_r_strict", "ssim_r_strict", "psnr_t_input",
        "ssim_t_input"]


def test_score_images_caps_the_psnr_of_identical_images():
    _, t = _pair(11)
    scores = score_images(t, t, t, t, t)
    assert scores["psnr_t"] == scores["psnr_t_input"] == scores["psnr_r_strict"] == PSNR_CAP
    assert scores["ssim_t_input"] == pytest.approx(1.0)
