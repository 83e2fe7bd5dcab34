"""Image quality metrics and the benchmark test-time conventions (design.md s2).

Two protocols, both named in every report:

``paper``
    What the YTMT authors (and ERRNet before them) report: prediction and target clipped to
    [0, 1] and scaled to 0..255 *floats* (no rounding); PSNR and SSIM computed per colour
    channel with scikit-image (``data_range=255``, default 7×7 uniform SSIM window) and
    averaged over the three channels. Callers then average over images.
``strict``
    Joint RGB on 8-bit images: both images rounded to uint8; PSNR over all channels at once
    (one MSE), SSIM with ``channel_axis`` (scikit-image averages the per-channel SSIM maps).
    What a user who saves PNGs and compares them would measure.

:func:`score_images` scores one separation for the given protocols: the one scoring of
validation (``ytmt.train.validation``, keys prefixed ``val_``) and evaluation
(``ytmt.evaluation.evaluate``). Its keys: ``psnr_t``, ``ssim_t``, ``psnr_r``, ``ssim_r`` for the
paper protocol, the same with ``_strict`` for the strict one, and ``psnr_t_input``,
``ssim_t_input``: the mixture itself taken as T̂ (paper protocol), the identity baseline a
model has to beat. PSNR is capped at :data:`PSNR_CAP`.

Test-time conventions of the benchmarks: :func:`align16` resizes an image to
``(h//16·16, w//16·16)`` as the authors' test loader does (PIL ``resize`` with its default
filter, bicubic, applied to both the mixture and the transmission), and the reflection target of
a real set without a ground-truth reflection is ``I − T`` (:func:`reflection_target`).
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ytmt.metric_names import (  # noqa: F401 - the names are re-exported with the metrics
    LAYERS,
    PROTOCOLS,
    Protocol,
    metric_name,
    metric_names,
)

ALIGN = 16
# Identical images have infinite PSNR; one such pair would make a mean infinite.
PSNR_CAP = 100.0


def _check_pair(pred: np.ndarray, target: np.ndarray) -> None:
    for name, img in (("pred", pred), ("target", target)):
        if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3:
            shape = getattr(img, "shape", type(img).__name__)
            raise ValueError(f"{name}: expected an HxWx3 array, got {shape}")
    if pred.shape != target.shape:
        raise ValueError(f"pred {pred.shape} and target {target.shape} differ in shape")
    if min(pred.shape[:2]) < 7:
        raise ValueError(f"images of {pred.shape[0]}x{pred.shape[1]} are smaller than the 7x7 "
                         "SSIM window")


def to_255(img: np.ndarray) -> np.ndarray:
    """HxWxC float in [0,1] (values outside are clipped) -> float64 in [0, 255], not rounded."""
    return np.clip(np.asarray(img, dtype=np.float64), 0.0, 1.0) * 255.0


def to_uint8(img: np.ndarray) -> np.ndarray:
    """HxWxC float in [0,1] (clipped) -> uint8, rounded to nearest."""
    return np.round(to_255(img)).astype(np.uint8)


def psnr_ssim(pred: np.ndarray, target: np.ndarray,
              protocol: Protocol = "paper") -> tuple[float, float]:
    """(PSNR in dB, SSIM) of one image pair under ``protocol`` (see module docstring).

    ``pred`` and ``target``: HxWx3 float arrays, nominally in [0, 1]; both are clipped to
    [0, 1] first (a reflection target ``I − T`` may dip below 0). Identical images give
    ``inf`` PSNR.
    """
    _check_pair(pred, target)
    if protocol == "paper":
        p, t = to_255(pred), to_255(target)
        psnrs, ssims = [], []
        for c in range(3):
            with np.errstate(divide="ignore"):
                psnrs.append(peak_signal_noise_ratio(t[..., c], p[..., c], data_range=255))
            ssims.append(structural_similarity(t[..., c], p[..., c], data_range=255))
        return float(np.mean(psnrs)), float(np.mean(ssims))
    if protocol == "strict":
        p, t = to_uint8(pred), to_uint8(target)
        with np.errstate(divide="ignore"):
            psnr = peak_signal_noise_ratio(t, p, data_range=255)
        ssim = structural_similarity(t, p, data_range=255, channel_axis=2)
        return float(psnr), float(ssim)
    raise ValueError(f"protocol = {protocol!r}: expected one of {', '.join(PROTOCOLS)}")


def score_images(t_hat: np.ndarray, r_hat: np.ndarray, mixture: np.ndarray,
                 transmission: np.ndarray, reflection: np.ndarray,
                 protocols: tuple[str, ...] = PROTOCOLS) -> dict[str, float]:
    """PSNR (capped at :data:`PSNR_CAP`) and SSIM of T̂ and R̂ against their targets under
    each of ``protocols``, and of the mixture as T̂ (paper protocol): the keys of
    :func:`metric_names`. All HxWx3 float arrays, nominally in [0, 1]."""
    out: dict[str, float] = {}
    for p in protocols:
        for layer, pred, target in (("t", t_hat, transmission), ("r", r_hat, reflection)):
            psnr, ssim = psnr_ssim(pred, target, p)
            out[metric_name("psnr", layer, p)] = min(psnr, PSNR_CAP)
            out[metric_name("ssim", layer, p)] = ssim
    psnr, ssim = psnr_ssim(mixture, transmission, "paper")
    out["psnr_t_input"], out["ssim_t_input"] = min(psnr, PSNR_CAP), ssim
    return out


def aligned_size(height: int, width: int, multiple: int = ALIGN) -> tuple[int, int]:
    """``(h//16·16, w//16·16)``; a side shorter than ``multiple`` is an error."""
    if height < multiple or width < multiple:
        raise ValueError(f"image of {height}x{width} is smaller than {multiple}x{multiple}")
    return height // multiple * multiple, width // multiple * multiple


def align16(img: np.ndarray, multiple: int = ALIGN) -> np.ndarray:
    """Resize an HxWxC image to ``(h//16·16, w//16·16)`` (bicubic), as the benchmarks are tested.

    Float images (any range, typically [0, 1]) are resized per channel in 32-bit float, so no
    8-bit rounding is added; uint8 images go through PIL's RGB path like the authors' loader.
    An image whose sides are already multiples of 16 is returned unchanged (same object).
    """
    if img.ndim != 3:
        raise ValueError(f"expected an HxWxC array, got shape {img.shape}")
    h, w = img.shape[:2]
    th, tw = aligned_size(h, w, multiple)
    if (th, tw) == (h, w):
        return img
    if img.dtype == np.uint8 and img.shape[2] == 3:
        return np.asarray(Image.fromarray(img).resize((tw, th), Image.Resampling.BICUBIC))
    planes = (Image.fromarray(np.ascontiguousarray(img[..., c], dtype=np.float32))
              for c in range(img.shape[2]))
    channels = [np.asarray(p.resize((tw, th), Image.Resampling.BICUBIC)) for p in planes]
    return np.stack(channels, axis=2).astype(img.dtype if img.dtype.kind == "f" else np.float32)


def reflection_target(mixture: np.ndarray, transmission: np.ndarray) -> np.ndarray:
    """The reflection target of a real pair without ground-truth R: ``I − T`` (not clipped;
    :func:`psnr_ssim` clips it to [0, 1] like the prediction). Same-shape float arrays."""
    if mixture.shape != transmission.shape:
        raise ValueError(f"mixture {mixture.shape} and transmission {transmission.shape} "
                         "differ in shape")
    return np.asarray(mixture, dtype=np.float32) - np.asarray(transmission, dtype=np.float32)
