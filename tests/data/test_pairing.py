"""Which photos make which mixtures (:mod:`ytmt.data.pairing`): disjoint splits, the
per-epoch halves, and too few photos."""

from __future__ import annotations

import contextlib
import signal
from dataclasses import replace

import numpy as np
import pytest

from ytmt.data.pairing import pair_epochs, plan, split_photos
from ytmt.data.sources import read_index

from .conftest import TINY


def test_plan_epochs_halves_and_disjoint_splits(images_dir):
    entries = read_index(images_dir)
    plans = plan(entries, TINY, seed=0)
    assert [len(plans[s]) for s in ("train", "val", "test")] == [24, 8, 8]
    photos = {s: {i.t_id for i in p} | {i.r_id for i in p} for s, p in plans.items()}
    assert not photos["train"] & photos["val"]
    assert not photos["train"] & photos["test"]
    assert not photos["val"] & photos["test"]
    by_epoch: dict[int, list] = {}
    for item in plans["train"]:
        by_epoch.setdefault(item.epoch, []).append(item)
    half = len(photos["train"]) // 2
    for items in list(by_epoch.values())[:-1]:
        assert len(items) == half
        ts, rs = {i.t_id for i in items}, {i.r_id for i in items}
        assert len(ts) == half and len(rs) == half and not ts & rs  # T half, R half
    assert len(by_epoch) == 24 // half
    assert by_epoch[0] != by_epoch[1]  # reshuffled each epoch


def test_too_few_photos_for_held_out_splits(images_dir, tmp_path):
    entries = read_index(images_dir)[:5]
    with pytest.raises(ValueError, match="held-out photos"):
        plan(entries, TINY, seed=0)
    assert len(plan(entries, replace(TINY, val_mixtures=0, test_mixtures=0), 0)["val"]) == 0


def test_named_held_out_photos_stay_put_when_photos_are_added(images_dir):
    entries = read_index(images_dir)
    ids = sorted(e["id"] for e in entries)
    named = replace(TINY, val_photos=(ids[3], ids[0]), test_photos=(ids[5], ids[1]))
    few = split_photos([e for e in entries if e["id"] not in ids[6:]], named, seed=0)
    more = split_photos(entries, named, seed=0)
    for pools in (few, more):
        assert [e["id"] for e in pools["val"]] == [ids[3], ids[0]]
        assert [e["id"] for e in pools["test"]] == [ids[5], ids[1]]
    assert {e["id"] for e in few["train"]} < {e["id"] for e in more["train"]}
    assert not {e["id"] for e in more["train"]} & {ids[0], ids[1], ids[3], ids[5]}
    # one split named, the other drawn from the rest as before
    half = split_photos(entries, replace(TINY, test_photos=(ids[5], ids[1])), seed=0)
    assert not {e["id"] for e in half["val"]} & {ids[5], ids[1]}
    with pytest.raises(ValueError, match=r"test_photos: \['nope'\] not among the fetched"):
        split_photos(entries, replace(TINY, test_photos=(ids[0], "nope")), seed=0)


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail with TimeoutError instead of hanging when the block runs longer than this."""
    def expire(signum, frame):
        raise TimeoutError(f"did not return within {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_pairing_fewer_than_two_photos_fails_instead_of_looping():
    rng = np.random.default_rng(0)
    one = [{"id": "a", "path": "a.png"}]
    assert pair_epochs(one, 0, rng) == [] and pair_epochs([], 0, rng) == []
    for photos in (one, []):
        with deadline(5), pytest.raises(ValueError, match=f"{len(photos)} photo\\(s\\) cannot "
                                                          "give 3 mixtures: pairing a "
                                                          "transmission with a reflection "
                                                          "needs at least 2"):
            pair_epochs(photos, 3, rng)
