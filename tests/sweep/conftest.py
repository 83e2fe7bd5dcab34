"""Fixtures for the sweep tests: a tiny real shard set and params files for tiny sweeps.

Sweeps run ``pipelines/tune.py`` in a subprocess: it owns its Ray (with the trial-driver
resource and the dashboard a sweep needs) and cannot collide with a Ray another test
module started in this process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ytmt.config import to_dict
from ytmt.params import Params, parse_params

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def shards(tmp_path_factory) -> Path:
    """Shards synthesized by ytmt.data from scikit-image's bundled photos: 32 px stored size,
    16 train, 4 val, 2 test mixtures (a few seconds)."""
    from ytmt.data.config import FetchConfig, SynthesizeConfig
    from ytmt.data.sources import fetch_images
    from ytmt.data.synthesis import synthesize_shards

    root = tmp_path_factory.mktemp("tune-data")
    fetch_images(FetchConfig(), root / "images")
    cfg = SynthesizeConfig(size=32, scale_min=32, scale_max=64, train_mixtures=16,
                           val_mixtures=4, test_mixtures=2, workers=1, chunk=8)
    synthesize_shards(root / "images", root / "shards", cfg, seed=0)
    return root / "shards"


def tune_section(**tune):
    """``TuneConfig`` parsed from ``tune`` entries (the rest default)."""
    return parse_params({"tune": tune}).tune


def sweep_params(tmp_path: Path, **tune) -> Path:
    """A params.yaml for a tiny sweep (width 4, crop 32, 2 steps per epoch, one trial at a
    time, no replicate) under ``tmp_path``; ``tune`` entries replace keys of the ``tune``
    section."""
    data = to_dict(Params())
    data["model"].update(width=4, vgg_weights="random")
    data["train"].update(batch_size=4, crop=32, max_steps_per_epoch=2, log_every_steps=100,
                         sample_count=1, torch_threads=1)
    # one trial at a time on one 1-CPU worker, no replicate: what these tests check (resume,
    # scheduler decisions, records) does not depend on the recipe's resources
    data["tune"].update(
        max_concurrent_trials=1, workers_per_trial=1, cpus_per_worker=1.0, replicate=False,
        epochs=2, num_samples=2, storage_path=str(tmp_path / "tune_runs"),
        tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", local_cpus=2,
        space={"loss.perceptual": {"type": "loguniform", "low": 0.01, "high": 1.0},
               "loss.exclusion": {"type": "grid", "values": [0.0, 2.0]}})
    data["tune"].update(tune)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def tune_cmd(params: Path, shards: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "pipelines" / "tune.py"), "--params", str(params),
            "--shards", str(shards), "--out", str(out), *extra]


def run_tune(params: Path, shards: Path, out: Path, *extra: str, timeout: float = 420,
             cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(tune_cmd(params, shards, out, *extra), cwd=cwd or params.parent,
                          env=env, capture_output=True, text=True, timeout=timeout)
