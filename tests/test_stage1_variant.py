"""Issue 26 §3: ytmt.checkpoint.load_stage1 loads only a checkpoint of the two-stage model's
own stage-1 variant (an ablation with the same tensor shapes would load silently)."""

from __future__ import annotations

import pytest
import torch

import ytmt
from ytmt.checkpoint import load_stage1, model_spec, save_checkpoint


@pytest.mark.parametrize("variant,two_stage", [("ytmt-ucs-relu-only", "ytmt-uct"),
                                               ("ytmt-uas", "ytmt-uct"),
                                               ("ytmt-ucs", "ytmt-uat")])
def test_a_checkpoint_of_another_variant_is_refused_as_stage1(tmp_path, random_vgg, variant,
                                                              two_stage):
    other = ytmt.build_model(variant, width=4, vgg=random_vgg)
    ckpt = save_checkpoint(tmp_path / "s1.pt", other, model_spec(other, 4))
    model = ytmt.build_model(two_stage, width=4, vgg=random_vgg)
    before = {k: v.clone() for k, v in model.stage1.state_dict().items()}
    with pytest.raises(ValueError, match=f"a {variant} checkpoint; the stage 1 of {two_stage} "
                                         "is a trained ytmt-u"):
        load_stage1(model, ckpt)
    assert all(torch.equal(v, model.stage1.state_dict()[k]) for k, v in before.items())


def test_the_relu_only_ablation_has_the_shapes_of_ucs():
    """Why the check is needed: without it nothing else would notice (same keys, same
    shapes)."""
    relu_only = ytmt.build_model("ytmt-ucs-relu-only", width=4, vgg_weights="random")
    ucs = ytmt.build_model("ytmt-ucs", width=4, vgg_weights="random")
    assert {k: v.shape for k, v in relu_only.state_dict().items()} == \
        {k: v.shape for k, v in ucs.state_dict().items()}
