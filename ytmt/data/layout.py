"""The common layout of real pairs and benchmark sets.

::

    <set>/blended/<name>              mixture I (photo through glass)
    <set>/transmission_layer/<name>   ground-truth T (same file name)
    <set>/reflection_layer/<name>     optional ground-truth R

Real20, SIR² (Objects, Postcard, Wild), Nature and Zhang et al.'s 90 real training pairs all
come in (or are converted to) this layout.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
BLENDED, TRANSMISSION, REFLECTION = "blended", "transmission_layer", "reflection_layer"


class LayoutError(ValueError):
    """A folder does not follow the common layout."""


@dataclass(frozen=True)
class PairFiles:
    name: str
    blended: Path
    transmission: Path
    reflection: Path | None


def find_pairs(folder: str | Path) -> list[PairFiles]:
    """Pairs of ``folder`` sorted by name. Raises LayoutError when the layout is broken:
    no ``blended/``, or a blended image without a transmission of the same name."""
    folder = Path(folder)
    blended_dir, trans_dir = folder / BLENDED, folder / TRANSMISSION
    if not blended_dir.is_dir() or not trans_dir.is_dir():
        raise LayoutError(f"{folder}: expected sub-folders {BLENDED}/ and {TRANSMISSION}/")
    refl_dir = folder / REFLECTION
    pairs, orphans = [], []
    for b in sorted(blended_dir.iterdir()):
        if b.suffix.lower() not in IMAGE_SUFFIXES or not b.is_file():
            continue
        t = trans_dir / b.name
        if not t.is_file():
            orphans.append(b.name)
            continue
        r = refl_dir / b.name
        pairs.append(PairFiles(b.stem, b, t, r if r.is_file() else None))
    if orphans:
        raise LayoutError(f"{folder}: {len(orphans)} blended image(s) without a "
                          f"{TRANSMISSION}/ file of the same name, e.g. {orphans[0]}")
    return pairs


def digest(pairs: list[PairFiles]) -> str:
    """A content hash of a set's files (names and bytes): changes when the data changes."""
    h = hashlib.sha256()
    for p in pairs:
        for f in (p.blended, p.transmission, p.reflection):
            if f is not None:
                h.update(f.name.encode())
                h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()
