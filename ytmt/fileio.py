"""Atomic file writes: a temporary file in the target's folder, then a rename.

A killed process leaves either the old file or the complete new one under the final name,
never a truncated one (only a hidden ``.<name>.*.tmp`` that the next write does not read).
Files get the permissions a plain ``open()`` would give them (``0666`` less the umask, so
usually ``0644``), not the ``0600`` of the temporary file, so a team sharing a cluster
filesystem can read each other's models.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (``os.umask`` sets
    it, which would race with other threads, e.g. in a Ray worker)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> Path:
    """Create ``path`` atomically, with the umask's permissions; ``write`` fills the open
    binary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def partial_dir(final: str | Path) -> Path:
    """A new empty folder beside ``final`` to build it in (then :func:`replace_dir`), with
    the umask's permissions (``tempfile.mkdtemp`` makes it ``0700``)."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.partial-"))
    os.chmod(tmp, 0o777 & ~current_umask())
    return tmp


def replace_dir(src: str | Path, dst: str | Path) -> None:
    """Put the finished folder ``src`` in place of ``dst`` (its old content removed): the
    old folder is renamed away first, so ``dst`` is never half old and half new, and it is
    restored if the new one cannot be moved in."""
    src, dst = Path(src), Path(dst)
    if not dst.exists():
        os.replace(src, dst)
        return
    old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
    os.replace(dst, old)
    try:
        os.replace(src, dst)
    except BaseException:
        os.replace(old, dst)
        raise
    shutil.rmtree(old, ignore_errors=True)


def file_digest(path: str | Path, algo: str = "sha256",
                on_read: Callable[[int], None] | None = None, chunk: int = 1 << 22) -> str:
    """Hex digest (``sha256``, ``md5``, any hashlib name) of a file read in 4 MiB chunks
    (the one chunked hashing of the project); ``on_read(n)`` after each chunk of ``n`` bytes
    (a progress line)."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
            if on_read is not None:
                on_read(len(block))
    return h.hexdigest()
