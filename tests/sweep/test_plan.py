"""What a sweep is before Ray starts (:mod:`ytmt.sweep.plan`): resources, resume key,
storage, the tuned variant. No Ray started."""

from __future__ import annotations

import json
import shutil

import pytest

from ytmt.config import ConfigError, to_dict
from ytmt.data.shards import MANIFEST
from ytmt.params import load_params, parse_params
from ytmt.sweep.plan import (
    check_resources,
    local_resources,
    plan_sweep,
    sweep_key,
    tuned_variant,
)
from ytmt.sweep.records import SweepError

from .conftest import sweep_params, tune_section


def test_resource_check_refuses_trials_that_cannot_all_start():
    two_cores = {"CPU": 2.0, "train_driver": 1.0}
    check_resources(tune_section(), two_cores)  # 1 trial x 1 worker x 1 CPU
    check_resources(tune_section(max_concurrent_trials=2), two_cores)
    with pytest.raises(SweepError, match="2 concurrent trial.* need 4 CPU .* has 2"):
        check_resources(tune_section(max_concurrent_trials=2, workers_per_trial=2), two_cores)
    with pytest.raises(SweepError, match="need 0.01 train_driver .* has 0: start the nodes "
                                         "with --resources"):
        check_resources(tune_section(), {"CPU": 8.0})
    with pytest.raises(SweepError, match="need 1 GPU"):
        check_resources(tune_section(gpus_per_worker=1.0), two_cores)
    # a driver that takes a CPU counts against the workers' CPUs
    with pytest.raises(SweepError, match="need 3 CPU"):
        check_resources(tune_section(workers_per_trial=2, driver_resources={"CPU": 1.0}),
                        two_cores)


def test_sweep_key_changes_with_what_the_sweep_computes(tmp_path, shards):
    base = load_params(sweep_params(tmp_path))
    same_place = parse_params({**_plain(base), "tune": {**_plain(base)["tune"],
                                                         "storage_path": "/elsewhere",
                                                         "max_concurrent_trials": 2}})
    other_space = parse_params({**_plain(base), "tune": {**_plain(base)["tune"], "space": {
        "loss.exclusion": {"type": "choice", "values": [1.0, 3.0]}}}})
    other_recipe = parse_params({**_plain(base), "train": {**_plain(base)["train"],
                                                            "lr": base.train.lr * 2}})
    key = sweep_key(base, shards)
    assert sweep_key(same_place, shards) == key
    assert sweep_key(other_space, shards) != key
    assert sweep_key(other_recipe, shards) != key


def _plain(params):
    return to_dict(params)


def test_two_stage_variant_is_refused_with_its_stage1_named(tmp_path, shards):
    params = load_params(sweep_params(tmp_path, variant="ytmt-uct"))
    with pytest.raises(ConfigError, match="two-stage; sweep the loss weights on its stage-1 "
                                          "variant \\('ytmt-ucs'\\)"):
        tuned_variant(params)




def test_sweep_key_follows_the_shard_content_not_its_path(tmp_path, shards):
    params = load_params(sweep_params(tmp_path))
    copy = tmp_path / "copy"
    shutil.copytree(shards, copy)
    assert sweep_key(params, copy) == sweep_key(params, shards)
    manifest = json.loads((copy / MANIFEST).read_text())
    (copy / MANIFEST).write_text(json.dumps({**manifest, "seed": manifest["seed"] + 1}))
    assert sweep_key(params, copy) != sweep_key(params, shards)


def test_plan_puts_the_experiment_and_its_state_under_the_storage(tmp_path, shards,
                                                                    monkeypatch):
    monkeypatch.delenv("YTMT_TUNE_STORAGE", raising=False)
    monkeypatch.chdir(tmp_path)
    params = load_params(sweep_params(tmp_path, storage_path=None))
    plan = plan_sweep(params, shards)
    assert plan.storage == str(tmp_path / "outputs" / "tune_runs")
    assert plan.name == f"sweep-ytmt-ucs-{sweep_key(params, shards)}"
    assert plan.state_paths == (f"{plan.storage}/{plan.name}",
                                f"{plan.storage}/{plan.name}_train",
                                f"{plan.storage}/{plan.name}_asha.pkl")
    assert plan.space_keys == ("loss.perceptual", "loss.exclusion")
    assert plan.n_trials == 2 * 2  # num_samples x the 2-value grid
    assert plan_sweep(params, shards, "rel").storage == str(tmp_path / "rel")
    monkeypatch.setenv("YTMT_TUNE_STORAGE", "s3://bucket/tune")
    assert plan_sweep(params, shards).storage == "s3://bucket/tune"


def test_local_ray_gets_driver_resources_for_every_concurrent_trial():
    cfg = tune_section(max_concurrent_trials=3, driver_resources={"train_driver": 0.6,
                                                                  "CPU": 1.0})
    assert local_resources(cfg) == {"train_driver": 2.0}  # ceil(3 x 0.6); CPU is the machine's
    assert local_resources(tune_section()) == {"train_driver": 1.0}
