"""Acceptance 3: on the embedded default data (scikit-image photos synthesized by ytmt.data),
training beats the identity baseline (T̂ = input) in validation PSNR by a clear margin."""

import pytest

from ytmt.train.components import resolve_params
from ytmt.train.trainer import build_trainer, make_loop_config

from .conftest import tiny_params

MARGIN_DB = 1.0


@pytest.mark.slow
def test_training_beats_the_identity_baseline(tmp_path, shards):
    # The small-scale recipe: params.yaml's loss weights and hypercolumn (random VGG, as a
    # fresh clone has no ImageNet file), width 8, 32 px crops, in-process (no Ray start-up).
    params = resolve_params(tiny_params(
        tmp_path, model__width=8, train__epochs=20, train__lr=2e-3, train__lr_milestones=[14],
        train__lr_gamma=0.25))
    config = make_loop_config(params, "ytmt-ucs", shards)
    metrics = build_trainer(config, params.train, "learning").fit().metrics
    assert metrics["epoch"] == 20
    assert metrics["val_psnr_t"] > metrics["val_psnr_t_input"] + MARGIN_DB, metrics
