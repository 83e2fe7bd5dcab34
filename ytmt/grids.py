"""The one image grid of the project: validation samples of a training run (input, T̂, R̂, T,
R per row) and an evaluation's best and worst cases (input, T̂, R̂, T, with each row's
name and score) are drawn by :func:`image_grid_png`. PIL only (no torch, no matplotlib)."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np

from ytmt.metrics import to_uint8

PAD, HEAD = 4, 16  # pixels between cells; height of a line of text


def _uint8(img: np.ndarray) -> np.ndarray:
    """(H,W,3) uint8 as it is, float in [0,1] (clipped) rounded to uint8."""
    return img if img.dtype == np.uint8 else to_uint8(img)


def image_grid_png(rows: Sequence[Sequence[np.ndarray]], columns: Sequence[str],
                   title: str = "", row_labels: Sequence[str] | None = None) -> bytes:
    """A PNG with one row of images per entry of ``rows`` under the column headings
    ``columns`` (ASCII: the default bitmap font has no other glyphs), a ``title`` line and,
    with ``row_labels``, a line of text above each row.

    ``rows``: each a sequence of ``len(columns)`` (H,W,3) images, uint8 or float in [0,1];
    sizes may differ between rows (each cell is as wide as the widest image).
    """
    from PIL import Image, ImageDraw

    cell_w = max(img.shape[1] for row in rows for img in row)
    label_h = HEAD if row_labels is not None else 0
    cell_h = [max(img.shape[0] for img in row) for row in rows]
    width = len(columns) * (cell_w + PAD) + PAD
    height = HEAD * (2 if title else 1) + sum(h + label_h + PAD for h in cell_h) + PAD
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    y = PAD
    if title:
        draw.text((PAD, y), title, fill=(0, 0, 0))
        y += HEAD
    for c, label in enumerate(columns):
        draw.text((PAD + c * (cell_w + PAD), y), label, fill=(0, 0, 0))
    y += HEAD
    for r, (row, h) in enumerate(zip(rows, cell_h, strict=True)):
        if row_labels is not None:
            draw.text((PAD, y), row_labels[r], fill=(0, 0, 0))
            y += label_h
        for c, img in enumerate(row):
            canvas.paste(Image.fromarray(_uint8(img)), (PAD + c * (cell_w + PAD), y))
        y += h + PAD
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()
