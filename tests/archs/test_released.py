"""The authors' legacy U-Net (ytmt.archs.released): parameter count, key table, variants."""

import pytest
import torch

import ytmt
from tests.archs.authors_reference import AuthorsUNet
from ytmt.archs.released import ReleasedUNet
from ytmt.authors import AUTHORS_TO_OURS, expected_shapes, map_state_dict


def _count(module):
    return sum(p.numel() for p in module.parameters())


def test_parameter_count_per_stage_is_the_authors_38_448_530():
    with torch.device("meta"):  # full width, no memory, no init time
        ours, theirs = ReleasedUNet(1475, 64), AuthorsUNet(1475, 64)
    assert _count(ours) == _count(theirs) == 38_448_530
    # the first block's exchange conv is the authors' too, but never used: frozen
    idle = [n for n, p in ours.named_parameters() if not p.requires_grad]
    assert idle == ["inc.idle_exchange.t.weight", "inc.idle_exchange.t.bias",
                    "inc.idle_exchange.r.weight", "inc.idle_exchange.r.bias"]


@pytest.mark.parametrize("width", [8, 64])
def test_key_table_maps_the_authors_state_dict_one_to_one(width):
    with torch.device("meta"):
        theirs = AuthorsUNet(1475, width).state_dict()
        ours = ReleasedUNet(1475, width).state_dict()
    assert set(AUTHORS_TO_OURS) == set(theirs)
    assert sorted(AUTHORS_TO_OURS.values()) == sorted(ours)
    for key, mine in AUTHORS_TO_OURS.items():
        assert theirs[key].shape == ours[mine].shape, key
    assert expected_shapes(width) == {k: tuple(v.shape) for k, v in theirs.items()}


def test_mapping_errors_name_the_key_and_the_expected_shape():
    state = AuthorsUNet(1475, 8).state_dict()
    assert set(map_state_dict(state, "f: icnn")) == set(AUTHORS_TO_OURS.values())
    bad = dict(state)
    bad["up2_1.fusion_1.weight"] = torch.zeros(3, 3, 1, 1)
    with pytest.raises(ValueError, match=r"f: icnn: 'up2_1.fusion_1.weight' has shape "
                                         r"\(3, 3, 1, 1\), expected \(64, 64, 1, 1\)"):
        map_state_dict(bad, "f: icnn")
    bad = {k: v for k, v in state.items() if k != "outc_2.conv.bias"}
    with pytest.raises(ValueError,
                       match=r"missing key 'outc_2.conv.bias' \(expected shape \(3,\)\)"):
        map_state_dict(bad, "f: icnn")
    with pytest.raises(ValueError, match="unexpected key 'module.x'"):
        map_state_dict({**state, "module.x": torch.zeros(1)}, "f: icnn")


def test_released_variants_are_listed_and_built_by_name(random_vgg):
    for name, stages in (("ytmt-ucs-released", 1), ("ytmt-uct-released", 2)):
        spec = ytmt.get_variant(name)
        assert spec.backbone == "released-unet" and spec.stages == stages
        model = ytmt.build_model(name, width=8, vgg=random_vgg)
        assert isinstance(model.stage1, ReleasedUNet)
        assert model.stage1.inc.conv.conv.t.conv.in_channels == 1475
    assert ytmt.get_variant("ytmt-uct-released").stage1_variant == "ytmt-ucs-released"


@pytest.mark.parametrize("size", [(16, 16), (17, 23), (40, 64)])
def test_outputs_have_the_input_size(size):
    model = ytmt.build_model("ytmt-ucs-released", width=8, hypercolumn=False)
    t_hat, r_hat = model(torch.rand(1, 3, *size))
    assert t_hat.shape == r_hat.shape == (1, 3, *size)


def test_fused_streams_compute_the_same_function(random_vgg):
    plain = ytmt.build_model("ytmt-uct-released", width=8, vgg=random_vgg)
    fused = ytmt.build_model("ytmt-uct-released", width=8, vgg=random_vgg, fuse_streams=True)
    fused.load_state_dict(plain.state_dict())
    x = torch.rand(1, 3, 32, 48)
    for a, b in zip(plain(x), fused(x), strict=True):
        assert torch.allclose(a, b, atol=1e-5)
