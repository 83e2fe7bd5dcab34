import os

import pytest
import torch

import ytmt
from tests.dvc_deps import module_closure
from ytmt.archs.vgg import VGG19Features, load_vgg19
from ytmt.checkpoint import (
    UnsafeCheckpoint,
    load_checkpoint,
    load_stage1,
    model_from_checkpoint,
    model_spec,
    save_checkpoint,
)


class Payload:
    """Unpickling this needs code: a weights-only load must refuse it."""

    def __reduce__(self):
        return (os.getcwd, ())


def test_round_trip_restores_the_same_function(tmp_path, random_vgg):
    model = ytmt.build_model("ytmt-uas", width=4, vgg=random_vgg).eval()
    path = save_checkpoint(tmp_path / "m.pt", model, model_spec(model, 4), {"epoch": 3})
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary left behind
    loaded = model_from_checkpoint(path)
    assert load_checkpoint(path)["extra"]["epoch"] == 3
    assert loaded.features.vgg.weights.mode == "random"
    x = torch.rand(1, 3, 24, 24)
    for a, b in zip(model(x), loaded(x), strict=True):
        assert torch.equal(a, b)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "ytmt-checkpoint/1", "payload": Payload()}, path)
    with pytest.raises(UnsafeCheckpoint, match="refused"):
        load_checkpoint(path)


def test_truncated_and_foreign_files_give_clear_errors(tmp_path, random_vgg):
    model = ytmt.build_model("ytmt-ucs", width=4, vgg=random_vgg)
    good = save_checkpoint(tmp_path / "m.pt", model, model_spec(model, 4))
    truncated = tmp_path / "t.pt"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        load_checkpoint(truncated)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable torch checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a ytmt checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def _stage1_checkpoint(path, vgg):
    stage1 = ytmt.build_model("ytmt-ucs", width=4, vgg=vgg)
    for p in stage1.stage1.parameters():
        p.data.add_(0.01 * torch.randn_like(p))
    return save_checkpoint(path, stage1, model_spec(stage1, 4)), stage1


@pytest.fixture
def imagenet_file(tmp_path):
    """A file in torchvision's VGG-19 format standing in for the ImageNet weights."""
    path = tmp_path / "vgg19_imagenet.pth"
    vgg = VGG19Features()
    vgg.randomize(123)
    torch.save(vgg.state_dict(), path)
    return path


def test_stage1_trained_with_imagenet_vgg_is_refused_by_a_random_vgg_stage2(tmp_path,
                                                                            imagenet_file):
    """The bug: an ``auto`` stage 2 that fell back to random VGG silently fed stage 1
    hypercolumns it never saw."""
    ckpt, _ = _stage1_checkpoint(tmp_path / "s1.pt", load_vgg19("imagenet", imagenet_file))
    model = ytmt.build_model("ytmt-uct", width=4, vgg=load_vgg19("auto", tmp_path / "none"))
    assert model.features.vgg.weights.mode == "random"  # the silent fallback
    before = {k: v.clone() for k, v in model.stage1.state_dict().items()}
    with pytest.raises(ValueError, match=r"trained with VGG-19 imagenet .* is random"):
        load_stage1(model, ckpt)
    assert all(torch.equal(v, model.stage1.state_dict()[k]) for k, v in before.items())


def test_stage1_vgg_of_another_seed_is_refused(tmp_path):
    ckpt, _ = _stage1_checkpoint(tmp_path / "s1.pt", load_vgg19("random", seed=0))
    model = ytmt.build_model("ytmt-uct", width=4, vgg=load_vgg19("random", seed=1))
    with pytest.raises(ValueError, match=r"random \(seed=0\) .* random \(seed=1\)"):
        load_stage1(model, ckpt)


def test_the_same_vgg_loads_from_any_path_or_a_fresh_seeded_copy(tmp_path, imagenet_file):
    ckpt, stage1 = _stage1_checkpoint(tmp_path / "s1.pt", load_vgg19("random", seed=0))
    model = ytmt.build_model("ytmt-uct", width=4, vgg=load_vgg19("random", seed=0))
    load_stage1(model, ckpt)  # a fresh VGG of the same seed: the same identity
    for k, v in stage1.stage1.state_dict().items():
        assert torch.equal(model.stage1.state_dict()[k], v)

    ckpt, _ = _stage1_checkpoint(tmp_path / "s1_imagenet.pt",
                                 load_vgg19("imagenet", imagenet_file))
    moved = tmp_path / "elsewhere" / imagenet_file.name
    moved.parent.mkdir()
    moved.write_bytes(imagenet_file.read_bytes())
    load_stage1(ytmt.build_model("ytmt-uct", width=4, vgg=load_vgg19("imagenet", moved)), ckpt)


def test_stage1_of_a_single_stage_model_is_refused(tmp_path, random_vgg):
    ckpt, _ = _stage1_checkpoint(tmp_path / "s1.pt", random_vgg)
    with pytest.raises(ValueError, match="single-stage"):
        load_stage1(ytmt.build_model("ytmt-ucs", width=4, vgg=random_vgg), ckpt)


def test_the_networks_do_not_import_checkpoint_reading():
    """archs ↔ checkpoint: reading checkpoints lives in ytmt.checkpoint only."""
    for module in ("ytmt/archs/ytmt.py", "ytmt/archs/build.py", "ytmt/archs/vgg.py"):
        assert "ytmt/checkpoint.py" not in module_closure(module), module
