"""TrainConfig validation, the LR schedule, dotted overrides and the training order."""

import pytest

from ytmt.config import ConfigError, parse_section, to_dict
from ytmt.params import Params, resolve_params
from ytmt.train.components import learning_rate
from ytmt.train.config import TrainConfig
from ytmt.train.trainer import backend_name, resolve_storage_path


@pytest.mark.parametrize("bad, message", [
    ({"variants": ["ytmt-xyz"]}, "unknown 'ytmt-xyz'"),
    ({"variants": []}, "at least one variant"),
    ({"betas": [0.9]}, "two numbers"),
    ({"betas": [0.9, 1.0]}, "must be < 1.0"),
    ({"lr_milestones": [80, 60]}, "strictly increasing"),
    ({"lr": 0}, "must be > 0.0"),
    ({"backend": "nccl"}, "needs use_gpu"),
    ({"backend": "mpi"}, "one of"),
    ({"epochs": "3"}, "an integer"),
    ({"num_wokers": 2}, "unknown key"),
])
def test_bad_train_config_is_rejected(bad, message):
    with pytest.raises(ConfigError, match=message):
        parse_section(TrainConfig, bad, "train")


def test_paper_schedule_halves_at_milestones():
    cfg = parse_section(TrainConfig, {"lr": 1e-4, "lr_milestones": [60, 80, 100],
                                      "lr_gamma": 0.5, "epochs": 120}, "train")
    lrs = [learning_rate(e, cfg) for e in range(cfg.epochs)]
    assert lrs[0] == lrs[59] == pytest.approx(1e-4)
    assert lrs[60] == lrs[79] == pytest.approx(5e-5)
    assert lrs[80] == pytest.approx(2.5e-5)
    assert lrs[100] == lrs[119] == pytest.approx(1.25e-5)


def test_overrides_are_applied_and_validated():
    base = to_dict(Params())
    params = resolve_params(base, {"loss.perceptual": 0.05, "train.epochs": 7})
    assert params.loss.perceptual == 0.05 and params.train.epochs == 7
    assert base["loss"]["perceptual"] == 0.1  # the input is not modified
    with pytest.raises(ConfigError, match="loss.perceptual = -1"):
        resolve_params(base, {"loss.perceptual": -1})
    with pytest.raises(ConfigError, match="loss.percep: unknown key"):
        resolve_params(base, {"loss.percep": 0.1})
    with pytest.raises(ConfigError, match="perceptual: unknown key"):
        resolve_params(base, {"perceptual": 0.1})
    with pytest.raises(ConfigError, match="is a section"):
        resolve_params(base, {"loss": 0.1})
    with pytest.raises(ConfigError, match="dotted key"):
        resolve_params(base, {"loss..perceptual": 0.1})
    assert resolve_params(base, {"seed": 3}).seed == 3


def test_two_stage_runs_train_after_their_stage1():
    cfg = parse_section(TrainConfig, {
        "variants": ["ytmt-uas", "ytmt-ucs"], "seeds": [0],
        "two_stage": [{"variant": "ytmt-uat", "stage1": "ytmt-uas"},
                      {"variant": "ytmt-uct", "stage1": "ytmt-ucs"}]}, "train")
    assert [(r.variant, r.stage1) for r in cfg.runs()] == [
        ("ytmt-uas", None), ("ytmt-ucs", None), ("ytmt-uat", "ytmt-uas"),
        ("ytmt-uct", "ytmt-ucs")]


def test_storage_path_and_backend(tmp_path, monkeypatch):
    monkeypatch.delenv("YTMT_RAY_STORAGE", raising=False)
    cfg = TrainConfig()
    assert resolve_storage_path(cfg, tmp_path) == str(tmp_path / "outputs" / "ray_results")
    monkeypatch.setenv("YTMT_RAY_STORAGE", "s3://bucket/ray")
    assert resolve_storage_path(cfg, tmp_path) == "s3://bucket/ray"
    explicit = parse_section(TrainConfig, {"storage_path": "rel/dir"}, "train")
    assert resolve_storage_path(explicit, tmp_path) == str(tmp_path / "rel" / "dir")
    assert backend_name(cfg) == "gloo"
    assert backend_name(parse_section(TrainConfig, {"use_gpu": True}, "train")) == "nccl"
