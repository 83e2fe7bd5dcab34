"""The training loop with real pairs: ``train.real_share`` and ``train.mixtures: fresh`` reach
the reader, and the held-out real pairs (``real_val``) are scored beside the synthetic
validation split as ``val_real_*``. In-process (num_workers 0), tiny width and crops."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tests.train.conftest import tiny_params
from ytmt.data.layout import find_pairs
from ytmt.data.synthesis import synthesize_shards
from ytmt.params import resolve_params
from ytmt.train.loop import VAL_KEYS, shard_dataset
from ytmt.train.trainer import build_trainer, make_loop_config
from ytmt.train.validation import VAL_REAL_KEYS

from .conftest import TINY
from .test_real_and_fresh import make_real_pairs


@pytest.fixture(scope="module")
def real_set(tmp_path_factory, images_dir) -> Path:
    root = tmp_path_factory.mktemp("realtrain")
    make_real_pairs(root / "real_train", [str(i) for i in range(1, 7)])
    synthesize_shards(images_dir, root / "shards", TINY, 0, find_pairs(root / "real_train"),
                      real_val=3)  # ids 3 and 6 held out
    return root / "shards"


class Recording:
    """``dataset_fn``: the default one, remembering every dataset it builds."""

    def __init__(self, real_share: float, mixtures: str):
        self.kw, self.built = {"real_share": real_share, "mixtures": mixtures}, []

    def __call__(self, *args):
        ds = shard_dataset(*args, **self.kw)
        self.built.append(ds)
        return ds


def fit(tmp_path, shards, **overrides):
    settings = {"train__crop": 24, "train__epochs": 2, "train__max_steps_per_epoch": 2,
                **overrides}
    params = resolve_params(tiny_params(tmp_path, **settings))
    config = make_loop_config(params, "ytmt-ucs", shards, checkpoint_root=tmp_path)
    return build_trainer(config, params.train, "real").fit()


def test_real_val_is_scored_beside_the_synthetic_split(tmp_path, real_set):
    result = fit(tmp_path, real_set, train__real_share=0.5, train__mixtures="fresh")
    history = result.metrics
    assert set(VAL_KEYS) | set(VAL_REAL_KEYS) <= set(history)
    for key in ("val_real_psnr_t", "val_real_psnr_t_input", "val_real_psnr_r"):
        assert 0 < history[key] < 100, key
    assert 0 < history["val_real_ssim_t"] <= 1
    assert history["val_real_psnr_t_input"] != history["val_psnr_t_input"]


def test_without_real_pairs_there_is_no_real_validation(tmp_path, shards):
    result = fit(tmp_path, shards, train__max_steps_per_epoch=1, train__epochs=1)
    assert not set(VAL_REAL_KEYS) & set(result.metrics)


def test_the_loop_hands_real_share_and_mixtures_to_the_reader(tmp_path, real_set):
    params = resolve_params(tiny_params(tmp_path, train__crop=24, train__epochs=1,
                                        train__max_steps_per_epoch=1))
    recording = Recording(0.4, "fresh")
    config = make_loop_config(params, "ytmt-ucs", real_set, checkpoint_root=tmp_path)
    config["dataset_fn"] = recording
    build_trainer(config, params.train, "rec").fit()
    by_split = {ds.split: ds for ds in recording.built}
    assert set(by_split) == {"train", "val", "real_val"}
    assert (by_split["train"].real_share, by_split["train"].mixtures) == (0.4, "fresh")
    assert by_split["val"].real_share == 0.0 and by_split["real_val"].num_samples == 2
    # and from params: train.real_share / train.mixtures reach the default dataset_fn
    loop_ds = []
    from ytmt.train import loop

    original = loop.shard_dataset

    def spy(*args, **kw):
        loop_ds.append((args[1], kw))
        return original(*args, **kw)

    loop.shard_dataset = spy
    try:
        p = resolve_params(tiny_params(tmp_path, train__crop=24, train__epochs=1,
                                       train__max_steps_per_epoch=1,
                                       train__real_share=0.2, train__mixtures="fresh"))
        build_trainer(make_loop_config(p, "ytmt-ucs", real_set, checkpoint_root=tmp_path),
                      p.train, "spy").fit()
    finally:
        loop.shard_dataset = original
    assert ("train", {"real_share": 0.2, "mixtures": "fresh"}) in loop_ds


def test_params_refuse_a_share_outside_0_1():
    from ytmt.config import ConfigError

    with pytest.raises(ConfigError, match="real_share"):
        resolve_params(tiny_params(None, train__real_share=1.5))
    with pytest.raises(ConfigError, match="mixtures"):
        resolve_params(tiny_params(None, train__mixtures="new"))
    assert replace(TINY).size == 32
