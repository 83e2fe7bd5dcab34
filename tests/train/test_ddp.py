"""Acceptance 1: DDP over 2 Ray workers with batch b equals 1 worker with batch 2b, and each
worker reads a disjoint part of the data. The whole objective is on: reconstruction,
perceptual, exclusion and the relativistic GAN (generator and discriminator), whose batch
statistics are per image by default (``loss.batch_statistics: sample``)."""

from pathlib import Path

import pytest
import torch

from ytmt.checkpoint import load_checkpoint
from ytmt.params import resolve_params
from ytmt.train.components import build_components
from ytmt.train.loop import CHECKPOINT_FILE
from ytmt.train.trainer import build_trainer, make_loop_config

from .conftest import PairsFn, pickle_by_value, tiny_params

pickle_by_value(__name__)
pickle_by_value(PairsFn.__module__)  # the workers build the dataset from it

B = 2  # per-worker batch


def one_step(tmp_path, workers, batch, name, **overrides):
    # adam_eps = 1: Adam's first step is then ≈ lr·g, sensitive to the gradient's size
    # (with eps = 1e-8 it is lr·sign(g) and would hide a sum-instead-of-mean bug).
    logs = tmp_path / name
    logs.mkdir()
    params = resolve_params(tiny_params(
        tmp_path, train__num_workers=workers, train__batch_size=batch,
        train__max_steps_per_epoch=1, train__lr=1e-2, train__adam_eps=1.0,
        train__gan=True, train__discriminator_width=4, loss__perceptual=0.1, **overrides))
    config = make_loop_config(params, "ytmt-ucs", tmp_path)
    config["dataset_fn"] = PairsFn(logs, train=2 * B, size=64)  # D sees 2×2 after 5 strides
    result = build_trainer(config, params.train, name).fit()
    with result.checkpoint.as_directory() as d:
        ckpt = load_checkpoint(Path(d) / CHECKPOINT_FILE)
    seen = {p.stem: set(p.read_text().split()) for p in logs.glob("*.txt")}
    state = {**ckpt["state_dict"],
             **{f"disc.{k}": v for k, v in ckpt["extra"]["discriminator"].items()}}
    assert result.metrics["loss_exclusion"] > 0 and result.metrics["loss_adversarial"] > 0
    assert result.metrics["loss_perceptual"] > 0
    return params, state, seen


@pytest.mark.slow
def test_two_workers_batch_b_equal_one_worker_batch_2b(tmp_path, ray_local):
    params, ddp, seen = one_step(tmp_path, 2, B, "ddp")
    train0, train1 = seen["train-rank0-of2"], seen["train-rank1-of2"]
    assert len(train0) == len(train1) == B and not train0 & train1

    _, single, seen1 = one_step(tmp_path, 0, 2 * B, "single")
    assert seen1["train-rank0-of1"] == train0 | train1
    _, half, _ = one_step(tmp_path, 0, B, "half")  # negative control: rank 0's data only

    parts = build_components(params, "ytmt-ucs")
    init = {**parts.model.state_dict(),
            **{f"disc.{k}": v for k, v in parts.discriminator.state_dict().items()}}
    trained = [k for k in init if init[k].is_floating_point() and not k.startswith("features")]
    assert any(k.startswith("disc.") for k in trained)

    def same_step(a, b):
        return all(torch.allclose(a[k] - init[k], b[k] - init[k], rtol=1e-3, atol=1e-7)
                   for k in trained)

    assert max((ddp[k] - init[k]).abs().max().item() for k in trained) > 1e-4  # a real step
    assert same_step(ddp, single)
    # the comparison can fail: rank 0's half of the batch alone gives another step
    assert not same_step(ddp, half)

    # and per-image statistics are what make it exact: pooled over each worker's batch
    # (the authors' code), two workers of b optimise another loss than one worker of 2b
    _, pooled_ddp, _ = one_step(tmp_path, 2, B, "pooled-ddp", loss__batch_statistics="batch")
    _, pooled_single, _ = one_step(tmp_path, 0, 2 * B, "pooled-single",
                                   loss__batch_statistics="batch")
    assert not same_step(pooled_ddp, pooled_single)
