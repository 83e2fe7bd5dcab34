"""The public archives of the benchmark sets, and how each lays out its pairs (facts).

=========== ============== ==============================================================
set         archive        inside the archive
=========== ============== ==============================================================
real20      ``real20_420`` ``real20_420/{blended,transmission_layer}/<n>.jpg``; or, with
            / zhang_real   ``real20_copy: full``, Zhang et al.'s ``real`` folder; both keep
                           the 20 test photos 3, 4, 9, ... 110
objects     ``sir2``       ``SolidObjectDataset/<..>/m.jpg`` (I) and ``g.jpg`` (T)
postcard    ``sir2``       ``Postcard Dataset/<..>/<a>-m-<b>.png`` (I), ``<a>-g-<b>.png`` (T)
wild        ``sir2``       ``Wildscene/<scene>/m.jpg``, ``g.jpg``; 454 protocol: only
                           the scenes under ``withgt/`` (2017 release, 55)
nature      ``nature``     ``testB/`` (I) and ``testA1/`` (T), paired in sorted order
real_train  zhang_real     ``real/{blended,transmission_layer}/`` minus the 20 test photos
=========== ============== ==============================================================

SIR²'s subsets may sit in nested zips (``Postcard Dataset.zip``, read through
``ytmt.data.archives.ZipIndex``); its ``r`` (reflection) files are left out, so the reflection
target stays ``I − T`` as in the paper's protocol. Where each fact comes from: docs/data.md.
The pickers take the archive's file list and return :class:`PairSource` rows; they never
read bytes, and the names they give are made here (``[A-Za-z0-9_.-]``), never an archive's.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from ytmt.data.archives import ArchiveError
from ytmt.data.layout import BLENDED, IMAGE_SUFFIXES, TRANSMISSION

#: Zhang et al.'s real test photos (their README; ``data/real_test.txt`` of YTMT and ERRNet).
REAL20_IDS = ("3", "4", "9", "12", "15", "22", "23", "25", "29", "39", "46", "47", "58", "86",
              "87", "89", "93", "103", "107", "110")
#: Pair counts of the papers' protocols; another count is reported, not fatal.
EXPECTED = {"real20": 20, "objects": 200, "postcard": 199, "wild454": 55, "wild500": 101,
            "nature": 20, "real_train": 89}
_SIR2_FOLDER = {"objects": "solidobject", "postcard": "postcard", "wild": "wildscene"}
_POSTCARD_MIX = re.compile(r"^(.+)-m-(.+)$")


@dataclass(frozen=True)
class Archive:
    """A public archive: the file name to store it under, where it is (a direct download URL,
    or the page to download it by hand), and what it holds (for messages)."""

    key: str
    file: str
    url: str
    direct: bool
    holds: str


ARCHIVES = {a.key: a for a in (
    Archive("real20_420", "real20_420.zip",
            "https://github.com/mingcv/YTMT-Strategy/releases/download/data/real20_420.zip",
            True, "real20_420/{blended,transmission_layer}/"),
    Archive("sir2", "SIR2.zip",
            "https://www.dropbox.com/scl/fi/qgg1whla1jb3a9cgis18l/SIR2.zip"
            "?rlkey=kmhrc2uk63be2s9hzr43gc3hm&e=2&st=cfsh8sol&dl=1",
            True, "Postcard/SolidObject/Wildscene m/g pairs, possibly in nested zips"),
    Archive("nature", "nature.zip",
            "https://drive.google.com/file/d/1YWkm80jWsjX6XwLTHOsa8zK3pSRalyCg/view",
            False, "IBCLN's zip with testA1/ (T) and testB/ (I)"),
    Archive("zhang_real", "zhang_real.zip",
            "https://drive.google.com/drive/folders/1NYGL3wQ2pRkwfLMcV2zxXDV8JRSoVxwA",
            False, "a zip of the folder's real/{blended,transmission_layer}/"),
)}


@dataclass(frozen=True)
class PairSource:
    """One pair: its file name in the set, and its two member paths in the archive."""

    name: str
    blended: PurePosixPath
    transmission: PurePosixPath


def _images(files: Iterable[PurePosixPath]) -> list[PurePosixPath]:
    return sorted(f for f in files if f.suffix.lower() in IMAGE_SUFFIXES)


def _one_root(roots: list[PurePosixPath], what: str, archive: str) -> PurePosixPath:
    if len(roots) != 1:
        found = ", ".join(str(r) or "." for r in roots) or "none"
        raise ArchiveError(f"{archive}: expected one folder holding {what}, found {found}")
    return roots[0]


def common_layout_pairs(files: Iterable[PurePosixPath], archive: str,
                        test: bool) -> list[PairSource]:
    """Real20 (``test``: the 20 test photos, all required) or the real training pairs (the
    others) from the one folder with ``blended/`` and ``transmission_layer/``."""
    by_dir: dict[str, dict[PurePosixPath, set[str]]] = {BLENDED: defaultdict(set),
                                                        TRANSMISSION: defaultdict(set)}
    for f in _images(files):
        if f.parent.name in by_dir:
            by_dir[f.parent.name][f.parent.parent].add(f.name)
    roots = [d for d in by_dir[BLENDED] if by_dir[BLENDED][d] & by_dir[TRANSMISSION][d]]
    root = _one_root(roots, f"{BLENDED}/ and {TRANSMISSION}/", archive)
    names = sorted(by_dir[BLENDED][root] & by_dir[TRANSMISSION][root])
    keep = [n for n in names if (PurePosixPath(n).stem in REAL20_IDS) == test]
    if test:
        missing = sorted(set(REAL20_IDS) - {PurePosixPath(n).stem for n in keep}, key=int)
        if missing:
            raise ArchiveError(f"{archive}: Real20 test photo(s) {', '.join(missing)} missing "
                               f"from {root}/{BLENDED}/ or {TRANSMISSION}/")
    return [PairSource(n, root / BLENDED / n, root / TRANSMISSION / n) for n in keep]


def nature_pairs(files: Iterable[PurePosixPath], archive: str) -> list[PairSource]:
    """IBCLN's ``testB/`` (I) and ``testA1/`` (T): same names, else paired in sorted order as
    IBCLN's test loader does (each pair named after its ``testB`` file)."""
    parts: dict[str, dict[PurePosixPath, list[PurePosixPath]]] = {
        "testA1": defaultdict(list), "testB": defaultdict(list)}
    for f in _images(files):
        if f.parent.name in parts:
            parts[f.parent.name][f.parent.parent].append(f)
    root = _one_root([d for d in parts["testB"] if d in parts["testA1"]],
                     "testA1/ and testB/", archive)
    ts, ms = parts["testA1"][root], parts["testB"][root]
    if len(ts) != len(ms):
        raise ArchiveError(f"{archive}: {len(ms)} images in {root / 'testB'} but {len(ts)} "
                           f"in {root / 'testA1'}")
    pairs = []
    for t, m in zip(ts, ms, strict=True):
        if t.suffix.lower() != m.suffix.lower():
            raise ArchiveError(f"{archive}: {m} and {t} pair up but have different formats")
        pairs.append(PairSource(m.name, m, t))
    return pairs


