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
    SHORTENED_KEYS,
    TrialResources,
    concurrent_trials,
    local_resources,
    plan_sweep,
    scaled_milestones,
    sweep_key,
    trial_params,
    trial_resources,
)
from ytmt.sweep.records import SweepError

from .conftest import REPO, sweep_params, tune_section


def _res(workers=1, cpus=1.0, gpus=0.0, driver=None) -> TrialResources:
    return TrialResources(workers, cpus, gpus, driver or {"train_driver": 0.01})


def test_resource_check_refuses_trials_that_cannot_all_start():
    two_cores = {"CPU": 2.0, "train_driver": 1.0}
    assert concurrent_trials(_res(), two_cores, 4, limit=1) == 1  # 1 trial x 1 worker x 1 CPU
    assert concurrent_trials(_res(), two_cores, 4, limit=2) == 2
    with pytest.raises(SweepError, match="2 concurrent trial.* need 4 CPU .* has 2"):
        concurrent_trials(_res(workers=2), two_cores, 4, limit=2)
    with pytest.raises(SweepError, match="need 0.01 train_driver .* has 0: start the nodes "
                                         "with --resources"):
        concurrent_trials(_res(), {"CPU": 8.0}, 1)
    with pytest.raises(SweepError, match="need 1 GPU"):
        concurrent_trials(_res(gpus=1.0), two_cores, 1)
    # a driver that takes a CPU counts against the workers' CPUs
    with pytest.raises(SweepError, match="need 3 CPU"):
        concurrent_trials(_res(workers=2, driver={"CPU": 1.0}), two_cores, 1)


def test_trials_run_side_by_side_as_far_as_the_cluster_fits_them():
    two_cores = {"CPU": 2.0, "train_driver": 2.0}
    # the default on 2 cores: training's 2 workers x 0.5 CPU per trial, so 2 trials at once
    assert concurrent_trials(_res(workers=2, cpus=0.5), two_cores, 2) == 2
    assert concurrent_trials(_res(workers=2, cpus=0.5), two_cores, 5) == 2
    assert concurrent_trials(_res(workers=2, cpus=0.5), two_cores, 1) == 1  # never > trials
    assert concurrent_trials(_res(workers=2, cpus=1.0), two_cores, 4) == 1  # one fits at a time
    # GPUs and the drivers' resource bound it too
    gpus = {"CPU": 64.0, "GPU": 4.0, "train_driver": 100.0}
    assert concurrent_trials(_res(workers=2, gpus=1.0), gpus, 8) == 2
    assert concurrent_trials(_res(driver={"train_driver": 1.0}), {"CPU": 64.0,
                                                                  "train_driver": 3.0}, 8) == 3
    # an explicit limit is kept (and checked), not raised to what fits
    assert concurrent_trials(_res(workers=2, cpus=0.5), two_cores, 4, limit=1) == 1


def _params(tmp_path, train=None, **tune):
    data = to_dict(load_params(sweep_params(tmp_path, **tune)))
    data["train"].update(train or {})
    return parse_params(data)


def test_trial_resources_follow_train_unless_tune_sets_them(tmp_path):
    follow = dict(workers_per_trial=None, cpus_per_worker=None, gpus_per_worker=None)
    cpu = trial_resources(_params(tmp_path, {"num_workers": 3, "cpus_per_worker": 0.25},
                                  **follow))
    assert (cpu.workers, cpu.cpus_per_worker, cpu.gpus_per_worker) == (3, 0.25, 0.0)
    assert trial_resources(_params(tmp_path, {"num_workers": 0}, **follow)).workers == 1
    gpu_train = {"use_gpu": True, "gpus_per_worker": 2.0, "backend": "nccl"}
    gpu = _params(tmp_path, gpu_train, **follow)
    assert trial_resources(gpu).gpus_per_worker == 2.0  # follows train.use_gpu
    assert (trial_params(gpu).train.use_gpu, trial_params(gpu).train.backend) == (True, "nccl")
    no_gpu = _params(tmp_path, gpu_train, **{**follow, "gpus_per_worker": 0.0})
    assert trial_resources(no_gpu).gpus_per_worker == 0.0  # set: kept
    assert (trial_params(no_gpu).train.use_gpu, trial_params(no_gpu).train.backend) == (
        False, "auto")
    assert trial_resources(_params(tmp_path, {"use_gpu": False}, **follow)).gpus_per_worker == 0
    own = trial_resources(_params(tmp_path, gpu_train, workers_per_trial=4, cpus_per_worker=2.0,
                                  gpus_per_worker=1.0))
    assert (own.workers, own.cpus_per_worker, own.gpus_per_worker) == (4, 2.0, 1.0)


