"""Which photos a ``ytmt separate`` call reads, and where each one's outputs go.

Files are taken as given; a folder gives its image files (``recursive``: also those of its
sub-folders, whose layout is mirrored under ``--out``). Every photo ``<stem>.<ext>`` writes
``<out>/<sub-folder>/<stem>_T.png`` and ``_R.png``. Photos that would write the same names
(``IMG_1.jpg`` and ``IMG_1.png``, common after RAW+JPEG exports, or two folders' ``a.jpg``)
are all kept under distinct names: ``IMG_1_jpg`` and ``IMG_1_png``, then ``-2``, ``-3``...
in sorted order, so every run names them the same way.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ytmt.data.layout import IMAGE_SUFFIXES


@dataclass(frozen=True)
class Photo:
    """An input and the output name (``sub/folders/stem``, no suffix) of its T and R."""

    path: Path
    name: PurePosixPath

    def outputs(self, out: Path) -> tuple[Path, Path]:
        return out / f"{self.name}_T.png", out / f"{self.name}_R.png"


def _images(folder: Path, recursive: bool) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(f for f in found if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def not_read(paths: Sequence[str | Path], recursive: bool = False) -> list[Path]:
    """What the folders among ``paths`` hold that :func:`plan_photos` does not read: files
    without an image suffix (a GIF, a text file) and, unless ``recursive``, sub-folders;
    sorted, so that ``ytmt separate`` can say what it skipped."""
    skipped: set[Path] = set()
    for folder in (Path(p) for p in paths):
        if not folder.is_dir():
            continue
        for f in folder.rglob("*") if recursive else folder.iterdir():
            if (f.is_file() and f.suffix.lower() not in IMAGE_SUFFIXES) or \
                    (f.is_dir() and not recursive):
                skipped.add(f)
    return sorted(skipped)


def _inputs(paths: Sequence[str | Path], recursive: bool) -> list[tuple[Path, PurePosixPath]]:
    """(file, output name before de-duplication) for every input, in order, once each."""
    items: dict[Path, PurePosixPath] = {}
    for p in map(Path, paths):
        if p.is_dir():
            found = _images(p, recursive)
            if not found:
                raise ValueError(f"{p}: folder holds no images "
                                 f"({', '.join(sorted(IMAGE_SUFFIXES))})"
                                 + ("" if recursive else "; --recursive reads sub-folders"))
            for f in found:
                items.setdefault(f.resolve(), PurePosixPath(
                    f.relative_to(p).with_suffix("").as_posix()))
        elif p.is_file():
            items.setdefault(p.resolve(), PurePosixPath(p.stem))
        else:
            raise ValueError(f"{p}: no such file or folder")
    return list(items.items())


def plan_photos(paths: Sequence[str | Path], recursive: bool = False) -> list[Photo]:
    """The photos of ``paths`` with distinct output names (see the module docstring)."""
    items = _inputs(paths, recursive)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, (_, name) in enumerate(items):
        groups[str(name).casefold()].append(i)  # IMG_1 and img_1 clash on some filesystems
    names = [name for _, name in items]
    for members in groups.values():
        if len(members) < 2:
            continue
        taken: set[str] = set()
        for i in sorted(members, key=lambda i: str(items[i][0])):
            base = f"{items[i][1]}_{items[i][0].suffix.lstrip('.').lower()}"
            name, k = base, 1
            while name.casefold() in taken:
                k += 1
                name = f"{base}-{k}"
            taken.add(name.casefold())
            names[i] = PurePosixPath(name)
    return [Photo(path, name) for (path, _), name in zip(items, names, strict=True)]
