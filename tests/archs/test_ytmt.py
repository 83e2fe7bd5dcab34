import pytest
import torch

import ytmt
from ytmt.archs.ytmt import (
    VARIANTS,
    Exchange,
    YTMTHead,
    build_stage,
    get_variant,
    relu_neg,
)
from ytmt.checkpoint import load_stage1, model_spec, save_checkpoint


def test_negative_relu_is_min_with_zero():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 3.0])
    assert torch.equal(relu_neg(x), torch.tensor([-2.0, -0.5, 0.0, 0.0, 0.0]))
    assert torch.equal(torch.relu(x) + relu_neg(x), x)


def test_additive_head_preserves_the_sum_of_the_streams_exactly():
    head = YTMTHead(8, Exchange.ADD)
    t, r = torch.randn(2, 8, 5, 7), torch.randn(2, 8, 5, 7)
    t2, r2 = head(t, r)
    assert torch.equal(t2 + r2, t + r)
    # and it is a real exchange: each stream received the other's negative part
    assert torch.equal(t2, torch.relu(t) + torch.clamp(r, max=0))
    assert torch.equal(r2, torch.relu(r) + torch.clamp(t, max=0))


def test_concat_head_feeds_negative_part_of_the_other_stream():
    head = YTMTHead(3, Exchange.CONCAT)
    t, r = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    t2, _ = head(t, r)
    expected = head.fuse_t(torch.cat([torch.relu(t), torch.clamp(r, max=0)], 1))
    assert torch.allclose(t2, expected)


def test_relu_only_head_feeds_positive_part_and_no_fi_keeps_own_stream():
    t, r = torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)
    relu_only = YTMTHead(3, Exchange.RELU_ONLY)
    t2, _ = relu_only(t, r)
    assert torch.allclose(t2, relu_only.fuse_t(torch.cat([torch.relu(t), torch.relu(r)], 1)))
    t3, r3 = YTMTHead(3, Exchange.NONE)(t, r)
    assert torch.equal(t3, torch.relu(t)) and torch.equal(r3, torch.relu(r))


@pytest.mark.parametrize("name,expected", [("ytmt-ucs", 19_981_574), ("ytmt-uas", 17_175_942)])
def test_parameter_counts_match_the_authors_network(name, expected):
    net = build_stage(get_variant(name), in_channels=1475, width=64)
    assert sum(p.numel() for p in net.parameters()) == expected


def test_every_named_variant_exists():
    assert set(VARIANTS) == {"ytmt-ucs", "ytmt-uas", "ytmt-uct", "ytmt-uat", "ytmt-pcs",
                             "ytmt-pas", "unet-no-fi", "ytmt-ucs-relu-only",
                             "ytmt-ucs-released", "ytmt-uct-released"}
    with pytest.raises(ValueError, match="unknown variant 'ytmt-xyz'"):
        ytmt.build_model("ytmt-xyz")


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_trainable_parameter_gets_a_gradient(name, random_vgg):
    model = ytmt.build_model(name, width=8, vgg=random_vgg, plain_layers=4)
    t_hat, r_hat = model(torch.rand(2, 3, 48, 48))
    (t_hat.mean() + r_hat.mean()).backward()
    trainable = dict((n, p) for n, p in model.named_parameters() if p.requires_grad)
    assert trainable
    # every parameter is connected to the loss ...
    missing = [n for n, p in trainable.items() if p.grad is None]
    assert not missing, missing
    # ... and every conv and head actually moves (attention bottlenecks are 1 channel wide at
    # this tiny width, so a dead ReLU there may legitimately give an exact 0)
    zero = [n for n, p in trainable.items() if "_att." not in n and not p.grad.abs().sum() > 0]
    assert not zero, zero
    # VGG never trains; a two-stage model's stage 1 is frozen
    assert not any(n.startswith("features.") for n in trainable)
    if get_variant(name).stages == 2:
        assert not any(n.startswith("stage1.") for n in trainable)


# The variant-parametrised properties hold for every registered variant (ytmt.variants), the
# released ones included: a variant added to the registry is covered without touching tests.
ALL_VARIANTS = sorted(VARIANTS)


@pytest.mark.parametrize("size", [(16, 16), (17, 23), (33, 47), (64, 40)])
@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_output_has_the_input_size_for_odd_sizes(name, size):
    model = ytmt.build_model(name, width=4, hypercolumn=False, plain_layers=3)
    t_hat, r_hat = model(torch.rand(2, 3, *size))
    assert t_hat.shape == r_hat.shape == (2, 3, *size)
    assert 0 <= float(t_hat.detach().min()) and float(t_hat.detach().max()) <= 1


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_fused_streams_compute_the_same_function(name, random_vgg):
    plain = ytmt.build_model(name, width=8, vgg=random_vgg, plain_layers=3)
    fused = ytmt.build_model(name, width=8, vgg=random_vgg, fuse_streams=True, plain_layers=3)
    fused.load_state_dict(plain.state_dict())
    x = torch.rand(1, 3, 24, 40)
    for a, b in zip(plain(x), fused(x), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_two_stage_model_freezes_stage1_and_feeds_hypercolumns(tmp_path, random_vgg):
    stage1 = ytmt.build_model("ytmt-ucs", width=4, vgg=random_vgg)
    for p in stage1.stage1.parameters():  # the network's weights; the VGG is the session's
        p.data.add_(0.01 * torch.randn_like(p))
    ckpt = save_checkpoint(tmp_path / "s1.pt", stage1, model_spec(stage1, 4))

    model = ytmt.build_model("ytmt-uct", width=4, vgg=random_vgg)
    load_stage1(model, ckpt)
    for k, v in stage1.stage1.state_dict().items():
        assert torch.equal(model.stage1.state_dict()[k], v)
        assert torch.equal(model.stage2.state_dict()[k], v)  # stage 2 starts from stage 1
    assert not any(p.requires_grad for p in model.stage1.parameters())

    seen = {}
    model.stage2.register_forward_pre_hook(lambda m, args: seen.update(x_t=args[0], x_r=args[1]))
    x = torch.rand(1, 3, 32, 32)
    (t1, r1), (t2, r2) = model.forward_stages(x)
    ref_t1, ref_r1 = stage1(x)
    assert torch.allclose(t1, ref_t1) and torch.allclose(r1, ref_r1)
    assert seen["x_t"].channels == 1475
    assert torch.allclose(seen["x_t"].materialize(), model.features(t1).materialize())
    assert torch.allclose(seen["x_r"].materialize(), model.features(r1).materialize())
    assert torch.equal(model(x)[0], t2)


def test_single_stage_model_has_no_stage1_to_load(random_vgg):
    with pytest.raises(ValueError, match="single-stage"):
        ytmt.build_model("ytmt-ucs", width=4, vgg=random_vgg).load_stage1({})


@pytest.mark.parametrize("name", ALL_VARIANTS)
def test_lazy_hypercolumn_computes_the_same_function_as_the_materialised_one(name, random_vgg):
    eager = ytmt.build_model(name, width=4, vgg=random_vgg, lazy_hypercolumn=False,
                             plain_layers=3)
    lazy = ytmt.build_model(name, width=4, vgg=random_vgg, plain_layers=3)
    for name, p in eager.named_parameters():
        if not name.startswith("features.vgg."):  # the session's VGG: tests/conftest.py
            p.data.add_(0.01 * torch.randn_like(p))
    lazy.load_state_dict(eager.state_dict())
    x = torch.rand(2, 3, 37, 29)
    for a, b in zip(eager(x), lazy(x), strict=True):
        assert (a - b).abs().max() < 1e-3  # float summation order only