def _sir2_ground_truth(name: str, subset: str) -> tuple[str, str] | None:
    """(the ground truth's file name, the pair's stem part) when ``name`` is a mixture."""
    p = PurePosixPath(name)
    if subset == "postcard":
        match = _POSTCARD_MIX.match(p.stem)
        return (f"{match[1]}-g-{match[2]}{p.suffix}", f"{match[1]}-{match[2]}") if match \
            else None
    return (f"g{p.suffix}", "") if p.stem.lower() == "m" else None


def sir2_pairs(files: Iterable[PurePosixPath], subset: str, wild_list: str | None,
               archive: str) -> list[PairSource]:
    """SIR² m/g pairs of ``subset`` (objects, postcard, wild), named after their scene path
    below the subset's folder; Wild's 454 list keeps only the scenes under ``withgt/``."""
    files = _images(files)
    lower = {str(f).lower(): f for f in files}
    key, pairs, names = _SIR2_FOLDER[subset], [], set()
    for f in files:
        hits = [i for i, part in enumerate(f.parts[:-1])
                if key in part.lower().replace(" ", "")]
        gt = _sir2_ground_truth(f.name, subset) if hits else None
        g = lower.get(str(f.parent / gt[0]).lower()) if gt else None
        if g is None:
            continue
        scene = list(f.parent.parts[hits[-1] + 1:])
        if subset == "wild":
            if wild_list == "454" and "withgt" not in (s.lower() for s in scene):
                continue
            scene = [s for s in scene if s.lower() != "withgt"]
        stem = "_".join(s for s in [*scene, gt[1]] if s) or "pair"
        name = re.sub(r"[^A-Za-z0-9_.\-]", "_", stem) + f.suffix.lower()
        if name in names:
            raise ArchiveError(f"{archive}: two {subset} pairs would be named {name}")
        names.add(name)
        pairs.append(PairSource(name, f, g))
    if not pairs:
        hint = (": the 454-image protocol needs the 2017 release's Wild withgt/ folder; use "
                "wild_list 500 for every Wild scene with a ground truth"
                if subset == "wild" and wild_list == "454" else "")
        raise ArchiveError(f"{archive}: no SIR² {subset} m/g pairs found{hint}")
    return pairs


def pick_pairs(files: Iterable[PurePosixPath], set_name: str, wild_list: str | None,
               archive: str) -> list[PairSource]:
    """The pairs of ``set_name`` in an archive's file list (see the module docstring)."""
    if set_name in _SIR2_FOLDER:
        return sir2_pairs(files, set_name, wild_list, archive)
    if set_name == "nature":
        return nature_pairs(files, archive)
    return common_layout_pairs(files, archive, test=set_name == "real20")
