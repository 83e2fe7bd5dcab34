import hashlib
import logging

import pytest
import torch
import torch.nn.functional as F

import ytmt
from ytmt.archs.vgg import (
    TAP_CHANNELS,
    VGG19_FILE,
    Hypercolumn,
    VGG19Features,
    VGGWeightsCorrupt,
    VGGWeightsMissing,
    hash_prefix,
    load_vgg19,
)

# torchvision's vgg19 "features" conv positions (all 16 convs) and channel plan
CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
CONV_CHANNELS = [64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512]


def torchvision_format_state_dict(seed=1):
    """A full torchvision VGG-19 state dict (features + classifier), as the .pth holds it."""
    g = torch.Generator().manual_seed(seed)
    state, cin = {}, 3
    for idx, cout in zip(CONV_INDICES, CONV_CHANNELS, strict=True):
        state[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=g) * 0.05
        state[f"features.{idx}.bias"] = torch.randn(cout, generator=g) * 0.01
        cin = cout
    state["classifier.0.weight"] = torch.zeros(8, 4)  # shape irrelevant: ignored on load
    state["classifier.0.bias"] = torch.zeros(8)
    return state


def save_hash_named(state, folder, name="vgg19"):
    """Save ``state`` as ``<name>-<its own sha256[:8]>.pth``, the way torch hub names files, so
    that it passes the hash check. Returns the path."""
    tmp = folder / f"{name}.tmp"
    torch.save(state, tmp)
    path = folder / f"{name}-{hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]}.pth"
    tmp.rename(path)
    return path


def reference_taps(state, x):
    """Independent forward with F.conv2d following torchvision's module numbering."""
    taps, i = [], 0
    pools_after = {2, 7, 16, 25}  # after conv1_2, conv2_2, conv3_4, conv4_4 (module 4,9,18,27)
    wanted = {1, 6, 11, 20, 29}
    for idx in CONV_INDICES:
        if idx > 29:
            break
        x = F.relu(F.conv2d(x, state[f"features.{idx}.weight"], state[f"features.{idx}.bias"],
                            padding=1))
        if idx + 1 in wanted:
            taps.append(x)
        if idx in pools_after:
            x = F.max_pool2d(x, 2)
        i += 1
    return taps


def reference_hypercolumn(state, x):
    """The authors' hypercolumn written out: [RGB, each of :func:`reference_taps` on the raw
    [0,1] RGB upsampled bilinearly (align_corners=False) to the input's size], (B,1475,H,W)."""
    size = x.shape[-2:]
    return torch.cat([x, *(F.interpolate(t, size=size, mode="bilinear", align_corners=False)
                           for t in reference_taps(state, x))], dim=1)


def test_torchvision_weights_load_unchanged_and_reproduce_reference_forward(tmp_path):
    state = torchvision_format_state_dict()
    path = save_hash_named(state, tmp_path)
    vgg = load_vgg19("imagenet", path)
    assert vgg.weights.mode == "imagenet" and vgg.weights.source == str(path)
    x = torch.rand(2, 3, 32, 48)
    ours = vgg(x)
    ref = reference_taps(state, x)
    assert [t.shape[1] for t in ours] == list(TAP_CHANNELS)
    for a, b in zip(ours, ref, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_weights_are_found_in_the_torch_hub_cache_and_hash_checked(tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    # random weights under torchvision's name: found, and refused in every mode (the hash
    # check protects training too), never silently replaced by random weights
    torch.save(torchvision_format_state_dict(), hub / "checkpoints" / VGG19_FILE)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.delenv("YTMT_VGG19_PATH", raising=False)
    for mode in ("auto", "imagenet"):
        with pytest.raises(VGGWeightsCorrupt, match="does not start with 'dcbb9e9d'") as err:
            load_vgg19(mode)
        assert "\n" not in str(err.value) and VGG19_FILE in str(err.value)
    # the environment variable comes before the hub cache
    monkeypatch.setenv("YTMT_VGG19_PATH", str(save_hash_named(torchvision_format_state_dict(),
                                                               tmp_path)))
    assert load_vgg19("auto").weights.mode == "imagenet"


def test_hash_prefix_follows_torch_hub_naming(tmp_path):
    assert hash_prefix("vgg19-dcbb9e9d.pth") == "dcbb9e9d"
    assert hash_prefix("/x/resnet50-0676ba61.pth") == "0676ba61"
    assert hash_prefix("vgg19.pth") is None and hash_prefix("my-vgg.pth") is None
    # a name without a prefix is not checked (as in torch hub); a wrong prefix is refused
    plain = tmp_path / "vgg19.pth"
    torch.save(torchvision_format_state_dict(), plain)
    assert load_vgg19("imagenet", plain).weights.mode == "imagenet"
    wrong = tmp_path / "vgg19-00000000.pth"
    plain.rename(wrong)
    with pytest.raises(VGGWeightsCorrupt, match="vgg19-00000000.pth: SHA-256"):
        load_vgg19("imagenet", wrong)


def test_strict_mode_says_where_it_looked_and_how_to_get_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "nohub"))
    monkeypatch.delenv("YTMT_VGG19_PATH", raising=False)
    with pytest.raises(VGGWeightsMissing) as err:
        load_vgg19("imagenet", tmp_path / "missing.pth")
    msg = str(err.value)
    assert str(tmp_path / "missing.pth") in msg and "nohub" in msg
    assert "download.pytorch.org/models/vgg19-dcbb9e9d.pth" in msg


