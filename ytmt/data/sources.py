"""Training photo sources (``fetch`` stage) and robust image loading.

``fetch_images(cfg, out)`` fills ``out`` with clean 8-bit RGB images plus ``index.json``::

    <out>/<id>.jpg|.png     one image per id (clean JPEG/PNG files are copied byte for byte,
                            anything converted is re-encoded as lossless PNG)
    <out>/index.json        {"source": ..., "images": [{"id", "file", "height", "width"}, ...]}

The folder appears atomically (built as ``<out>.tmp`` and renamed), so a killed fetch never
leaves a half-filled ``outputs/images``.

Sources:

- ``samples``: natural RGB photos bundled in scikit-image's wheel (works offline).
- ``voc2012``: the official ``VOCtrainval_11-May-2012.tar`` (1,999,639,040 bytes, md5
  6cd6e144f989b92b3379bac3b3de84fd). Downloaded into ``cache_dir`` with HTTP Range resume
  and progress, size- and md5-checked *before* anything is extracted; then only regular
  files named ``VOCdevkit/VOC2012/JPEGImages/<name>.jpg`` are read from the tar stream
  (no ``extractall``: no path traversal, links or devices). ``voc_tar`` skips the download.
- ``folder``: every file with an image suffix under ``folder``, recursively.

Bad input never crashes the stage. Photos are decoded by :mod:`ytmt.imageio`, the decoder
inference, serving and the benchmarks use too, so training sees the pixels a model is later
scored and used on: it converts what it sensibly can (grayscale, palette, RGBA/LA over white,
CMYK, 16-bit rounded to 8, EXIF orientation) and raises
:class:`~ytmt.imageio.ImageReadError` with a short reason for the rest (not an image,
truncated, too small, unsupported mode); the stage counts every outcome in its metrics JSON.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ytmt.data.config import FetchConfig
from ytmt.data.download import DownloadError, download, verify_archive
from ytmt.data.layout import IMAGE_SUFFIXES
from ytmt.imageio import ImageReadError, decode
from ytmt.progress import Progress

__all__ = ["DownloadError", "download", "fetch_images", "read_index", "verify_archive",
           "voc_members"]

INDEX = "index.json"
VOC_MEMBER = re.compile(r"^(?:\./)?VOCdevkit/VOC2012/JPEGImages/([A-Za-z0-9_.\-]+)\.jpg$")
_STEREO = {"motorcycle_left": 0, "motorcycle_right": 1}


# ----------------------------------------------------------------------------- output


@dataclass
class FetchReport:
    """Counts for the metrics JSON: every input ends up kept, converted+kept or skipped."""

    source: str
    kept: int = 0
    converted_images: int = 0
    converted: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    examples: list[dict[str, str]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def skip(self, name: str, err: ImageReadError) -> None:
        self.skipped[err.reason] += 1
        if len(self.examples) < 20:
            self.examples.append({"file": name, "reason": err.reason, "detail": str(err)})

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "images": self.kept,
                "converted": self.converted_images,
                "skipped": sum(self.skipped.values()),
                "converted_by_reason": dict(sorted(self.converted.items())),
                "skipped_by_reason": dict(sorted(self.skipped.items())),
                "skipped_examples": self.examples, **self.extra}


class ImageSink:
    """Writes sanitised images and the index into ``<out>.tmp``; :meth:`commit` puts it in
    place of ``out``."""

    def __init__(self, out: str | Path, report: FetchReport, min_side: int,
                 limit: int | None):
        self.out = Path(out)
        self.tmp = self.out.with_name(self.out.name + ".tmp")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.report, self.min_side, self.limit = report, min_side, limit
        self.entries: list[dict[str, Any]] = []
        self._ids: set[str] = set()

    @property
    def full(self) -> bool:
        return self.limit is not None and len(self.entries) >= self.limit

    def add_bytes(self, image_id: str, name: str, data: bytes) -> None:
        """Validate encoded bytes; copy them as-is when clean, else re-encode as PNG."""
        try:
            img = decode(data, name, self.min_side)
        except ImageReadError as err:
            self.report.skip(name, err)
            return
        notes, fmt = list(img.notes), img.format
        if not notes and fmt in ("JPEG", "PNG"):
            self._store(image_id, img.rgb, notes, data, ".jpg" if fmt == "JPEG" else ".png")
        else:
            self._store(image_id, img.rgb, notes or [f"format_{fmt.lower()}"])

    def add_array(self, image_id: str, arr: np.ndarray) -> None:
        self._store(image_id, arr, [])

    def _store(self, image_id: str, arr: np.ndarray, notes: list[str],
               data: bytes | None = None, suffix: str = ".png") -> None:
        image_id = self._unique(image_id)
        path = self.tmp / f"{image_id}{suffix}"
        if data is not None:
            path.write_bytes(data)
        else:
            Image.fromarray(arr).save(path, compress_level=1)
        for n in notes:
            self.report.converted[n] += 1
        self.report.converted_images += bool(notes)
        self.report.kept += 1
        self.entries.append({"id": image_id, "file": path.name, "height": int(arr.shape[0]),
                             "width": int(arr.shape[1])})

    def _unique(self, image_id: str) -> str:
        base, k = re.sub(r"[^A-Za-z0-9_.\-]", "_", image_id), 1
        image_id = base
        while image_id in self._ids:
            k += 1
            image_id = f"{base}_{k}"
        self._ids.add(image_id)
        return image_id

    def commit(self) -> None:
        """Write the index and swap the folder in by renames: the old ``out`` is moved aside
        to ``<out>.old``, the new folder renamed to ``out``, then the old one deleted. If
        the second rename fails, the old folder is moved back. So ``out`` is only ever the
        previous complete folder or the new one; it is absent only between the two renames
        (a process killed right there leaves the previous folder in ``<out>.old``, which
        the next commit removes)."""
        if len(self.entries) < 2:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise ValueError(f"fetch {self.report.source}: only {len(self.entries)} usable "
                             f"image(s) (skipped: {dict(self.report.skipped)}); synthesis "
                             "needs at least 2 to pair a transmission with a reflection")
        index = {"source": self.report.source, "images": self.entries}
        (self.tmp / INDEX).write_text(json.dumps(index, indent=1) + "\n")
        old = self.out.with_name(self.out.name + ".old")
        shutil.rmtree(old, ignore_errors=True)  # left by a fetch killed mid-commit
        if self.out.exists():
            os.replace(self.out, old)
        try:
            os.replace(self.tmp, self.out)
        except BaseException:
            if old.exists():
                os.replace(old, self.out)
            raise
        shutil.rmtree(old, ignore_errors=True)


def read_index(images: str | Path) -> list[dict[str, Any]]:
    """The image entries written by :func:`fetch_images` (with ``path`` added)."""
    images = Path(images)
    path = images / INDEX
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; run the fetch stage first")
    entries = json.loads(path.read_text())["images"]
    for e in entries:
        e["path"] = str(images / e["file"])
    return entries


# ----------------------------------------------------------------------------- sources


def sample_images(names: tuple[str, ...]) -> Iterator[tuple[str, np.ndarray]]:
    """scikit-image's bundled photos as ``(name, (H, W, 3) uint8)``, read from the wheel
    (greyscale ones with the grey level in every channel)."""
    import skimage.data

    for name in names:
        if name in _STEREO:
            arr = skimage.data.stereo_motorcycle()[_STEREO[name]]
        else:
            arr = getattr(skimage.data, name)()
        if arr.ndim == 2 and arr.dtype == np.uint8:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"skimage.data.{name}: {arr.shape} {arr.dtype} is not an RGB photo")
        yield name, arr


def folder_files(folder: str | Path) -> tuple[list[Path], int]:
    """Image-suffixed files under ``folder`` (sorted, recursive) and the count of others."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"fetch.folder = {str(folder)!r}: not a folder")
    files, other = [], 0
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            if p.suffix.lower() in IMAGE_SUFFIXES:
                files.append(p)
            else:
                other += 1
    return files, other


