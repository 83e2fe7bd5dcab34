"""Which photos make which mixtures: disjoint photo pools per split, the per-epoch pairing
(the photo list reshuffled each epoch and split in halves, T half and R half), and which real
pairs are held out for validation. All drawn from ``seed``; :mod:`ytmt.data.synthesis` runs
the plan, and the reader runs the same plan for later training epochs (fresh mixtures).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ytmt.data.config import SynthesizeConfig
from ytmt.data.layout import PairFiles
from ytmt.data.shards import SPLITS
from ytmt.imageio import ImageReadError, read


@dataclass(frozen=True)
class Item:
    """One mixture to synthesise: a transmission photo and a reflection photo."""

    kind: str  # "synthetic" (the shard column ``source``)
    t_id: str
    t_path: str
    r_id: str
    r_path: str
    epoch: int  # pairing epoch within the plan


@dataclass(frozen=True)
class Task:
    """A chunk of mixtures. ``draw``: the training epoch whose fresh mixtures these are (0:
    the stored ones; its random draws are keyed without it, so epoch 0 of the fresh mode
    is the stored split byte for byte)."""

    split: str
    chunk: int  # chunk index within the split
    first_row: int
    items: tuple[Item, ...]
    seed: int
    draw: int = 0


def split_photos(entries: list[dict[str, Any]], cfg: SynthesizeConfig,
                 seed: int) -> dict[str, list[dict[str, Any]]]:
    """Disjoint photo pools for train / val / test. A split whose photos are named
    (``val_photos``, ``test_photos``: photo ids) holds exactly those, whatever else is
    fetched; otherwise it holds out a seeded random fraction of the photos, at least 2 when
    it has mixtures. Training gets the rest."""
    entries = sorted(entries, key=lambda e: e["id"])
    by_id = {e["id"]: e for e in entries}
    named = {"val": cfg.val_photos, "test": cfg.test_photos}
    for split, ids in named.items():
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise ValueError(f"synthesize.{split}_photos: {missing!r} not among the fetched "
                             f"photos ({len(entries)}; e.g. {[e['id'] for e in entries[:3]]!r})")
    taken = set(cfg.val_photos) | set(cfg.test_photos)
    rest = [e for e in entries if e["id"] not in taken]
    order = np.random.default_rng([seed, 0]).permutation(len(rest))
    shuffled = [rest[i] for i in order]

    def held(frac: float, n_mix: int) -> int:
        return 0 if n_mix == 0 else max(2, round(frac * len(entries)))

    pools: dict[str, list[dict[str, Any]]] = {}
    for split, frac, n_mix in (("val", cfg.val_image_fraction, cfg.val_mixtures),
                               ("test", cfg.test_image_fraction, cfg.test_mixtures)):
        if named[split]:
            pools[split] = [by_id[i] for i in named[split]]
        else:
            n = held(frac, n_mix)
            pools[split], shuffled = shuffled[:n], shuffled[n:]
    if len(shuffled) < 2:
        raise ValueError(f"{len(entries)} photos cannot give val {len(pools['val'])} + test "
                         f"{len(pools['test'])} held-out photos and at least 2 training "
                         "photos; fetch more photos or set val_mixtures / test_mixtures to 0")
    pools["train"] = shuffled
    return pools


def pair_epochs(photos: list[dict[str, Any]], n: int, rng: np.random.Generator) -> list[Item]:
    """``n`` synthetic items: each epoch reshuffles ``photos`` and pairs the T half with the
    R half, until ``n`` mixtures are planned. ValueError when ``n > 0`` and fewer than 2
    photos are given (no pair exists)."""
    if n > 0 and len(photos) < 2:
        raise ValueError(f"{len(photos)} photo(s) cannot give {n} mixtures: pairing a "
                         "transmission with a reflection needs at least 2")
    half = len(photos) // 2
    items: list[Item] = []
    epoch = 0
    while len(items) < n:
        perm = rng.permutation(len(photos))
        for k in range(min(half, n - len(items))):
            t, r = photos[perm[k]], photos[perm[half + k]]
            items.append(Item("synthetic", t["id"], t["path"], r["id"], r["path"], epoch))
        epoch += 1
    return items


def check_real_pairs(pairs: Sequence[PairFiles], min_side: int) -> tuple[list[PairFiles],
                                                                          Counter]:
    """Real pairs whose two images decode (bad ones counted by reason, not fatal)."""
    good, skipped = [], Counter()
    for p in pairs:
        try:
            read(p.blended, min_side)
            read(p.transmission, min_side)
        except ImageReadError as err:
            skipped[err.reason] += 1
            continue
        good.append(p)
    return good, skipped


def pairing_rng(seed: int, split: str, draw: int = 0) -> np.random.Generator:
    """The generator of ``split``'s pairing; ``draw`` > 0: training epoch ``draw``'s fresh
    pairing (0 keeps the stored plan's key)."""
    key = [seed, 1, SPLITS.index(split)] + ([draw] if draw else [])
    return np.random.default_rng(key)


def chunk_tasks(split: str, items: Sequence[Item], chunk: int, seed: int,
                draw: int = 0) -> list[Task]:
    """``items`` cut into tasks of ``chunk`` mixtures (the row groups of the split)."""
    return [Task(split, s // chunk, s, tuple(items[s:s + chunk]), seed, draw)
            for s in range(0, len(items), chunk)]


def plan(entries: list[dict[str, Any]], cfg: SynthesizeConfig,
         seed: int) -> dict[str, list[Item]]:
    """Every split's mixtures in order."""
    pools = split_photos(entries, cfg, seed)
    counts = {"train": cfg.train_mixtures, "val": cfg.val_mixtures, "test": cfg.test_mixtures}
    return {split: pair_epochs(pools[split], counts[split], pairing_rng(seed, split))
            for split in SPLITS}


def real_val_pair(name: str, index: int, every: int) -> bool:
    """Whether real pair ``name`` (position ``index`` in name order) is held out for
    validation by ``data.real_val = every``: its name's stem is an integer ≡ 0 mod
    ``every`` (Zhang et al.'s numbering: ids 9, 18, 27, ...), or, for other names, its
    position is. ``every`` 0: none."""
    if every <= 0:
        return False
    stem = name.rsplit(".", 1)[0]
    key = int(stem) if stem.isdigit() else index
    return key % every == 0


def split_real_pairs(pairs: Sequence[PairFiles],
                     every: int) -> tuple[list[PairFiles], list[PairFiles]]:
    """``(train, val)`` real pairs by :func:`real_val_pair` (in name order)."""
    ordered = sorted(pairs, key=lambda p: p.name)
    val = [p for i, p in enumerate(ordered) if real_val_pair(p.name, i, every)]
    held = {p.name for p in val}
    return [p for p in ordered if p.name not in held], val
