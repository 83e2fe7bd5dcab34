"""Training checkpoints without the frozen tensors (issue 27): no ``features.vgg.*`` and, for
a two-stage model, no ``stage1.*``; they are recorded by digest, rebuilt on resume and
checked. Resuming from such a checkpoint gives the same next step as resuming from a full
one (the old format) and as not stopping at all; ``train.checkpoint_every`` sets which
epochs are saved, the last always is."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import ray.train
import torch

from ytmt.checkpoint import (
    frozen_identity,
    load_checkpoint,
    load_stage1,
    load_training_state,
    model_from_checkpoint,
    model_spec,
    save_checkpoint,
    with_frozen_tensors,
)
from ytmt.params import resolve_params
from ytmt.train import loop
from ytmt.train.components import build_components
from ytmt.train.step import build_step, train_step
from ytmt.train.trainer import build_trainer, make_loop_config

from .conftest import tiny_params

CPU = torch.device("cpu")


def images(seed: int):
    g = torch.Generator().manual_seed(seed)
    t, r = torch.rand(2, 3, 32, 32, generator=g) * 0.6, torch.rand(2, 3, 32, 32, generator=g) * 0.4
    return (t + r).clamp(0, 1), t, r


def test_the_loop_saves_no_frozen_tensor_and_every_nth_epoch(tmp_path, shards, monkeypatch):
    saved_epochs = []
    report = ray.train.report

    def recording_report(metrics, checkpoint=None, **kwargs):
        if checkpoint is not None:
            saved_epochs.append(metrics["epoch"])
        return report(metrics, checkpoint=checkpoint, **kwargs)

    monkeypatch.setattr(ray.train, "report", recording_report)

    def fit(variant, stage1=None, **overrides):
        params = resolve_params(tiny_params(tmp_path / variant, train__max_steps_per_epoch=1,
                                            **overrides))
        config = make_loop_config(params, variant, shards, stage1_checkpoint=stage1,
                                  checkpoint_root=tmp_path / variant)
        result = build_trainer(config, params.train, f"t-{variant}").fit()
        path = Path(result.checkpoint.path) / loop.CHECKPOINT_FILE
        return load_checkpoint(path), path

    ucs, ucs_path = fit("ytmt-ucs", train__epochs=3, train__checkpoint_every=2)
    assert saved_epochs == [2, 3]  # every 2nd epoch and the last
    assert not [k for k in ucs["state_dict"] if k.startswith("features.vgg.")]
    assert set(ucs["frozen"]) == {"vgg"}
    uct, _ = fit("ytmt-uct", stage1=ucs_path)  # a training checkpoint serves as stage 1
    assert not [k for k in uct["state_dict"] if k.startswith(("features.vgg.", "stage1."))]
    assert set(uct["frozen"]) == {"vgg", "stage1"}
    assert [k for k in uct["state_dict"] if k.startswith("stage2.")]


@pytest.fixture
def run(tmp_path):
    """A two-stage GAN run one step in: its parts and both checkpoint formats of it."""
    params = resolve_params(tiny_params(train__gan=True, train__discriminator_width=4))
    s1_parts = build_components(params, "ytmt-ucs")
    for p in s1_parts.model.stage1.parameters():
        p.data.add_(0.01 * torch.randn_like(p))
    stage1 = save_checkpoint(tmp_path / "s1.pt", s1_parts.model,
                             model_spec(s1_parts.model, 4))
    parts = build_components(params, "ytmt-uct")
    load_stage1(parts.model, stage1)
    step = build_step(parts, parts.model, params.train, CPU)
    train_step(step, images(1))
    disc = parts.discriminator
    extra = {"epoch": 1, "lr": 1e-3, "history": [], "starts": [0],
             "optimizer": step.optimizer.state_dict(), "discriminator": disc.state_dict(),
             "optimizer_d": step.optimizer_d.state_dict()}
    spec = model_spec(parts.model, 4)
    paths = {}
    for name, frozen in (("full", None), ("lean", frozen_identity(parts.model))):
        folder = tmp_path / name
        folder.mkdir()
        paths[name] = save_checkpoint(folder / loop.CHECKPOINT_FILE, parts.model, spec,
                                      copy.deepcopy(extra), frozen=frozen)
    return params, parts, step, stage1, paths


def resume(params, checkpoint: Path, stage1: Path, monkeypatch):
    """The loop's own restore (``_restore_model``, ``_restore_optimizers``) from
    ``checkpoint`` as Ray would hand it to a restarted worker, then one more step."""
    monkeypatch.setattr(ray.train, "get_checkpoint",
                        lambda: ray.train.Checkpoint.from_directory(str(checkpoint.parent)))
    parts = build_components(params, "ytmt-uct")
    state = loop._restore_model(parts.model, "ytmt-uct", str(stage1))
    step = build_step(parts, parts.model, params.train, CPU)
    loop._restore_optimizers(step, state["extra"])
    terms = train_step(step, images(2))
    return terms, parts


def test_resuming_without_frozen_tensors_is_resuming_from_a_full_checkpoint(run, monkeypatch):
    params, parts, step, stage1, paths = run
    lean = load_checkpoint(paths["lean"])
    assert not [k for k in lean["state_dict"] if k.startswith(("features.vgg.", "stage1."))]
    assert paths["lean"].stat().st_size < paths["full"].stat().st_size / 2
    want = train_step(step, images(2))  # the run that never stopped
    for name in ("full", "lean"):
        terms, resumed = resume(params, paths[name], stage1, monkeypatch)
        for key in ("total", "adversarial", "discriminator"):
            torch.testing.assert_close(terms[key], want[key], rtol=1e-6, atol=0, msg=name)
        for (k, a), b in zip(resumed.model.state_dict().items(),
                             parts.model.state_dict().values(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9, msg=f"{name} {k}")
        for (k, a), b in zip(resumed.discriminator.state_dict().items(),
                             parts.discriminator.state_dict().values(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9, msg=f"{name} {k}")


def test_resuming_with_other_frozen_parts_is_refused(run):
    params, _, _, _, paths = run
    lean = load_checkpoint(paths["lean"])
    other_vgg = build_components(resolve_params(tiny_params(
        train__gan=True, train__discriminator_width=4, model__vgg_seed=7)), "ytmt-uct")
    with pytest.raises(ValueError, match="VGG-19 weights"):
        load_training_state(other_vgg.model, lean, paths["lean"])
    other_stage1 = build_components(params, "ytmt-uct")  # stage 1 never loaded
    with pytest.raises(ValueError, match="a stage 1"):
        load_training_state(other_stage1.model, lean, paths["lean"])


def test_model_files_get_the_frozen_tensors_back(run, tmp_path):
    """What ``model.pt`` is written from: the lean checkpoint made self-contained equals
    the full one; a two-stage one needs its stage-1 checkpoint."""
    _, _, _, stage1, paths = run
    full, lean = load_checkpoint(paths["full"]), load_checkpoint(paths["lean"])
    rebuilt = with_frozen_tensors(lean, stage1)
    assert "frozen" not in rebuilt
    assert rebuilt["state_dict"].keys() == full["state_dict"].keys()
    for k, v in full["state_dict"].items():
        assert torch.equal(rebuilt["state_dict"][k], v), k
    with pytest.raises(ValueError, match="stage-1 checkpoint"):
        with_frozen_tensors(lean)
    ucs = build_components(resolve_params(tiny_params()), "ytmt-ucs").model
    single = save_checkpoint(tmp_path / "ucs.pt", ucs, model_spec(ucs, 4),
                             frozen=frozen_identity(ucs))
    model = model_from_checkpoint(single)  # its VGG rebuilt from the seed it records
    for k, v in ucs.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
