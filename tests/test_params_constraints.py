"""Issue 26 §3: params are checked as a whole at load (ytmt.params.check_constraints), and
params.yaml is the one source of a run's values (every key must be set)."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from ytmt.config import ConfigError
from ytmt.params import Params, discriminator_width_ok, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def repo_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def with_values(**changes) -> dict:
    """params.yaml with ``section__key=value`` changes (``tune__overrides`` replaces the
    whole mapping)."""
    data = copy.deepcopy(repo_params())
    for key, value in changes.items():
        section, name = key.split("__")
        data[section][name] = value
    return data


# (changes, what the one-line error must say); each is accepted by the sections on their own
CONSTRAINTS = {
    "crop larger than the stored mixtures": (
        dict(train__crop=128), "train.crop = 128 > synthesize.size = 96"),
    "exclusion scales below 2 px": (
        dict(loss__exclusion_levels=6), "loss.exclusion_levels = 6 with train.crop = 48: its "
        "coarsest scale would be 1 px; use at most 5 levels"),
    "GroupNorm cannot divide the discriminator": (
        dict(train__gan=True, train__discriminator_width=40),
        "train.discriminator_width = 40 with train.gan"),
    "two NCCL ranks on one GPU": (
        dict(train__use_gpu=True, train__num_workers=2, train__gpus_per_worker=0.5),
        "train.gpus_per_worker = 0.5 with train.num_workers = 2: two DDP ranks would share a GPU"),
    "two NCCL ranks of a trial on one GPU": (
        dict(tune__workers_per_trial=2, tune__gpus_per_worker=0.5),
        "tune.gpus_per_worker = 0.5 with tune.workers_per_trial = 2"),
    "held-out photo that is not fetched": (
        dict(synthesize__val_photos=["coffee", "camera"]),
        "synthesize.val_photos: ['camera'] not in fetch.samples"),
    "sweep over a variant that is not trained": (
        dict(tune__variant="ytmt-uas"), "tune.variant = 'ytmt-uas' is not in train.variants"),
    "sweep over a weight without effect": (
        dict(tune__space={"loss.adversarial": {"type": "choice", "values": [0.0, 0.1]}}),
        "tune.space.loss.adversarial with train.gan: false"),
    "override that breaks a trial": (
        dict(tune__overrides={"train.crop": 128}),
        "tune.overrides: a trial's params are invalid: train.crop = 128 > synthesize.size"),
    "override of no key": (
        dict(tune__overrides={"train.crpo": 32}), "tune.overrides: a trial's params are "
        "invalid: train.crpo: unknown key"),
    "override of the wrong type": (
        dict(tune__overrides={"train.max_steps_per_epoch": 2.5}),
        "tune.overrides: a trial's params are invalid: train.max_steps_per_epoch = 2.5: "
        "expected int or null"),
    "trial that turns on a GAN its discriminator cannot run": (
        dict(train__discriminator_width=40, tune__overrides={"train.gan": True}),
        "tune.overrides: a trial's params are invalid: train.discriminator_width = 40"),
    "sweep metric no trial reports": (
        dict(tune__metric="val_psnr"), "tune: metric = 'val_psnr': trials report no such "
        "metric; choose from val_psnr_t"),
    "two-stage sweep": (
        dict(tune__variant="ytmt-uct"), "is two-stage; sweep the loss weights on its stage-1 "
        "variant ('ytmt-ucs')"),
    "champion metric training never logs": (
        dict(register__metric="val_psnr_tt"), "register: metric = 'val_psnr_tt': training "
        "logs no such metric"),
    # checked inside their sections already (kept here: the whole list in one place)
    "grace period longer than the trials": (
        dict(tune__epochs=2, tune__grace_period=3), "grace_period = 3 must be <= epochs = 2"),
    "tile overlap larger than half a tile": (
        dict(evaluate__tile=64, evaluate__overlap=40), "overlap = 40: must be <= tile/2"),
    "two-stage run whose stage 1 is not trained": (
        dict(train__two_stage=[{"variant": "ytmt-uat", "stage1": "ytmt-uas"}]),
        "stage 1 'ytmt-uas' must be trained too"),
}


@pytest.mark.parametrize("name", CONSTRAINTS)
def test_a_constraint_between_keys_fails_at_load_in_one_line_naming_them(name):
    changes, message = CONSTRAINTS[name]
    with pytest.raises(ConfigError) as err:
        parse_params(with_values(**changes), complete=True)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_the_shipped_params_and_its_sweep_pass_every_constraint():
    params = load_params(ROOT / "params.yaml")
    assert params.tune.enabled and params.tune.space  # the trial checks did run
    parse_params(with_values(train__crop=96, loss__exclusion_levels=5), complete=True)
    parse_params(with_values(train__use_gpu=True, train__num_workers=1,
                             train__gpus_per_worker=0.5), complete=True)  # one rank: fine
    parse_params(with_values(train__gan=True, train__discriminator_width=96), complete=True)


def test_the_discriminator_rule_is_the_discriminator_s():
    """discriminator_width_ok says yes exactly for the widths the network can be built with."""
    from ytmt.archs.discriminator import Discriminator

    for width in range(1, 70):
        try:
            Discriminator(3, width)
            built = True
        except ValueError:
            built = False
        assert discriminator_width_ok(width) == built, width


@pytest.mark.parametrize("crop", [16, 48])
def test_the_exclusion_rule_is_the_loss_s(crop):
    """The crop/levels check refuses exactly the settings whose exclusion loss is not a
    number (its coarsest scale is 1 px or less)."""
    import torch

    from ytmt.losses import exclusion_loss

    for levels in range(1, 8):
        data = with_values(train__crop=crop, synthesize__size=96, loss__exclusion_levels=levels)
        try:
            parse_params(data)
            accepted = True
        except ConfigError:
            accepted = False
        try:
            finite = bool(torch.isfinite(exclusion_loss(torch.rand(1, 3, crop, crop),
                                                        torch.rand(1, 3, crop, crop), levels)))
        except RuntimeError:
            finite = False
        assert accepted == finite, (crop, levels)


def test_a_stage_refuses_a_bad_combination_before_any_work(tmp_path):
    """pipelines/fetch.py (the first stage) stops with exit code 2 and one line naming both
    keys: nothing is fetched, no Ray, no MLflow."""
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(with_values(train__crop=128)))
    proc = subprocess.run([sys.executable, "pipelines/fetch.py", "--params", str(bad), "--out",
                           str(tmp_path / "images"), "--metrics", str(tmp_path / "m.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: invalid params: train.crop = 128 > synthesize.size "
                                   "= 96: the training crop must fit in the stored mixtures; "
                                   "lower train.crop or raise synthesize.size (and scale_min, "
                                   "which is >= size)")
    assert not (tmp_path / "images").exists()


# --------------------------------------------------------------------------- one source of values


def field_paths(cls: type, prefix: str = "") -> list[str]:
    """Every dotted key of the dataclass ``cls``: sections and the keys inside them."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        out.append(prefix + f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            out += field_paths(hints[f.name], f"{prefix}{f.name}.")
    return out


