"""The reflection model (CEILNet, as the YTMT authors run it) on arrays: resampled crops,
blur, the overflow rule and the mixture. :mod:`ytmt.data.synthesis` plans and runs it.

Per mixture (design.md s2): a transmission photo T and a reflection photo R get the same
random rescale (short side an even size in [scale_min, scale_max]), the same horizontal flip
and the same ``size``×``size`` crop; in [0, 1] floats R is blurred with a ``kernel_size``²
Gaussian (σ ~ U(sigma_min, sigma_max), the normalised separable kernel ``g gᵀ``, zero
padding, "same" output: exactly a 2-D convolution with ``outer(g, g)``); ``M = T + R``;
if ``max(M) > 1``: ``m = (mean(M[M > 1]) − 1)·γ``, ``R = clip(R − m, 0, 1)``,
``M = clip(T + R)``.
Targets are T and the adjusted R.

Differences from the authors' per-image code, all deliberate:

- The geometry is computed in the source photo's coordinates and only the crop box is
  resampled (not the whole rescaled photo). ``resample: pil`` runs PIL's antialiased bicubic
  over the exact box, the same pixels as the authors' rescale-then-crop; ``resample: opencv``
  (default, ~8× faster) snaps the box to whole source pixels and uses OpenCV bicubic (area
  averaging when shrinking more than 2×).
- Each photo is rescaled by its own short side (the authors scale R by T's orientation,
  which can leave R narrower than the crop); the crop is drawn inside both rescaled photos.
- The blur is OpenCV's separable filter (two 11-tap passes, constant-0 border), equal to the
  authors' ``convolve2d(outer(g, g), mode="same")`` up to float rounding; a chunk's scalar
  work (σ, γ, geometry) is drawn at once and per-image work stays in the CPU cache.
- Stored values are bytes: R is rounded to uint8 after the overflow rule and the mixture is
  ``M = min(T + R, 255)`` in integers, so ``M == clip(T + R)`` holds exactly in the shards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Photo:
    """A decoded photo as both an ``(H, W, 3) uint8`` array and a PIL image (no copies)."""

    array: np.ndarray
    image: Image.Image

    @classmethod
    def of(cls, array: np.ndarray) -> Photo:
        array.setflags(write=False)
        return cls(array, Image.fromarray(array))



def gaussian_kernel(size: int, sigma: float) -> np.ndarray:
    """``(size,) float64`` Gaussian taps ``exp(−x²/2σ²)``, x centred, normalised to sum 1."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def blur(images: np.ndarray, sigmas: np.ndarray, size: int) -> np.ndarray:
    """Gaussian blur of ``(N, H, W, C) float32`` with one σ per image.

    Equivalent to ``scipy.signal.convolve2d(channel, outer(g, g), mode="same")`` (zero
    padding) per image and channel: OpenCV's separable filter with a constant-0 border."""
    out = np.empty(images.shape, np.float32)
    for i, (img, s) in enumerate(zip(images, sigmas, strict=True)):
        out[i] = _blur_one(img, float(s), size)
    return out


def _blur_one(img: np.ndarray, sigma: float, size: int) -> np.ndarray:
    g = gaussian_kernel(size, sigma).astype(np.float32)
    out = cv2.sepFilter2D(img, cv2.CV_32F, g, g, borderType=cv2.BORDER_CONSTANT)
    return out.reshape(img.shape)


def overflow_shift(t: np.ndarray, r: np.ndarray, gamma: float) -> float:
    """``m = (mean(M[M > 1]) − 1)·γ`` for ``M = t + r`` (float32 images in [0, 1]); 0 when
    ``max(M) <= 1``. Computed as ``sum(max(M − 1, 0)) / #(M > 1) · γ``."""
    excess = np.add(t, r)
    excess -= 1.0
    count = np.count_nonzero(excess > 0)
    if count == 0:
        return 0.0
    np.maximum(excess, 0.0, out=excess)
    return float(excess.sum(dtype=np.float64) / count * gamma)


def compose(t: np.ndarray, r: np.ndarray, sigmas: np.ndarray, gammas: np.ndarray,
            kernel_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Synthesise a chunk from aligned crops ``t``, ``r``: ``(N, H, W, 3) uint8``.

    Per image (whole-array operations, which stay in the CPU cache): blur R, the overflow
    rule (``R ← clip(R − m, 0, 1)``), R rounded to bytes, then ``M = min(T + R, 255)``.
    Returns ``(M, T, R, m)``: ``(N, H, W, 3) uint8`` each and the per-image shift ``m``
    (float32, 0 where nothing overflowed)."""
    n = len(t)
    mix, refl = np.empty_like(t), np.empty_like(t)
    shifts = np.zeros(n, np.float32)
    scale = np.float32(1 / 255)
    tf = np.empty(t.shape[1:], np.float32)
    rf = np.empty(t.shape[1:], np.float32)
    for i in range(n):
        np.multiply(r[i], scale, out=rf)
        rb = _blur_one(rf, float(sigmas[i]), kernel_size)
        np.multiply(t[i], scale, out=tf)
        m = overflow_shift(tf, rb, float(gammas[i]))
        if m:
            rb -= np.float32(m)
            np.maximum(rb, 0.0, out=rb)
        shifts[i] = m
        # x·255 rounded half-to-even and saturated to [0, 255] (rb >= 0 here), then the
        # saturating byte sum: M = min(T + R, 255).
        refl[i] = cv2.convertScaleAbs(rb, alpha=255.0).reshape(rb.shape)
        mix[i] = cv2.add(t[i], refl[i]).reshape(rb.shape)
    return mix, t, refl, shifts


def rescaled_shape(height: int, width: int, scale: int) -> tuple[int, int]:
    """Size after rescaling the short side to ``scale``; the long side rounded up to even."""
    short, long = min(height, width), max(height, width)
    other = math.ceil(int(scale * long / short) / 2) * 2
    return (scale, other) if height <= width else (other, scale)


def rescaled_crop(photo: Photo, scale: int, y: int, x: int, size: int,
                  resample: str = "opencv") -> np.ndarray:
    """The ``size``² crop at ``(y, x)`` of ``photo`` rescaled to short side ``scale``, as
    ``(size, size, 3) uint8``. Only the crop box is resampled.

    ``pil``: PIL's antialiased bicubic over the exact (fractional) box, as the authors
    (rescale the whole photo, then crop). ``opencv``: the box snapped to whole source pixels
    (scale within half a pixel over the crop), OpenCV bicubic, or area averaging when
    shrinking by more than 2× (whole k×k blocks first); about 8× faster, within 35-50 dB
    PSNR of ``pil``."""
    h, w = photo.array.shape[:2]
    h1, w1 = rescaled_shape(h, w, scale)
    sy, sx = h / h1, w / w1
    if resample == "pil":
        box = (x * sx, y * sy, (x + size) * sx, (y + size) * sy)
        return np.asarray(photo.image.resize((size, size), Image.BICUBIC, box=box))
    # A large shrink first averages k×k pixel blocks (OpenCV's fast integer area path).
    k = max(1, int(min(size * sy, size * sx) // (2 * size)))
    bh, bw = max(k, min(h, round(size * sy / k) * k)), max(k, min(w, round(size * sx / k) * k))
    y0, x0 = min(round(y * sy), h - bh), min(round(x * sx), w - bw)
    region = photo.array[y0:y0 + bh, x0:x0 + bw]
    if k > 1:
        region = cv2.resize(region, (bw // k, bh // k), interpolation=cv2.INTER_AREA)
    shrink = region.shape[0] > 2 * size or region.shape[1] > 2 * size
    return cv2.resize(region, (size, size),
                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
