"""Resumable, checked downloads (the VOC tar of ``fetch``, the benchmark archives of
``ytmt.data.datasets``).

:func:`download` fetches into ``<dest>.part`` with HTTP ``Range`` resume and a progress line,
checks size and digest (md5 or SHA-256) and only then renames to ``dest``; without an
expected size and digest it trusts the first download (the caller records its hash).
:func:`verify_archive` checks a file downloaded by hand the same way.
"""

from __future__ import annotations

import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from ytmt import fileio
from ytmt.progress import Progress


class DownloadError(RuntimeError):
    """A download or archive that failed its size or checksum check."""


def file_digest(path: Path, algo: str = "md5", progress_label: str | None = None) -> str:
    """:func:`ytmt.fileio.file_digest` of a (large) file, with a progress line labelled
    ``progress_label`` when given."""
    if not progress_label:
        return fileio.file_digest(path, algo)
    prog = Progress(progress_label, path.stat().st_size, "B")
    digest = fileio.file_digest(path, algo, prog.update)
    prog.close()
    return digest


def download(url: str, dest: Path, size: int | None, digest: str | None, retries: int = 3,
             timeout_s: float = 60.0, algo: str = "md5") -> Path:
    """Download ``url`` to ``dest`` resuming ``dest.part`` with HTTP Range; check size, digest.

    A short download is resumed up to ``retries`` times, then raises DownloadError (the
    ``.part`` stays for the next run to resume). A checksum mismatch deletes the ``.part``
    and raises. ``dest`` itself only ever holds a complete file.

    ``size``/``digest`` ``None`` (trust on first use): the expected length is the server's
    ``Content-Length`` (without one, a clean end of stream), nothing is checked, and an
    existing ``dest`` is taken as it is; the caller records the hash."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file():
        if size is None or (dest.stat().st_size == size and (
                digest is None or file_digest(dest, algo, f"{algo} {dest.name}") == digest)):
            return dest
        dest.unlink()  # a different or damaged file under our name: fetch it again
    part = dest.with_name(dest.name + ".part")
    total, last_err = size, None
    for _attempt in range(retries + 1):
        have = part.stat().st_size if part.exists() else 0
        if total is not None and have > total:
            part.unlink()
            have = 0
        if total is not None and have == total:
            break
        try:
            total = _get(url, part, have, total, timeout_s, dest.name)
            if total is None:
                break  # no length announced: a clean end of stream is the end
        except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as err:
            if isinstance(err, urllib.error.HTTPError) and err.code == 416:
                if total is None:
                    break  # nothing left past what we have
                continue
            if isinstance(err, urllib.error.HTTPError) and err.code < 500:
                raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
            last_err = err
            print(f"download interrupted ({err}); resuming", flush=True)
    got = part.stat().st_size if part.exists() else 0
    if total is not None and got != total:
        why = f" (last error: {last_err})" if last_err else ""
        raise DownloadError(f"{url}: download truncated, got {got} of {total} bytes after "
                            f"{retries + 1} attempt(s){why}; re-run to resume from {part}")
    if digest is not None:
        got_digest = file_digest(part, algo, f"{algo} {dest.name}")
        if got_digest != digest:
            part.unlink()
            raise DownloadError(f"{url}: {algo} {got_digest} != expected {digest}; the "
                                "corrupt download was deleted, re-run to download again")
    os.replace(part, dest)
    return dest


def _get(url: str, part: Path, have: int, total: int | None, timeout_s: float,
         name: str) -> int | None:
    """One GET from byte ``have`` appended to ``part``; returns the total length (``total``,
    else the server's, else None)."""
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        if have and resp.status != 206:  # server ignored the Range: start over
            have = 0
        if total is None and resp.headers.get("Content-Length"):
            total = have + int(resp.headers["Content-Length"])
        prog = Progress(f"download {name}", total, "B", start=have)
        with open(part, "ab" if have else "wb") as f:
            while chunk := resp.read(1 << 20):
                f.write(chunk)
                prog.update(len(chunk))
        prog.close()
    return total


def verify_archive(path: Path, size: int, digest: str, algo: str = "md5",
                   what: str = "fetch.voc_tar") -> None:
    """Raise unless the file ``path`` (named by the setting ``what``) has this size and
    digest; never extracts anything."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} = {str(path)!r}: no such file")
    got = path.stat().st_size
    if got != size:
        raise DownloadError(f"{path}: {got} bytes, expected {size} (truncated or a different "
                            "file); nothing was extracted")
    got_digest = file_digest(path, algo, f"{algo} {path.name}")
    if got_digest != digest:
        raise DownloadError(f"{path}: {algo} {got_digest} != expected {digest}; nothing was "
                            "extracted")