def test_deleting_any_key_from_params_yaml_is_an_error_naming_it(tmp_path):
    """A key deleted from (a copy of) params.yaml never silently takes another value: the
    load fails and names it, for every key of every section."""
    keys = field_paths(Params)
    assert {"train.crop", "loss.exclusion", "data.download.sets", "seed"} <= set(keys)
    shipped = repo_params()
    for key in keys:
        data = copy.deepcopy(shipped)
        *sections, name = key.split(".")
        node = data
        for s in sections:
            node = node[s]
        del node[name]
        with pytest.raises(ConfigError) as err:
            parse_params(data, "params.yaml", complete=True)  # load_params without the YAML
        assert str(err.value).startswith(f"params.yaml: missing key {key}: "), key
    del shipped["train"]["crop"]  # and through a file, as a stage reads it
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(shipped))
    with pytest.raises(ConfigError, match="params.yaml: missing key train.crop: every key"):
        load_params(tmp_path / "params.yaml")


def test_a_deleted_section_is_named_and_partial_mappings_still_parse():
    data = repo_params()
    del data["register"], data["evaluate"]["tile"]
    with pytest.raises(ConfigError, match="^params: missing keys evaluate.tile, register: "):
        parse_params(data, complete=True)
    # code and tests that build params from a few keys (not a params file) keep the defaults
    assert parse_params({"train": {"crop": 32}}).train.crop == 32


def test_the_metric_names_params_accept_are_those_training_logs():
    from ytmt.metric_names import validation_metrics
    from ytmt.train.validation import VAL_KEYS, VAL_REAL_KEYS

    assert set(validation_metrics()) == {*VAL_KEYS, *VAL_REAL_KEYS}
    parse_params(with_values(register__metric="val_real_ssim_t_strict",
                             tune__metric="val_ssim_r"), complete=True)
