"""Safe reading of (nested) zip archives and the archive lock file ``datasets.lock.json``.

:class:`ZipIndex` lists the regular files of a zip, and of every zip inside it, under virtual
POSIX paths: a member ``SIR2/Postcard Dataset.zip`` appears as the folder
``SIR2/Postcard Dataset/``. Nothing is extracted by name: callers read the bytes of the
members they pick and write them under names they make, so an archive cannot write outside
its target. Members that are links, devices or folders, absolute or ``..`` paths,
``__MACOSX/`` and hidden (``.``) entries are ignored, as in ``sources.voc_members``. A damaged
archive (not a zip, truncated, a bad CRC) raises :class:`ArchiveDamaged`.

The lock file records, per archive, what the first download (or ``--from`` file) was::

    {"sir2": {"file": "SIR2.zip", "url": "https://...", "size": 123, "sha256": "..."}}

Every later use must match it (trust on first use).
"""

from __future__ import annotations

import json
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ytmt.fileio import atomic_write_text

MAX_NESTING = 3  # zips inside zips inside zips: deeper ones are ignored


class ArchiveError(ValueError):
    """An archive that lacks the expected layout (or cannot be read: ArchiveDamaged)."""


class ArchiveDamaged(ArchiveError):
    """Not a zip, truncated, or a member that fails its CRC."""


def _safe(name: str) -> PurePosixPath | None:
    """The member path when it is a plain relative path (no ``..``, not absolute, no
    ``__MACOSX`` or hidden parts), else None."""
    if "\\" in name or name.startswith("/"):
        return None
    path = PurePosixPath(name)
    if not path.parts or any(p in ("", "..", "__MACOSX") or p.startswith(".")
                             for p in path.parts):
        return None
    return path


def _is_regular(info: zipfile.ZipInfo) -> bool:
    if info.is_dir():
        return False
    kind = stat.S_IFMT(info.external_attr >> 16)
    return kind in (0, stat.S_IFREG)  # 0: no unix file type recorded (most zip tools)


def _check_end(path: Path, zf: zipfile.ZipFile) -> None:
    """The zip's end record must close the file. A truncated zip whose stored members are
    zips can otherwise open as one of them (zipfile finds the inner end record)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        f.seek(max(size - 22 - len(zf.comment), 0))
        if f.read(4) != b"PK\x05\x06":
            raise zipfile.BadZipFile("truncated: the end of central directory is not at the "
                                     "end of the file")


class ZipIndex:
    """The regular files of a zip and its nested zips, by virtual path (a context manager).

    ``files``: ``{PurePosixPath: (ZipFile, ZipInfo)}``; :meth:`read` returns a member's
    bytes (CRC-checked). Nested zips are spooled to a temporary folder in ``spool_dir``
    (removed on exit), so a member zip of any size never sits in memory."""

    def __init__(self, path: str | Path, spool_dir: str | Path | None = None):
        self.path = Path(path)
        if spool_dir is not None:
            Path(spool_dir).mkdir(parents=True, exist_ok=True)
        self._stack = ExitStack()
        self._spool = Path(self._stack.enter_context(
            tempfile.TemporaryDirectory(prefix=".ytmt-zip-", dir=spool_dir)))
        self.files: dict[PurePosixPath, tuple[zipfile.ZipFile, zipfile.ZipInfo]] = {}
        try:
            self._add(self.path, PurePosixPath(), 0)
        except BaseException:
            self._stack.close()
            raise

    def _open(self, path: Path, label: str) -> zipfile.ZipFile:
        try:
            zf = self._stack.enter_context(zipfile.ZipFile(path))
            _check_end(path, zf)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
            raise ArchiveDamaged(f"{label}: not a readable zip archive ({err}); nothing was "
                                 "extracted") from None
        return zf

    def _add(self, path: Path, prefix: PurePosixPath, depth: int) -> None:
        zf = self._open(path, str(self.path) + (f" ({prefix})" if depth else ""))
        for info in zf.infolist():
            rel = _safe(info.filename)
            if rel is None or not _is_regular(info):
                continue
            vpath = prefix / rel
            if rel.suffix.lower() == ".zip" and depth < MAX_NESTING:
                spooled = self._spool / f"{len(self.files)}-{depth}.zip"
                with self.guard(vpath), zf.open(info) as src, open(spooled, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 22)
                self._add(spooled, vpath.with_suffix(""), depth + 1)
            else:
                self.files[vpath] = (zf, info)

    @contextmanager
    def guard(self, vpath: PurePosixPath) -> Iterator[None]:
        """Turns the errors of reading a damaged member into one ArchiveError line."""
        try:
            yield
        except (zipfile.BadZipFile, zlib.error, EOFError) as err:
            raise ArchiveDamaged(f"{self.path}: damaged member {vpath} ({err}); nothing was "
                                 "extracted") from None

    def read(self, vpath: PurePosixPath) -> bytes:
        zf, info = self.files[vpath]
        with self.guard(vpath):
            return zf.read(info)

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> ZipIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------------- lock file


@dataclass(frozen=True)
class LockEntry:
    """What an archive was when first used: its file name, source URL, size and SHA-256."""

    file: str
    url: str
    size: int
    sha256: str


def read_lock(path: str | Path) -> dict[str, LockEntry]:
    """The entries of the lock file (``{}`` when it does not exist yet)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return {key: LockEntry(str(e["file"]), str(e["url"]), int(e["size"]),
                               str(e["sha256"])) for key, e in data.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ArchiveError(f"{path}: not a valid archive lock file ({err!r}); fix or delete "
                           "the broken entry") from None


def record_lock(path: str | Path, key: str, entry: LockEntry) -> None:
    """Add (or replace) one entry, keeping the others; written atomically, sorted."""
    entries = read_lock(path)
    entries[key] = entry
    data = {k: asdict(v) for k, v in sorted(entries.items())}
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")
