"""Public benchmark sets and Zhang et al.'s real training pairs, fetched into ``data/``.

``ytmt fetch-data SET... --data DIR`` and the ``fetch_data`` stage (params
``data.download``) call :func:`fetch_sets`. Each set lands in the common layout the evaluate
stage reads (``ytmt.data.layout``) plus a ``SOURCE.json``::

    {"set": "wild", "copy": null, "wild_list": "454", "archive": "SIR2.zip",
     "sha256": "...", "url": "https://...", "fetched": "2025-01-01T00:00:00+00:00",
     "pairs": 55}

Where the sets come from and how their archives look: ``ytmt.data.upstream``.

Safety: an archive is checked against ``datasets.lock.json`` (size and SHA-256, recorded at
first use) before anything is read; members are read by the names the set's layout expects
and written under names made here (``ytmt.data.archives``). Each set is built in a hidden
folder beside its target and renamed into place, so a failure leaves no partial folder and an
existing one untouched. A set whose ``SOURCE.json`` matches the lock is left as it is: a
re-run downloads and extracts nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from ytmt.data.archives import (
    ArchiveDamaged,
    ArchiveError,
    LockEntry,
    ZipIndex,
    read_lock,
    record_lock,
)
from ytmt.data.config import DataConfig, DownloadConfig
from ytmt.data.download import download, file_digest, verify_archive
from ytmt.data.layout import BLENDED, TRANSMISSION, LayoutError, find_pairs
from ytmt.data.upstream import ARCHIVES, EXPECTED, Archive, PairSource, pick_pairs
from ytmt.imageio import ImageReadError, probe_format
from ytmt.progress import Progress

SOURCE_FILE = "SOURCE.json"
SETS = ("real20", "objects", "postcard", "wild", "nature", "real_train")
ALIASES = {"sir2": ("objects", "postcard", "wild")}
DEFAULT_FOLDERS = {"real20": "real20", "objects": "sir2/objects", "postcard": "sir2/postcard",
                   "wild": "sir2/wild", "nature": "nature", "real_train": "real_train"}


@dataclass(frozen=True)
class Target:
    """One set to fetch: where it goes, which archive it comes from and which variant."""

    name: str
    folder: Path
    archive: str
    copy: str | None
    wild_list: str | None


def expand_sets(sets: Iterable[str]) -> list[str]:
    """Set names with ``sir2`` expanded, in order, each once."""
    out: list[str] = []
    for s in sets:
        for name in ALIASES.get(s, (s,)):
            if name not in SETS:
                raise ValueError(f"{name!r}: unknown set; choose from "
                                 f"{', '.join(SETS + tuple(ALIASES))}")
            if name not in out:
                out.append(name)
    return out


def archive_of(name: str, real20_copy: str) -> str:
    if name == "real20":
        return "real20_420" if real20_copy == "real20_420" else "zhang_real"
    return {"objects": "sir2", "postcard": "sir2", "wild": "sir2", "nature": "nature",
            "real_train": "zhang_real"}[name]


def one_archive(sets: Iterable[str], real20_copy: str) -> str:
    """The archive all ``sets`` come from (for ``--from``/``--url``); ValueError if several."""
    keys = sorted({archive_of(s, real20_copy) for s in expand_sets(sets)})
    if len(keys) != 1:
        raise ValueError(f"--from/--url: {', '.join(sets)} come from different archives "
                         f"({', '.join(keys)}); fetch them one archive at a time")
    return keys[0]


def folders_of(data: DataConfig) -> dict[str, str]:
    """Each set's folder under ``data.root``: ``data.benchmarks`` / ``data.real_pairs``,
    else :data:`DEFAULT_FOLDERS`."""
    named = {k: v for k, v in data.benchmarks.items() if k in SETS}
    return {**DEFAULT_FOLDERS, **named, "real_train": data.real_pairs}


def read_source(folder: Path) -> dict[str, Any] | None:
    """The folder's ``SOURCE.json`` (None when absent or unreadable)."""
    try:
        return json.loads((folder / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- fetching


def _targets(cfg: DownloadConfig, root: Path, folders: Mapping[str, str]) -> list[Target]:
    return [Target(n, root / folders[n], archive_of(n, cfg.real20_copy),
                   cfg.real20_copy if n == "real20" else None,
                   str(cfg.wild_list) if n == "wild" else None)
            for n in expand_sets(cfg.sets)]


def _side(folder: Path, tag: str) -> Path:
    """The hidden sibling a set is built in (``tmp``) or parked in while swapped (``old``)."""
    return folder.with_name(f".{folder.name}.fetch-{tag}")


def _tidy(folder: Path) -> None:
    """Undo what a killed fetch left: a half-built folder, or a swap cut between renames."""
    shutil.rmtree(_side(folder, "tmp"), ignore_errors=True)
    old = _side(folder, "old")
    if old.exists():
        if folder.exists():
            shutil.rmtree(old)
        else:
            os.replace(old, folder)


def _swap(tmp: Path, folder: Path) -> None:
    old = _side(folder, "old")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def is_current(target: Target, entry: LockEntry | None) -> bool:
    """True when the set's folder holds what the locked archive gives (nothing to do)."""
    rec = read_source(target.folder)
    if entry is None or rec is None:
        return False
    want = {"set": target.name, "copy": target.copy, "wild_list": target.wild_list,
            "sha256": entry.sha256}
    if any(rec.get(k) != v for k, v in want.items()):
        return False
    try:
        return rec.get("pairs") == len(find_pairs(target.folder))
    except (LayoutError, OSError):
        return False


def _check_target(target: Target, cfg: DownloadConfig, stale: bool) -> None:
    """Fail before any download: a folder made by hand, or a Drive archive without a file."""
    if target.folder.exists() and not (target.folder / SOURCE_FILE).is_file():
        raise ValueError(f"{target.folder}: exists and was not made by fetch-data (no "
                         f"{SOURCE_FILE}); move it away to fetch {target.name}")
    src = ARCHIVES[target.archive]
    if stale and not src.direct and src.key not in cfg.archives and src.key not in cfg.urls:
        raise ValueError(f"{target.name}: {src.url} is on Google Drive, which plain HTTP "
                         f"cannot download reliably; download it by hand ({src.holds}) and "
                         f"pass it with --from FILE (params: data.download.archives."
                         f"{src.key})")


def _obtain(src: Archive, cfg: DownloadConfig,
            entry: LockEntry | None) -> tuple[Path, LockEntry, bool]:
    """The archive's file, checked against its lock entry; the entry (made now on first
    use); whether the file was given by hand."""
    given = cfg.archives.get(src.key)
    if given is not None:
        path = Path(given).expanduser()
        if entry is not None:
            verify_archive(path, entry.size, entry.sha256, "sha256", f"archive {src.key}")
        elif not path.is_file():
            raise FileNotFoundError(f"archive {src.key} = {str(path)!r}: no such file")
    else:
        path = download(cfg.urls.get(src.key, src.url),
                        Path(cfg.cache_dir).expanduser() / src.file,
                        entry.size if entry else None, entry.sha256 if entry else None,
                        algo="sha256")
    if entry is None:
        entry = LockEntry(path.name, cfg.urls.get(src.key, src.url), path.stat().st_size,
                          file_digest(path, "sha256", f"sha256 {path.name}"))
    return path, entry, given is not None


def _check_image(data: bytes, member: PurePosixPath, archive: str) -> None:
    try:
        probe_format(data, str(member))  # the header only: cheap, catches junk
    except ImageReadError as err:
        raise ArchiveError(f"{archive}: {member} is not an image ({err})") from None


def _build(index: ZipIndex, target: Target, pairs: list[PairSource],
           record: dict[str, Any]) -> Path:
    """The set in its hidden build folder: the pairs' bytes as they are, and SOURCE.json."""
    tmp = _side(target.folder, "tmp")
    for sub in (BLENDED, TRANSMISSION):
        (tmp / sub).mkdir(parents=True)
    prog = Progress(f"extract {target.name}", len(pairs))
    for p in pairs:
        for sub, member in ((BLENDED, p.blended), (TRANSMISSION, p.transmission)):
            data = index.read(member)
            _check_image(data, member, index.path.name)
            (tmp / sub / p.name).write_bytes(data)
        prog.update()
    prog.close()
    (tmp / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return tmp


def _report(target: Target, state: str, pairs: int, entry: LockEntry) -> dict[str, Any]:
    return {"path": str(target.folder), "state": state, "pairs": pairs,
            "archive": target.archive, "sha256": entry.sha256, "copy": target.copy,
            "wild_list": target.wild_list}


def _warn_count(target: Target, n: int) -> None:
    expected = EXPECTED[target.name + (target.wild_list or "")]
    if n != expected:
        print(f"warning: {target.name}: {n} pairs; the papers' protocol has {expected}",
              file=sys.stderr, flush=True)


def _fetch_archive(key: str, todo: list[Target], cfg: DownloadConfig,
                   entry: LockEntry | None) -> dict[str, dict[str, Any]]:
    """Obtain one archive, build every set of ``todo`` from it, record the lock (first use),
    then swap the sets into place. On any error no set of ``todo`` changes."""
    src = ARCHIVES[key]
    path, entry_used, given = _obtain(src, cfg, entry)
    built = []
    try:
        with ZipIndex(path, spool_dir=Path(cfg.cache_dir).expanduser()) as index:
            for t in todo:
                pairs = pick_pairs(index.files, t.name, t.wild_list, path.name)
                _warn_count(t, len(pairs))
                record = {"set": t.name, "copy": t.copy, "wild_list": t.wild_list,
                          "archive": path.name, "sha256": entry_used.sha256,
                          "url": cfg.urls.get(key, src.url),
                          "fetched": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                          "pairs": len(pairs)}
                built.append((t, _build(index, t, pairs, record), len(pairs)))
    except BaseException as err:
        for t in todo:
            shutil.rmtree(_side(t.folder, "tmp"), ignore_errors=True)
        if isinstance(err, ArchiveDamaged) and entry is None and not given:
            path.unlink(missing_ok=True)  # an unverified download that is broken: never reuse
            raise ArchiveDamaged(f"{err} (the download was deleted: re-run to download it "
                                 "again)") from None
        raise
    if entry is None:
        record_lock(cfg.lock, key, entry_used)
    out = {}
    for t, tmp, n in built:
        _swap(tmp, t.folder)
        out[t.name] = _report(t, "fetched", n, entry_used)
    return out


def fetch_sets(cfg: DownloadConfig, root: str | Path,
               folders: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Fetch ``cfg.sets`` into ``root`` (``folders``: set → folder under it, default
    :data:`DEFAULT_FOLDERS`). Returns the record the stage writes::

        {"lock": "datasets.lock.json",
         "sets": {name: {"path", "state": "fetched" | "present", "pairs", "archive",
                         "sha256", "copy", "wild_list"}}}

    Raises ValueError (ArchiveError, a folder not made here, a Drive archive without a
    file), FileNotFoundError or DownloadError, before any download where it can; an archive
    that fails changes none of its sets. Sets present and matching the lock are skipped."""
    targets = _targets(cfg, Path(root), {**DEFAULT_FOLDERS, **(folders or {})})
    if not targets:
        return {"lock": cfg.lock, "sets": {}}
    lock = read_lock(cfg.lock)
    for t in targets:
        _tidy(t.folder)
    stale = {t.name for t in targets if not is_current(t, lock.get(t.archive))}
    for t in targets:
        _check_target(t, cfg, t.name in stale)
    out: dict[str, dict[str, Any]] = {}
    for key in dict.fromkeys(t.archive for t in targets):
        group = [t for t in targets if t.archive == key]
        for t in group:
            if t.name not in stale:
                out[t.name] = _report(t, "present", read_source(t.folder)["pairs"], lock[key])
        todo = [t for t in group if t.name in stale]
        if todo:
            out.update(_fetch_archive(key, todo, cfg, lock.get(key)))
    return {"lock": cfg.lock, "sets": {t.name: out[t.name] for t in targets}}


def summary(record: Mapping[str, Any]) -> list[str]:
    """One line per set of a :func:`fetch_sets` record, for the CLI and the stage."""
    lines = []
    for name, e in record["sets"].items():
        what = f"{e['pairs']} pairs in {e['path']}"
        variant = ", ".join(f"{k} {e[k]}" for k in ("copy", "wild_list") if e[k])
        done = "fetched" if e["state"] == "fetched" else "present, matches the lock"
        lines.append(f"{name}: {done}: {what}" + (f" ({variant})" if variant else ""))
    return lines or ["no sets requested (data.download.sets is empty): nothing fetched"]
