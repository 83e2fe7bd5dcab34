"""The one image decoder: every photo the project reads goes through here, so a model is
trained, scored and served on the same pixels.

Used by the fetch stage (``ytmt.data.sources``), the real-pair check and synthesis
(``ytmt.data.pairing``, ``ytmt.data.synthesis``), benchmarks (``ytmt.data.benchmarks``),
``ytmt separate`` (``ytmt.inference``), serving (``ytmt.serving``) and the bench scripts.
Torch-free (numpy and Pillow; OpenCV and tifffile only for 16-bit colour files).

Policy, applied in this order:

1. **Decode** with Pillow (PNG, JPEG, TIFF, WebP, BMP, ...). Pillow reduces 16-bit colour
   PNGs and TIFFs to 8 bits by dropping the low byte, so those are decoded at full depth by
   OpenCV (PNG) or tifffile (TIFF) after Pillow has validated the file.
2. **EXIF orientation** is applied: the image comes out upright as a viewer shows it.
3. **Modes**: greyscale (``L``, ``1``, 16-bit ``I;16``) is repeated over three channels;
   palette images take their palette colours (and its transparency); CMYK and YCbCr are
   converted to RGB by Pillow. 32-bit integer greyscale (``I``) is read as 16-bit samples.
   Float (``F``) and other modes are refused.
4. **Alpha** is composited over white, ``c·α + max·(1 − α)``, at the file's bit depth; a fully
   opaque alpha channel is simply dropped.
5. **16 bits → 8 bits by rounding**: ``round(v · 255 / 65535)``.

The result is ``(H, W, 3) uint8`` RGB (:func:`decode`, :func:`read`) or, for the models,
``(H, W, 3) float32`` in [0, 1] = uint8 / 255 (:func:`decode_image`, :func:`load_image`).

Files that cannot be used raise :class:`ImageReadError`, the one error type callers catch
and count; its ``reason`` is a short slug: ``not_an_image``, ``truncated``, ``unreadable``,
``too_large`` (over Pillow's decompression-bomb limit, about 179 Mpx), ``unsupported_mode``,
``too_small`` (shorter side under ``min_side``).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ytmt.fileio import atomic_write_bytes

__all__ = ["Decoded", "ImageReadError", "decode", "decode_image", "encode_png", "load_image",
           "probe_format", "read", "save_png", "to_float"]

_EXIF_ORIENTATION = 0x0112
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")
_GREY_MODES = {"L": "grayscale", "1": "grayscale"}
_CONVERTED_MODES = {"CMYK": "cmyk", "YCbCr": "ycbcr"}
_ALPHA_MODES = {"LA": "LA", "La": "LA", "PA": "RGBA", "RGBA": "RGBA", "RGBa": "RGBA"}


class ImageReadError(ValueError):
    """A file or byte string that is not an image this project can use; ``reason`` is a
    short slug (see the module docstring), ``name`` the file (or row) it came from."""

    def __init__(self, name: str, reason: str, detail: str = ""):
        text = f"{name}: {reason.replace('_', ' ')}"
        super().__init__(f"{text} ({detail})" if detail else text)
        self.name, self.reason = name, reason


@dataclass(frozen=True)
class Decoded:
    """A decoded image: ``rgb`` (H, W, 3) uint8; ``notes`` the conversions applied
    (``exif_rotated``, ``grayscale``, ``palette``, ``alpha``, ``cmyk``, ``16bit``, ...;
    empty for a plain 8-bit RGB file); ``format`` Pillow's name (``JPEG``, ``PNG``, ...)."""

    rgb: np.ndarray
    notes: tuple[str, ...]
    format: str


# --------------------------------------------------------------------------- decoding

def decode(data: bytes, name: str = "<bytes>", min_side: int = 1) -> Decoded:
    """Encoded image bytes → :class:`Decoded` by the module's policy. Raises
    :class:`ImageReadError`."""
    im = _open(data, name)
    try:
        notes: list[str] = []
        samples = _samples(im, data, name, notes)
        orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
        fmt = im.format or "unknown"
    finally:
        im.close()
    if orientation not in (1, None):
        samples = orient(samples, int(orientation))
        notes.insert(0, "exif_rotated")
    rgb = _to_rgb8(samples, notes)
    if min(rgb.shape[:2]) < min_side:
        raise ImageReadError(name, "too_small",
                             f"{rgb.shape[1]}x{rgb.shape[0]} < {min_side} px")
    return Decoded(rgb, tuple(notes), fmt)


