"""The shared loop in-process (ScalingConfig(num_workers=0)): metrics, checkpoints, schedule,
two stages, GAN. Real shards from ytmt.data; tiny widths and crops."""

from pathlib import Path

import pytest
import torch

from ytmt.checkpoint import load_checkpoint, tensor_digest
from ytmt.params import resolve_params
from ytmt.train.components import build_components
from ytmt.train.loop import CHECKPOINT_FILE, LOSS_TERMS, VAL_KEYS
from ytmt.train.trainer import build_trainer, make_loop_config

from .conftest import tiny_params


def fit(tmp_path, shards, variant="ytmt-ucs", stage1=None, **overrides):
    params = resolve_params(tiny_params(tmp_path, **overrides))
    config = make_loop_config(params, variant, shards, stage1_checkpoint=stage1,
                              checkpoint_root=tmp_path)
    result = build_trainer(config, params.train, f"t-{variant}").fit()
    with result.checkpoint.as_directory() as d:
        ckpt_path = Path(d) / CHECKPOINT_FILE
        return result, load_checkpoint(ckpt_path), ckpt_path


def test_every_epoch_reports_metrics_and_a_resumable_checkpoint(tmp_path, shards):
    result, ckpt, _ = fit(tmp_path, shards, train__epochs=2, train__max_steps_per_epoch=2,
                          train__lr_milestones=[1], train__lr_gamma=0.5)
    metrics = result.metrics
    expected = {"epoch", "train_loss", "lr", "images_per_s", "world_size", *VAL_KEYS,
                *(f"loss_{t}" for t in LOSS_TERMS)}
    assert expected <= set(metrics)
    assert metrics["epoch"] == 2
    extra = ckpt["extra"]
    assert extra["epoch"] == 2 and extra["starts"] == [0]
    assert [h["epoch"] for h in extra["history"]] == [1, 2]
    assert [h["lr"] for h in extra["history"]] == pytest.approx([1e-3, 5e-4])  # milestone 1
    assert extra["optimizer"]["state"], "Adam moments must be saved for resuming"
    assert extra["optimizer"]["param_groups"][0]["lr"] == pytest.approx(5e-4)
    for key in ("val_psnr_t", "val_psnr_t_strict", "val_psnr_r", "val_psnr_t_input"):
        assert 0 < metrics[key] < 100, key
    assert 0 < metrics["val_ssim_t"] <= 1
    assert metrics["loss_adversarial"] == 0  # GAN off by default
    assert ckpt["model"]["variant"] == "ytmt-ucs" and ckpt["vgg"]["mode"] == "random"


def test_two_stage_trains_stage2_from_a_frozen_stage1(tmp_path, shards):
    _, ucs, ucs_path = fit(tmp_path / "a", shards, train__max_steps_per_epoch=1)
    _, uct, _ = fit(tmp_path / "b", shards, "ytmt-uct", stage1=ucs_path,
                    train__max_steps_per_epoch=1)
    stage1 = {k[len("stage1."):]: v for k, v in ucs["state_dict"].items()
              if k.startswith("stage1.")}
    # the frozen stage 1 is left out of the checkpoint and recorded by its digest: exactly
    # the trained ucs's stage 1
    assert not any(k.startswith("stage1.") for k in uct["state_dict"])
    assert uct["frozen"]["stage1"] == tensor_digest({f"stage1.{k}": v for k, v in stage1.items()})
    # stage 2 starts from stage 1's weights and is trained: one Adam step (lr 1e-3) moves
    # each weight by at most lr, and some weights move
    floats = [n for n, v in stage1.items() if v.is_floating_point()]
    assert distance_from(stage1, uct["state_dict"], floats) <= 1e-3 * (1 + 1e-4)
    assert any(not torch.equal(uct["state_dict"][f"stage2.{n}"], stage1[n]) for n in floats)
    # control: a stage 2 initialised on its own is far from stage 1
    fresh = build_components(resolve_params(tiny_params()), "ytmt-uct").model.state_dict()
    assert distance_from(stage1, fresh, floats) > 0.01


def distance_from(stage1: dict, state: dict, names: list[str]) -> float:
    """The largest |stage2.<name> − stage1's <name>| over ``names`` and their elements."""
    return max(float((state[f"stage2.{n}"] - stage1[n]).abs().max()) for n in names)


def test_two_stage_without_stage1_is_refused(tmp_path, shards):
    with pytest.raises(Exception, match="two-stage"):
        fit(tmp_path, shards, "ytmt-uat", train__max_steps_per_epoch=1)


def test_gan_adds_the_adversarial_term_and_saves_the_discriminator(tmp_path, shards):
    result, ckpt, _ = fit(tmp_path, shards, train__gan=True, train__discriminator_width=4,
                          train__max_steps_per_epoch=1)
    assert result.metrics["loss_adversarial"] > 0
    assert result.metrics["loss_discriminator"] > 0
    assert ckpt["extra"]["discriminator"] and ckpt["extra"]["optimizer_d"]["state"]