def test_a_trial_is_the_training_recipe_shortened():
    """The repository's sweep: a trial trains what the train stage trains (per-worker batch,
    workers, crop, steps per epoch, loss, model, precision), only shorter."""
    params = load_params(REPO / "params.yaml")
    trial = trial_params(params)
    train, short = params.train.recipe(), trial.train.recipe()
    assert {k for k in train if train[k] != short[k]} == set(SHORTENED_KEYS)
    assert short["epochs"] == params.tune.epochs < train["epochs"]
    assert tuple(short["lr_milestones"]) == scaled_milestones(
        train["lr_milestones"], train["epochs"], params.tune.epochs)
    for section in ("seed", "model", "loss"):
        assert to_dict(getattr(trial, section)) == to_dict(getattr(params, section)), section
    assert trial.train.num_workers * trial.train.batch_size == \
        params.train.num_workers * params.train.batch_size  # the global batch
    # tune.overrides still apply on top (the tests' tiny sweeps use them)
    assert trial_params(parse_params({**to_dict(params), "tune": {
        **to_dict(params.tune), "overrides": {"train.max_steps_per_epoch": 3}}})
    ).train.max_steps_per_epoch == 3


def test_milestones_keep_their_place_in_the_shorter_schedule():
    assert scaled_milestones((14,), 18, 3) == (2,)  # the default: decay for the last third
    assert scaled_milestones((14,), 18, 18) == (14,)
    assert scaled_milestones((60, 80, 100), 120, 6) == (3, 4, 5)
    assert scaled_milestones((60, 80, 100), 120, 3) == (2,)  # the same epoch: merged
    assert scaled_milestones((1,), 18, 3) == (1,)  # never before the first epoch
    assert scaled_milestones((), 18, 3) == ()


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


def test_sweep_key_hashes_only_what_changes_the_result(tmp_path, shards):
    """An interrupted sweep resumes after a logging, run-list or placement change, and
    starts afresh after a change of what its trials compute."""
    base = load_params(sweep_params(tmp_path))
    key = sweep_key(base, shards)

    def key_with(section, **change):
        return sweep_key(parse_params({**_plain(base), section: {**_plain(base)[section],
                                                                 **change}}), shards)

    same = [("train", {"log_every_steps": 7}), ("train", {"sample_every": 5}),
            ("train", {"experiment": "other"}), ("train", {"variants": ["ytmt-ucs",
                                                                         "unet-no-fi"]}),
            ("train", {"seeds": [0, 1, 2]}), ("train", {"cpus_per_worker": 0.25}),
            ("tune", {"experiment": "other"}), ("tune", {"local_cpus": 1})]
    for section, change in same:
        assert key_with(section, **change) == key, (section, change)
    other = [("train", {"batch_size": 2}), ("train", {"lr_gamma": 0.5}),
             ("train", {"precision": "fp32"}), ("loss", {"rec_t_grad": 1.0}),
             ("tune", {"epochs": 1, "grace_period": 1}), ("tune", {"replicate": True}),
             ("tune", {"workers_per_trial": 2}),
             ("tune", {"overrides": {"train.max_steps_per_epoch": 1}})]
    for section, change in other:
        assert key_with(section, **change) != key, (section, change)


def _plain(params):
    return to_dict(params)


def test_two_stage_variant_is_refused_with_its_stage1_named(tmp_path, shards):
    with pytest.raises(ConfigError, match="two-stage; sweep the loss weights on its stage-1 "
                                          "variant \\('ytmt-ucs'\\)"):
        load_params(sweep_params(tmp_path, variant="ytmt-uct"))  # at load, before any stage




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
    replicated = plan_sweep(load_params(sweep_params(tmp_path, storage_path=None,
                                                     replicate=True)), shards)
    assert replicated.replicate_seed == params.seed + 1
    assert replicated.state_paths[-1] == replicated.replicate_path == \
        f"{replicated.storage}/{replicated.name}_seed{params.seed + 1}"
    assert replicated.resources == TrialResources(1, 1.0, 0.0, {"train_driver": 0.01})
    assert plan.space_keys == ("loss.perceptual", "loss.exclusion")
    assert plan.n_trials == 2 * 2  # num_samples x the 2-value grid
    assert plan_sweep(params, shards, "rel").storage == str(tmp_path / "rel")
    monkeypatch.setenv("YTMT_TUNE_STORAGE", "s3://bucket/tune")
    assert plan_sweep(params, shards).storage == "s3://bucket/tune"


def test_local_ray_gets_driver_resources_for_every_concurrent_trial():
    cfg = tune_section(driver_resources={"train_driver": 0.6, "CPU": 1.0})
    assert local_resources(cfg, 3) == {"train_driver": 2.0}  # ceil(3 x 0.6); CPU: the machine's
    assert local_resources(tune_section(), 1) == {"train_driver": 1.0}