def read(path: str | Path, min_side: int = 1) -> Decoded:
    """:func:`decode` of a file; FileNotFoundError when there is none."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return decode(path.read_bytes(), str(path), min_side)


def to_float(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 → (H, W, 3) float32 in [0, 1] (divided by 255)."""
    return rgb.astype(np.float32) / 255.0


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Encoded image bytes → (H, W, 3) float32 in [0, 1] (the policy, then / 255)."""
    return to_float(decode(data, name).rgb)


def load_image(path: str | Path) -> np.ndarray:
    """An image file → (H, W, 3) float32 in [0, 1] (the policy, then / 255)."""
    return to_float(read(path).rgb)


def probe_format(data: bytes, name: str = "<bytes>") -> str:
    """Pillow's format name from the header only (cheap: no pixels decoded); raises
    :class:`ImageReadError` for non-images."""
    with _open(data, name, load=False) as im:
        return im.format or "unknown"


def _open(data: bytes, name: str, load: bool = True) -> Image.Image:
    try:
        with warnings.catch_warnings():  # the warning-level bomb limit is allowed
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            if load:
                im.load()
        return im
    except UnidentifiedImageError:
        raise ImageReadError(name, "not_an_image") from None
    except Image.DecompressionBombError as err:
        raise ImageReadError(name, "too_large", str(err)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        reason = "truncated" if "truncated" in str(err).lower() else "unreadable"
        raise ImageReadError(name, reason, str(err)) from None


def _samples(im: Image.Image, data: bytes, name: str, notes: list[str]) -> np.ndarray:
    """(H, W, C) uint8 or uint16 samples, C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA."""
    mode = im.mode
    if mode == "RGB":
        deep = _deep_colour(im, data, name)
        return deep if deep is not None else np.asarray(im)
    if mode in _ALPHA_MODES:
        deep = _deep_colour(im, data, name)
        return deep if deep is not None else np.asarray(im.convert(_ALPHA_MODES[mode]))
    if mode in _GREY_MODES:
        return np.asarray(im.convert("L"))[..., None]
    if mode == "P":
        notes.append("palette")
        return np.asarray(im.convert("RGBA" if "transparency" in im.info else "RGB"))
    if mode.startswith("I;16") or mode == "I":
        raw = np.asarray(im).astype(np.int64)
        return np.clip(raw, 0, 65535).astype(np.uint16)[..., None]
    if mode in _CONVERTED_MODES:
        notes.append(_CONVERTED_MODES[mode])
        return np.asarray(im.convert("RGB"))
    raise ImageReadError(name, "unsupported_mode", f"PIL mode {mode}")


def _deep_colour(im: Image.Image, data: bytes, name: str) -> np.ndarray | None:
    """The full-depth samples of a 16-bit colour PNG or TIFF (which Pillow has reduced to
    8 bits), else None."""
    if data[:8] == _PNG_MAGIC and len(data) > 25 and data[24] == 16:
        import cv2

        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is None or arr.dtype != np.uint16 or arr.ndim != 3:
            raise ImageReadError(name, "unreadable", "16-bit PNG that OpenCV cannot decode")
        return arr[..., [2, 1, 0, 3][:arr.shape[2]]] if arr.shape[2] >= 3 else arr  # BGR(A)
    bits = getattr(im, "tag_v2", {}).get(258) if data[:4] in _TIFF_MAGIC else None
    if bits is not None and max(np.atleast_1d(bits)) > 8:
        import tifffile

        arr = tifffile.imread(io.BytesIO(data), key=0)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.dtype != np.uint16:
            raise ImageReadError(name, "unsupported_mode",
                                 f"TIFF samples {arr.dtype} {arr.shape}")
        return arr
    return None


def orient(samples: np.ndarray, orientation: int) -> np.ndarray:
    """(H, W, C) as displayed for EXIF ``orientation`` 1..8 (the transposes of Pillow's
    ``ImageOps.exif_transpose``); other values leave it as it is."""
    if orientation in (5, 6, 7, 8):
        samples = samples.swapaxes(0, 1)  # 5: transpose; 6, 7, 8 build on it
    flips = {2: (slice(None), slice(None, None, -1)), 3: (slice(None, None, -1),) * 2,
             4: (slice(None, None, -1),), 6: (slice(None), slice(None, None, -1)),
             7: (slice(None, None, -1),) * 2, 8: (slice(None, None, -1),)}
    return samples[flips.get(orientation, ())]


def _to_rgb8(samples: np.ndarray, notes: list[str]) -> np.ndarray:
    """Alpha over white, 16 → 8 bits by rounding, grey → RGB (policy steps 4, 5, 3)."""
    peak = 65535.0 if samples.dtype == np.uint16 else 255.0
    channels = samples.shape[2]
    if channels in (2, 4):
        alpha = samples[..., -1:]
        samples = samples[..., :-1]
        if alpha.min(initial=peak) < peak:
            notes.append("alpha")
            a = alpha.astype(np.float64) / peak
            samples = samples.astype(np.float64) * a + peak * (1.0 - a)
    if peak > 255:
        notes.append("16bit")
    if peak > 255 or samples.dtype != np.uint8:
        samples = np.clip(np.round(samples.astype(np.float64) * (255.0 / peak)), 0, 255)
    if samples.shape[2] == 1:
        notes.append("grayscale")
        samples = np.repeat(samples, 3, axis=2)
    return np.ascontiguousarray(samples, dtype=np.uint8)


# --------------------------------------------------------------------------- encoding

def encode_png(img: np.ndarray) -> bytes:
    """(H, W, 3) float in [0, 1] (clipped) → 8-bit RGB PNG bytes."""
    u8 = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(u8).save(buf, format="PNG")
    return buf.getvalue()


def save_png(img: np.ndarray, path: str | Path) -> Path:
    """Write ``img`` ((H, W, 3) float in [0, 1]) as an 8-bit PNG atomically."""
    return atomic_write_bytes(path, encode_png(img))
