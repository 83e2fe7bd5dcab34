"""Parquet shards of (M, T, R) training samples: schema, atomic writing, set completion.

Layout under the shards root (``outputs/shards``)::

    <root>/train/part-00000.parquet   one file per ~``shard_mb`` MB of samples
    <root>/val/part-00000.parquet
    <root>/test/part-00000.parquet
    <root>/manifest.json              written LAST: the set is complete iff it exists

Every part is written to ``part-XXXXX.parquet.tmp`` and renamed when closed, so a killed
writer never leaves a file that looks finished; ``manifest.json`` (also written atomically)
lists every split's parts with their row counts and byte sizes and is what readers trust.
A re-run keeps finished parts whose ``fingerprint`` (a hash of the synthesis settings, the
source files' bytes and the code that turns them into samples:
:func:`ytmt.data.synthesis.fingerprint`) matches and writes only what is missing.

One row per sample (all images the same size within a set):

=================  ==========  =====================================================
column             type        meaning
=================  ==========  =====================================================
id                 string      ``<split>-<index:06d>``, unique in the set
split              string      ``train`` | ``val`` | ``test``
source             string      ``synthetic`` | ``real``
is_real            bool        false: real pairs are kept apart (``real_train``/``real_val``)
t_id               string      id of the transmission (or real pair) image
r_id               string      id of the reflection image; null for real pairs
epoch              int32       synthesis epoch (image list reshuffled and halved per epoch)
height, width      int32       stored size in pixels
scale              int32       short side after the random rescale (even)
flip               bool        horizontal flip applied to T and R
crop_y, crop_x     int32       top-left corner of the crop in the rescaled image (pre-flip)
kernel_size        int32       Gaussian kernel size (0 for real pairs)
sigma              float32     blur σ of R (0 for real pairs)
gamma              float32     overflow factor γ (0 for real pairs)
overflow           float32     the subtracted m = (mean(M[M>1]) − 1)·γ; 0 if max(M) ≤ 1
mixture            binary      M, raw uint8 RGB, row-major (height, width, 3)
transmission       binary      T, same encoding
reflection         binary      R, same encoding
=================  ==========  =====================================================

Image columns are Arrow ``large_binary`` (int64 offsets): a row group's column may pass
2^31 bytes (``binary``'s int32 offsets overflow there). Readers accept both.

Two more kinds of split sit beside them (same atomic parts, listed in the same manifest):

- ``real_train`` / ``real_val`` (:data:`REAL_SCHEMA`): real photographed pairs, one row each,
  at their own size (short side bounded by ``synthesize.scale_max``): ``id``, ``name``,
  ``height``, ``width``, ``blended`` (I) and ``transmission`` (T), raw uint8 RGB. The reader
  draws them into training (``train.real_share``) with a fresh random transform each time;
  ``real_val`` pairs (``data.real_val``) are only validated on.
- ``photos`` (:data:`PHOTO_SCHEMA`): the training photo pool in the synthesis plan's order
  (``id``, ``path``, ``data`` = the file's bytes), from which the reader composes fresh
  mixtures every epoch (``train.mixtures: fresh``).

Image columns are raw ``uint8`` HWC bytes (encoding ``raw-rgb8``) with Parquet column
compression (``zstd`` by default; ``lz4`` or ``none`` trade size for speed): decoding is
a decompression plus a zero-copy view, far cheaper than PNG/JPEG per sample, which is what
lets the reader stream hundreds of augmented samples per second per core. Pixel values are
exact: for synthetic rows ``M == min(T + R, 255)`` holds byte for byte.

Readers take the root as a local path or as a URI that pyarrow opens (``s3://bucket/shards``,
``gs://...``, with ``?endpoint_override=host:port&scheme=http`` for MinIO-like stores), so
the nodes of a cluster can read one copy of the set from object storage
(:func:`read_manifest`, :func:`iter_row_groups`, :func:`open_part`). Synthesis writes to a
local folder; with ``synthesize.publish`` set the stage uploads it there (:func:`publish`:
parts first, manifest last) and the training stages read that copy (:func:`published`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ytmt.cluster import filesystem, is_uri, uri_join

SPLITS = ("train", "val", "test")
REAL_SPLITS = ("real_train", "real_val")
PHOTOS = "photos"
ENCODING = "raw-rgb8"
MANIFEST = "manifest.json"
FORMAT_VERSION = 2
IMAGE_COLUMNS = ("mixture", "transmission", "reflection")
REAL_IMAGE_COLUMNS = ("blended", "transmission")

SCHEMA = pa.schema([
    ("id", pa.string()),
    ("split", pa.string()),
    ("source", pa.string()),
    ("is_real", pa.bool_()),
    ("t_id", pa.string()),
    ("r_id", pa.string()),
    ("epoch", pa.int32()),
    ("height", pa.int32()),
    ("width", pa.int32()),
    ("scale", pa.int32()),
    ("flip", pa.bool_()),
    ("crop_y", pa.int32()),
    ("crop_x", pa.int32()),
    ("kernel_size", pa.int32()),
    ("sigma", pa.float32()),
    ("gamma", pa.float32()),
    ("overflow", pa.float32()),
    ("mixture", pa.large_binary()),
    ("transmission", pa.large_binary()),
    ("reflection", pa.large_binary()),
], metadata={"encoding": ENCODING, "format_version": str(FORMAT_VERSION)})

REAL_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("name", pa.string()),
    ("height", pa.int32()),
    ("width", pa.int32()),
    ("blended", pa.large_binary()),
    ("transmission", pa.large_binary()),
], metadata={"encoding": ENCODING, "format_version": str(FORMAT_VERSION)})

PHOTO_SCHEMA = pa.schema([
    ("id", pa.string()),
    ("path", pa.string()),
    ("data", pa.large_binary()),
], metadata={"format_version": str(FORMAT_VERSION)})

META_COLUMNS = tuple(n for n in SCHEMA.names if n not in IMAGE_COLUMNS)


@dataclass
class Batch:
    """A chunk of samples: images ``(N, H, W, 3) uint8`` plus one metadata list per column."""

    mixture: np.ndarray
    transmission: np.ndarray
    reflection: np.ndarray
    meta: dict[str, list[Any]]

    def __len__(self) -> int:
        return len(self.mixture)

    def to_table(self) -> pa.Table:
        n, h, w, c = self.mixture.shape
        if c != 3 or self.mixture.dtype != np.uint8:
            raise ValueError(f"images must be (N, H, W, 3) uint8, got {self.mixture.shape} "
                             f"{self.mixture.dtype}")
        cols: dict[str, Any] = {k: self.meta[k] for k in META_COLUMNS}
        for name in IMAGE_COLUMNS:
            arr = np.ascontiguousarray(getattr(self, name))
            # One contiguous buffer, N fixed-length slices: no per-row Python bytes objects.
            cols[name] = raw_images(arr)
        return pa.table(cols, schema=SCHEMA)


def raw_images(images: np.ndarray | list[np.ndarray]) -> pa.Array:
    """Images (``(N, H, W, 3) uint8``, or a list of ``(H, W, 3) uint8`` of any sizes) as one
    ``large_binary`` array of their raw bytes, without per-row Python objects."""
    flat = [np.ascontiguousarray(im).reshape(-1) for im in images]
    sizes = np.array([f.size for f in flat], np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    data = np.concatenate(flat) if flat else np.zeros(0, np.uint8)
    return pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(flat), [None, pa.py_buffer(offsets), pa.py_buffer(data)])


class ShardsMissing(FileNotFoundError):
    """The shard set a stage needs is missing or incomplete (the message names the fix)."""


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def _fsync_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class PartWriter:
    """Writes one part file of ``schema`` (the mixtures' by default); visible under its final
    name only after :meth:`close`."""

    def __init__(self, path: Path, fingerprint: str, compression: str = "zstd",
                 compression_level: int = 3, schema: pa.Schema = SCHEMA):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        schema = schema.with_metadata({**schema.metadata, b"fingerprint": fingerprint.encode()})
        level = {"compression_level": compression_level} if compression == "zstd" else {}
        dictionary = [c for c in ("split", "source") if c in schema.names]
        self._writer = pq.ParquetWriter(
            self.tmp, schema, compression=compression, use_dictionary=dictionary,
            write_statistics=False, **level)
        self.rows = 0

    def write(self, batch: Batch | pa.Table) -> None:
        """Append ``batch`` (a :class:`Batch` or a table of the part's schema) as one row
        group."""
        table = batch.to_table() if isinstance(batch, Batch) else batch
        self._writer.write_table(table, row_group_size=max(1, len(table)))
        self.rows += len(table)

    def close(self) -> None:
        self._writer.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self._writer.close()
        self.tmp.unlink(missing_ok=True)


def part_fingerprint(path: Path) -> str | None:
    """The fingerprint a finished part was written with (None if unreadable)."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowInvalid):
        return None
    value = meta.get(b"fingerprint")
    return value.decode() if value else None


def write_manifest(root: Path, fingerprint: str, splits: dict[str, list[dict[str, Any]]],
                   extra: dict[str, Any]) -> dict[str, Any]:
    """Write ``manifest.json`` (last, atomically).

    ``splits``: name -> [{"file", "rows", "row_groups": [rows of each row group]}, ...]."""
    root = Path(root)
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION, "encoding": ENCODING, "fingerprint": fingerprint,
        "splits": {}, **extra,
    }
    for split, parts in splits.items():
        entries = []
        for p in parts:
            path = root / split / p["file"]
            groups = [int(n) for n in p["row_groups"]]
            if sum(groups) != p["rows"]:
                raise ValueError(f"{path}: row groups {groups} do not add up to {p['rows']} rows")
            entries.append({"file": p["file"], "rows": int(p["rows"]), "row_groups": groups,
                            "bytes": path.stat().st_size})
        manifest["splits"][split] = {"rows": sum(e["rows"] for e in entries), "parts": entries}
    _fsync_write(root / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def join(root: str | Path, *names: str) -> str | Path:
    """``root / names``: a path for a local root, a URI (query kept last) for a URI root."""
    return uri_join(str(root), *names) if is_uri(root) else Path(root, *names)


def _read_bytes(location: str | Path) -> bytes | None:
    """The file's bytes, None when it does not exist."""
    if not is_uri(location):
        return Path(location).read_bytes() if Path(location).is_file() else None
    fs, inner = filesystem(str(location))
    try:
        with fs.open_input_stream(inner) as f:
            return f.read()
    except FileNotFoundError:
        return None


def _sizes(locations: list[str | Path]) -> list[int | None]:
    """Each file's size in bytes, None where it does not exist."""
    import pyarrow.fs as pafs

    out: list[int | None] = []
    for loc in locations:
        if not is_uri(loc):
            out.append(Path(loc).stat().st_size if Path(loc).is_file() else None)
            continue
        fs, inner = filesystem(str(loc))
        info = fs.get_file_info(inner)
        out.append(info.size if info.type == pafs.FileType.File else None)
    return out


def open_part(location: str | Path) -> pq.ParquetFile:
    """A part file (a path, or a URI as :func:`iter_row_groups` yields) for reading."""
    if not is_uri(location):
        return pq.ParquetFile(location)
    fs, inner = filesystem(str(location))
    return pq.ParquetFile(fs.open_input_file(inner))


def shard_set_key(root: str | Path) -> str:
    """A content key of the shard set under ``root``: the SHA-1 of its ``manifest.json``,
    which holds the fingerprint of everything that produced the parts (settings, seed, the
    inputs' bytes, the code) and every part's rows and bytes. Resume keys of trainings and
    sweeps hash it. Raises FileNotFoundError when the set has no manifest (unfinished)."""
    path = join(root, MANIFEST)
    data = _read_bytes(path)
    if data is None:
        raise FileNotFoundError(f"{path}: missing, so the shard set is incomplete; re-run "
                                "synthesize to finish it")
    return hashlib.sha1(data).hexdigest()


def read_manifest(root: str | Path) -> dict[str, Any]:
    """The manifest of a complete shard set, checked against the files (sizes; no decoding).
    ``root`` is a folder or a URI (``s3://bucket/shards?endpoint_override=...``).

    Raises FileNotFoundError when the set is absent or unfinished and ValueError when the
    manifest and the files disagree."""
    remote = is_uri(root)
    if not remote:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no shard folder; run `dvc repro synthesize` "
                                    "(or pipelines/synthesize.py) first")
    path = join(root, MANIFEST)
    try:
        data = _read_bytes(path)
    except OSError as err:  # an unreachable store, missing credentials, no such bucket
        raise FileNotFoundError(f"{path}: cannot be read ({err})") from None
    if data is None:
        raise FileNotFoundError(f"{path}: missing, so the shard set is incomplete (a "
                                "synthesis run was interrupted, or not uploaded?); re-run "
                                "synthesize to finish it" + (" and upload it" if remote else ""))
    try:
        manifest = json.loads(data)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if manifest.get("format_version") != FORMAT_VERSION or manifest.get("encoding") != ENCODING:
        raise ValueError(f"{path}: format {manifest.get('format_version')!r}/"
                         f"{manifest.get('encoding')!r}, this reader understands "
                         f"{FORMAT_VERSION}/{ENCODING}")
    parts = [(join(root, split, part["file"]), part["bytes"])
             for split, info in manifest.get("splits", {}).items() for part in info["parts"]]
    for (f, want), size in zip(parts, _sizes([f for f, _ in parts]), strict=True):
        if size is None:
            raise FileNotFoundError(f"{f}: listed in {path} but missing")
        if size != want:
            raise ValueError(f"{f}: {size} bytes, manifest says {want}"
                             " (file changed or truncated); re-run synthesize")
    return manifest


def iter_row_groups(root: str | Path, split: str,
                    manifest: dict[str, Any]) -> Iterable[tuple[str | Path, int, int]]:
    """``(part location, row group index, rows)`` of ``split`` in storage order; a location is
    a path, or a URI for a URI root (open it with :func:`open_part`)."""
    for part in manifest["splits"][split]["parts"]:
        for i, rows in enumerate(part["row_groups"]):
            yield join(root, split, part["file"]), i, rows


def _listed(manifest: dict[str, Any]) -> set[str]:
    """``split/file`` of every part a manifest lists."""
    return {f"{split}/{part['file']}" for split, info in manifest.get("splits", {}).items()
            for part in info["parts"]}


def publish(local: str | Path, dest: str) -> dict[str, Any]:
    """Upload the complete shard set under ``local`` to ``dest``, a URI (``s3://bucket/shards``,
    ``?endpoint_override=host:port&scheme=http`` for MinIO-like stores) or a folder every node
    mounts, so that the nodes of a cluster read one copy. ``dest``'s old manifest is deleted
    before the first part is written and the new one is written after the last, so a reader
    never takes a half-uploaded set for a complete one; parts only the old set listed are
    removed afterwards (nothing else under ``dest`` is touched). Returns what was uploaded."""
    import pyarrow.fs as pafs

    manifest = read_manifest(local)  # a complete local set, or FileNotFoundError/ValueError
    local = Path(local).resolve()
    fs, base = filesystem(str(dest))
    base = base.rstrip("/")
    old = _read_bytes(join(dest, MANIFEST))
    if old is not None:
        fs.delete_file(f"{base}/{MANIFEST}")
    files = sorted(_listed(manifest))
    for split in sorted({f.split("/")[0] for f in files}):
        fs.create_dir(f"{base}/{split}", recursive=True)
    for rel in files:
        pafs.copy_files(str(local / rel), f"{base}/{rel}",
                        source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    data = (local / MANIFEST).read_bytes()
    with fs.open_output_stream(f"{base}/{MANIFEST}") as f:
        f.write(data)
    read_manifest(dest)  # every part there at its size
    stale = _listed(json.loads(old)) - set(files) if old is not None else set()
    for rel in sorted(stale):
        try:
            fs.delete_file(f"{base}/{rel}")
        except FileNotFoundError:
            pass
    size = sum(p["bytes"] for info in manifest["splits"].values() for p in info["parts"])
    return {"uri": str(dest), "files": len(files), "bytes": size, "removed": len(stale),
            "key": hashlib.sha1(data).hexdigest()}


def published(local: str | Path, dest: str) -> str:
    """``dest`` when it holds the same shard set as ``local`` (the same manifest bytes);
    :class:`ShardsMissing`, naming the fix, when it holds another set or none."""
    want = shard_set_key(local)
    try:
        there = shard_set_key(dest)
    except FileNotFoundError:
        there = None
    if there != want:
        what = "no shard set" if there is None else f"another shard set than {local}"
        raise ShardsMissing(
            f"synthesize.publish = {dest} holds {what}; the synthesize stage uploads it "
            "there (`dvc repro -f synthesize`, or pipelines/synthesize.py)")
    return str(dest)


def shards_for_training(local: str | Path, publish: str | None) -> str | Path:
    """The shard set the training stages read: ``publish``'s copy when it is set (checked by
    :func:`published` to be the set under ``local``), else ``local``."""
    if not publish or str(local) == str(publish):
        return local
    return published(local, publish)