def test_auto_mode_falls_back_to_seeded_random_weights_loudly(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "nohub"))
    monkeypatch.delenv("YTMT_VGG19_PATH", raising=False)
    with caplog.at_level(logging.WARNING):
        a = load_vgg19("auto", seed=3)
    assert a.weights.mode == "random" and "seed=3" in a.weights.source
    assert "NOT FOUND" in caplog.text
    b = load_vgg19("random", seed=3)
    c = load_vgg19("random", seed=4)
    w = "features.0.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(b.state_dict()[w], c.state_dict()[w])


def test_wrong_file_is_rejected(tmp_path):
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="not a torchvision VGG-19"):
        VGG19Features().load_torchvision(tmp_path / "bad.pth")
    torch.save({"features.0.weight": torch.nn.Conv2d(1, 1, 1)}, tmp_path / "code.pth")
    with pytest.raises(ValueError, match="refused: not a plain torch state dict"):
        VGG19Features().load_torchvision(tmp_path / "code.pth")


def test_hypercolumn_has_1475_channels_rgb_first_and_no_gradient(random_vgg):
    x = torch.rand(1, 3, 20, 28, requires_grad=True)
    h = Hypercolumn(random_vgg, lazy=False)(x)
    assert h.shape == (1, 1475, 20, 28)
    assert torch.equal(h[:, :3], x.detach())
    assert not h.requires_grad
    assert not any(p.requires_grad for p in random_vgg.parameters())


def test_build_model_records_vgg_mode(random_vgg):
    model = ytmt.build_model("ytmt-ucs", width=4, vgg=random_vgg)
    assert model.features.vgg.weights.mode == "random"


@pytest.mark.parametrize("size", [(16, 16), (21, 34), (64, 48)])
def test_factorised_first_conv_equals_conv_of_the_materialised_hypercolumn(size, random_vgg):
    x = torch.rand(2, 3, *size)
    lazy = Hypercolumn(random_vgg)(x)
    dense = lazy.materialize()
    assert torch.allclose(dense, reference_hypercolumn(random_vgg.state_dict(), x), atol=1e-5)
    assert torch.equal(dense, Hypercolumn(random_vgg, lazy=False)(x))
    weight = torch.randn(6, 1475, 3, 3, requires_grad=True)
    bias = torch.randn(6, requires_grad=True)
    a = lazy.conv3x3(weight, bias)
    b = F.conv2d(dense, weight, bias, padding=1)
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    # gradients for the weights agree too (the backward pass is factorised as well)
    g = torch.randn_like(a)
    ga = torch.autograd.grad(a, (weight, bias), g)
    gb = torch.autograd.grad(b, (weight, bias), g)
    for u, v in zip(ga, gb, strict=True):
        assert torch.allclose(u, v, atol=1e-3, rtol=1e-4)


def test_autocast_uses_the_cast_weights_autocast_would_make(tmp_path):
    """Under bf16 autocast the frozen VGG convolves with weights it cast once: exactly the
    reference forward under autocast (taps and input gradient); new weights are picked up."""
    state = torchvision_format_state_dict()
    vgg = VGG19Features()
    vgg.load_torchvision(save_hash_named(state, tmp_path))
    x = torch.rand(2, 3, 32, 40, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours, ref = vgg(x), reference_taps(state, x)
        again = vgg(x)  # from the cache
    assert ours[0].dtype == torch.bfloat16
    assert all(torch.equal(a, b) for a, b in zip(ours, ref, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(again, ref, strict=True))
    grads = [torch.autograd.grad(sum(t.float().sum() for t in taps), x)[0]
             for taps in (ours, ref)]
    assert torch.equal(*grads)
    vgg.randomize(3)  # in-place writes: the cached copy is stale
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fresh = vgg(x)
        expected = reference_taps(vgg.state_dict(), x)
    assert all(torch.equal(a, b) for a, b in zip(fresh, expected, strict=True))
    assert not torch.equal(fresh[0], ours[0])
