"""The sweep's configuration (``tune``, :mod:`ytmt.sweep.config`) and search space, and a
stage that refuses bad settings before Ray starts. No Ray started."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from ytmt.config import ConfigError
from ytmt.params import load_params
from ytmt.sweep.plan import concurrent_trials, local_resources, trial_resources
from ytmt.sweep.space import TUNABLE_LOSS_KEYS, grid_size, to_tune_space, validate_space

from .conftest import REPO, sweep_params, tune_cmd, tune_section


def test_repo_params_declare_a_small_valid_sweep():
    params = load_params(REPO / "params.yaml")
    cfg = params.tune
    n_trials = cfg.num_samples * grid_size(cfg.space)
    assert cfg.enabled and n_trials <= 4
    assert set(cfg.space) <= set(TUNABLE_LOSS_KEYS)
    # on 2 cores the trials run side by side, their workers fit, the driver holds no CPU
    res = trial_resources(params)
    two_cores = {"CPU": 2.0, **local_resources(cfg, n_trials)}
    concurrency = concurrent_trials(res, two_cores, n_trials, cfg.max_concurrent_trials)
    assert concurrency == min(n_trials, 2)
    assert concurrency * res.workers * res.cpus_per_worker <= 2
    assert "CPU" not in cfg.driver_resources
    assert cfg.replicate  # the sweep says whether it can tell its trials apart


@pytest.mark.parametrize("space, message", [
    ({"loss.lambda9": {"type": "uniform", "low": 0, "high": 1}},
     "space.loss.lambda9: unknown or non-tunable loss key"),
    ({"loss.exclusion_levels": {"type": "choice", "values": [2, 3]}},
     "space.loss.exclusion_levels: unknown or non-tunable"),
    ({"train.lr": {"type": "loguniform", "low": 1e-5, "high": 1e-3}},
     "space.train.lr: only loss weights can be tuned"),
    ({"loss.perceptual": {"type": "uniform", "low": 0.5, "high": 0.5}},
     "space.loss.perceptual: low = 0.5 must be < high = 0.5"),
    ({"loss.perceptual": {"type": "uniform", "low": 2, "high": 1}}, "must be < high"),
    ({"loss.perceptual": {"type": "normal", "low": 0, "high": 1}},
     "space.loss.perceptual.type = 'normal': unknown distribution"),
    ({"loss.perceptual": {"low": 0, "high": 1}}, "type = None: unknown distribution"),
    ({"loss.perceptual": {"type": "loguniform", "low": 0, "high": 1}}, "needs low > 0"),
    ({"loss.perceptual": {"type": "uniform", "low": -1, "high": 1}}, "must be >= 0"),
    ({"loss.perceptual": {"type": "uniform", "low": 0}}, "needs high"),
    ({"loss.perceptual": {"type": "uniform", "low": 0, "high": 1, "q": 2}},
     "space.loss.perceptual.q: not a field of a uniform"),
    ({"loss.exclusion": {"type": "choice", "values": []}}, "expected a non-empty list"),
    ({"loss.exclusion": {"type": "grid", "values": [1, 1]}}, "repeated values"),
    ({"loss.exclusion": {"type": "choice", "values": [1, "x"]}}, "expected a finite number"),
    ({"loss.exclusion": 0.5}, "tune.space.loss.exclusion = 0.5: expected a mapping"),
    ({}, "space: empty"),
])
def test_invalid_search_space_names_the_entry(space, message):
    with pytest.raises(ConfigError, match="^tune[:.] ?space") as err:
        tune_section(space=space)
    assert message in str(err.value)


@pytest.mark.parametrize("tune, message", [
    ({"overrides": {"epochs": 3}}, "overrides.epochs: expected '<section>.<field>'"),
    ({"overrides": {"data.root": "x"}}, "section one of model, loss, train"),
    ({"overrides": {"loss.perceptual": 0.1}}, "also in tune.space"),
    ({"overrides": {"train.epochs": 3}}, "use tune.epochs"),
    ({"variant": "ytmt-xyz"}, "variant = 'ytmt-xyz': unknown"),
    ({"scheduler": "pbt"}, "tune.scheduler = 'pbt': expected one of 'asha', 'fifo'"),
    ({"grace_period": 3, "epochs": 2}, "grace_period = 3 must be <= epochs = 2"),
    ({"reduction_factor": 1.0}, "tune.reduction_factor = 1.0: must be > 1.0"),
    ({"driver_resources": {"train_driver": 0}}, "driver_resources.train_driver = 0.0"),
    ({"max_concurrent_trials": 0}, "must be >= 1"),
])
def test_invalid_sweep_settings_fail_at_once(tune, message):
    with pytest.raises(ConfigError) as err:
        tune_section(**tune)
    assert message in str(err.value)


def test_space_maps_to_ray_tune_domains():
    space = {"loss.perceptual": {"type": "loguniform", "low": 0.01, "high": 1.0},
             "loss.rec_t_mse": {"type": "uniform", "low": 0.1, "high": 0.5},
             "loss.exclusion": {"type": "choice", "values": [0.5, 1, 2]},
             "loss.adversarial": {"type": "grid", "values": [0, 0.01]}}
    validate_space(space)
    out = to_tune_space(space)
    draws = np.array(out["loss.perceptual"].sample(size=4000, random_state=0))
    assert draws.min() >= 0.01 and draws.max() <= 1.0
    assert np.median(draws) == pytest.approx(0.1, rel=0.15)  # log-uniform: geometric mean
    assert (out["loss.rec_t_mse"].lower, out["loss.rec_t_mse"].upper) == (0.1, 0.5)
    assert out["loss.exclusion"].categories == [0.5, 1.0, 2.0]
    assert out["loss.adversarial"] == {"grid_search": [0.0, 0.01]}
    assert grid_size(space) == 2


def test_disabled_sweep_writes_empty_best_without_ray(tmp_path, shards):
    params = sweep_params(tmp_path, enabled=False)
    out = tmp_path / "out"
    t0 = time.perf_counter()
    proc = subprocess.run(tune_cmd(params, shards, out), cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "tune.enabled is false" in proc.stdout
    assert yaml.safe_load((out / "best.yaml").read_text()) == {}
    assert json.loads((out / "summary.json").read_text())["enabled"] is False
    assert json.loads((out / "spread.json").read_text()) == {}
    assert list(csv.reader(io.StringIO((out / "trials.csv").read_text()))) == [
        ["trial_id", "status"]]
    assert not (tmp_path / "tune_runs").exists() and not (tmp_path / "mlflow.db").exists()
    assert time.perf_counter() - t0 < 60  # generous: it must not be waiting on Ray


def test_invalid_space_fails_the_stage_at_once(tmp_path, shards):
    params = sweep_params(tmp_path, space={"loss.perceptual": {"type": "loguniform",
                                                               "low": 1.0, "high": 0.1}})
    proc = subprocess.run(tune_cmd(params, shards, tmp_path / "out"), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert ("tune: invalid configuration: tune: space.loss.perceptual: low = 1.0 must be < "
            "high = 0.1") in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "tune_runs").exists()


def test_missing_shards_fail_before_ray_starts(tmp_path):
    params = sweep_params(tmp_path)
    proc = subprocess.run([*tune_cmd(params, tmp_path / "nope", tmp_path / "out")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "does not exist; run the synthesize stage first" in proc.stderr
    assert not (tmp_path / "tune_runs").exists()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