def voc_members(tar_path: Path) -> Iterator[tuple[str, bytes]]:
    """``(image id, JPEG bytes)`` of the tar's ``VOCdevkit/VOC2012/JPEGImages/*.jpg``,
    streamed; every other member (folders, links, other paths) is ignored."""
    with tarfile.open(tar_path, "r|*") as tar:
        for member in tar:
            match = VOC_MEMBER.match(member.name)
            if not match or not member.isreg():
                continue
            f = tar.extractfile(member)
            if f is not None:
                yield match.group(1), f.read()


def fetch_images(cfg: FetchConfig, out: str | Path) -> dict[str, Any]:
    """Fill ``out`` from ``cfg.source``; returns the metrics dict (counts by outcome)."""
    report = FetchReport(cfg.source)
    sink = ImageSink(out, report, cfg.min_side, cfg.limit)
    try:
        if cfg.source == "samples":
            for name, arr in sample_images(cfg.samples):
                if sink.full:
                    break
                sink.add_array(name, arr)
        elif cfg.source == "folder":
            files, other = folder_files(cfg.folder or "")
            report.extra["other_files_ignored"] = other
            prog = Progress(f"fetch {cfg.folder}", len(files))
            root = Path(cfg.folder or "").expanduser()
            for p in files:
                if sink.full:
                    break
                sink.add_bytes(str(p.relative_to(root).with_suffix("")).replace(os.sep, "__"),
                               str(p), p.read_bytes())
                prog.update()
            prog.close()
        else:
            if cfg.voc_tar:
                tar = Path(cfg.voc_tar).expanduser()
                verify_archive(tar, cfg.voc_size, cfg.voc_md5)
            else:
                dest = Path(cfg.cache_dir).expanduser() / Path(cfg.voc_url).name
                tar = download(cfg.voc_url, dest, cfg.voc_size, cfg.voc_md5, cfg.retries,
                               cfg.timeout_s)
            report.extra["archive"] = str(tar)
            prog = Progress("extract VOC JPEGImages", cfg.limit)
            for image_id, data in voc_members(tar):
                if sink.full:
                    break
                sink.add_bytes(image_id, image_id + ".jpg", data)
                prog.update()
            prog.close()
        sink.commit()
    except BaseException:
        shutil.rmtree(sink.tmp, ignore_errors=True)
        raise
    return report.to_dict()
