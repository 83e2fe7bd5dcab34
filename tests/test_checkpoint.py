import os

import pytest
import torch

import ytmt
from ytmt.checkpoint import (
    UnsafeCheckpoint,
    load_checkpoint,
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
    for a, b in zip(model(x), loaded(x)):
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
