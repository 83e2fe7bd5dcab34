"""The data manifest (``outputs/data_manifest.json``): which external real data is present.

Written by the ``scan`` stage from params ``data``; read by ``synthesize`` (real training
pairs) and ``evaluate`` (benchmarks)::

    {"root": "data",
     "real_pairs": {"path": "data/real_train", "present": false, "count": 0,
                    "digest": null, "error": null},
     "benchmarks": {"real20": {<same fields>}, ...}}

A set fetched by ``ytmt fetch-data`` also has ``source``: its ``SOURCE.json`` (archive,
SHA-256, Real20 copy, Wild list; ``ytmt.data.datasets``).

``present`` is true only for a folder in the common layout with at least one pair; an absent
folder is ``present: false`` with ``error: null`` (never fatal: a fresh clone has no data/),
a broken one is ``present: false`` with the reason in ``error``. ``digest`` hashes the
files' names and bytes, so DVC re-runs dependent stages when the data changes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ytmt.data.config import DataConfig
from ytmt.data.datasets import read_source
from ytmt.data.layout import LayoutError, PairFiles, digest, find_pairs


def scan_set(path: Path) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": str(path), "present": False, "count": 0,
                             "digest": None, "error": None}
    if not path.exists():
        return entry
    source = read_source(path)
    if source is not None:
        entry["source"] = source
    try:
        pairs = find_pairs(path)
    except (LayoutError, OSError) as err:
        entry["error"] = str(err)
        return entry
    if not pairs:
        entry["error"] = f"{path}: no image pairs in blended/"
        return entry
    entry.update(present=True, count=len(pairs), digest=digest(pairs))
    return entry


def scan(cfg: DataConfig) -> dict[str, Any]:
    root = Path(cfg.root)
    return {"root": cfg.root,
            "real_pairs": scan_set(root / cfg.real_pairs),
            "benchmarks": {name: scan_set(root / rel) for name, rel in cfg.benchmarks.items()}}


def write_manifest(manifest: dict[str, Any], out: str | Path) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, out)


def real_pairs(manifest_path: str | Path) -> list[PairFiles]:
    """The real training pairs the manifest lists as present ([] otherwise)."""
    manifest_path = Path(manifest_path)
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path}: missing; run the scan stage first")
    entry = json.loads(manifest_path.read_text())["real_pairs"]
    return find_pairs(entry["path"]) if entry["present"] else []
