"""Separate photos of any size: /16 padding and tiled inference with blending.

Layouts: images are HxWx3 float32 numpy arrays in [0, 1] (RGB); the model sees (1,3,h,w)
tensors in [0, 1]. Images are read and written by :mod:`ytmt.imageio` (re-exported here:
``load_image``, ``decode_image``, ``save_png``, ``encode_png``, ``ImageReadError``), the
decoder the training data goes through too.

The U-shaped networks pool four times, so the input is padded (reflection) to a multiple of 16
and the outputs cropped back: the output has exactly the input's size, no resize. Large images
are cut into ``tile``×``tile`` tiles that overlap by ``overlap`` pixels; each tile's T̂ and R̂
are weighted by a ramp that falls towards the tile's inner edges (cosine or linear) and the
weighted sums are normalised, so seams disappear and peak memory is set by the tile size, not
the photo: a full-width model at ``tile=256`` stays near 1.2 GiB whatever the photo's size.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ytmt.archs.ytmt import SeparationModel
from ytmt.imageio import (  # noqa: F401 - re-exported: image I/O lives there
    ImageReadError,
    decode_image,
    encode_png,
    load_image,
    save_png,
)
from ytmt.precision import DEFAULT_PRECISION, autocast, resolve_precision  # noqa: F401
from ytmt.tiling import (  # noqa: F401 - re-exported: the tiling API lives there
    ALIGN,
    DEFAULT_OVERLAP,
    DEFAULT_TILE,
    Blend,
    _ramp,
    check_tiling,
    iter_tiles,
    tile_count,
    tile_starts,
)

Progress = Callable[[int, int], None]  # (tiles done, tiles total)


# --------------------------------------------------------------------------- model passes

def pad_to_multiple(x: torch.Tensor, multiple: int = ALIGN) -> torch.Tensor:
    """(B,C,h,w) → padded on the bottom/right to multiples of ``multiple`` (reflection where the
    image is large enough, edge replication otherwise)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


@torch.inference_mode()
def _forward(model: SeparationModel, patch: np.ndarray,
             device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """One pass on an (3,h,w) float32 patch → (T̂, R̂) as (3,h,w) float32 numpy arrays.
    Under bf16 autocast the input is channels-last, so every convolution runs in that layout
    (the model's weights are left as they are; 1.4× less CPU work here). fp32 keeps the
    contiguous layout: its convolutions are then the reference's float operations (an
    imported release reproduces the authors' forward to 1e-5; channels-last moved it 2e-4)."""
    h, w = patch.shape[1:]
    x = pad_to_multiple(torch.from_numpy(patch)[None].to(device))
    if torch.is_autocast_enabled(device.type):
        x = x.contiguous(memory_format=torch.channels_last)
    t_hat, r_hat = model(x)
    return (t_hat[0, :, :h, :w].float().cpu().numpy(),
            r_hat[0, :, :h, :w].float().cpu().numpy())


def separate(model: SeparationModel, image: np.ndarray, tile: int | None = DEFAULT_TILE,
             overlap: int = DEFAULT_OVERLAP, blend: Blend = "cosine",
             device: str | torch.device | None = None,
             progress: Progress | None = None,
             precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """Split ``image`` (HxWx3 float in [0, 1], any size >= 1x1) into (T̂, R̂), each HxWx3 float32
    in [0, 1] of the input's size.

    ``tile``: tiles of at most ``tile``×``tile`` pixels with ``overlap`` pixels shared between
    neighbours (``None``: one pass over the whole image, memory grows with its area).
    ``device``: where the model runs (default: where its parameters are). ``progress`` is
    called after every tile with (done, total). ``precision``: ``fp32``, ``bf16`` (autocast;
    the weights stay fp32) or ``auto`` (:func:`ytmt.precision.resolve_precision`).
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {image.shape}")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(device).eval()
    # one autocast region for all tiles: the weights are cast to bf16 once per image
    with autocast(device, resolve_precision(precision, device)):
        return _separate(model, image, tile, overlap, blend, device, progress)


def _separate(model: SeparationModel, image: np.ndarray, tile: int | None, overlap: int,
              blend: Blend, device: torch.device,
              progress: Progress | None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`separate` on a model already on ``device``, in eval mode."""
    height, width = image.shape[:2]
    chw = np.ascontiguousarray(np.clip(image, 0.0, 1.0).transpose(2, 0, 1), dtype=np.float32)
    if tile is None or (height <= tile and width <= tile):
        t_hat, r_hat = _forward(model, chw, device)
        if progress is not None:
            progress(1, 1)
        return t_hat.transpose(1, 2, 0), r_hat.transpose(1, 2, 0)
    check_tiling(tile, overlap)
    acc_t = np.zeros((3, height, width), np.float32)
    acc_r = np.zeros((3, height, width), np.float32)
    acc_w = np.zeros((height, width), np.float32)
    tiles = list(iter_tiles(height, width, tile, overlap))
    for i, (top, left, h, w) in enumerate(tiles):
        t_hat, r_hat = _forward(model, chw[:, top:top + h, left:left + w], device)
        wy = _ramp(h, overlap, rise=top > 0, fall=top + h < height, blend=blend)
        wx = _ramp(w, overlap, rise=left > 0, fall=left + w < width, blend=blend)
        weight = wy[:, None] * wx[None, :]
        acc_t[:, top:top + h, left:left + w] += t_hat * weight
        acc_r[:, top:top + h, left:left + w] += r_hat * weight
        acc_w[top:top + h, left:left + w] += weight
        if progress is not None:
            progress(i + 1, len(tiles))
    acc_t /= acc_w
    acc_r /= acc_w
    return acc_t.transpose(1, 2, 0), acc_r.transpose(1, 2, 0)
