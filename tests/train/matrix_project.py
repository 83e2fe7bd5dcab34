"""DVC projects for the concurrent-runs tests and bench (ytmt.train.matrix): the repository's
own stages, tiny params, real shards."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.train.conftest import tiny_params

ROOT = Path(__file__).resolve().parents[2]
DVC = [sys.executable, "-m", "dvc"]


def dvc_project(path: Path, params: dict, stages: dict | None = None) -> Path:
    """A DVC project (no git) at ``path``: ``stages`` (default: the repository's dvc.yaml)
    and ``params``."""
    path.mkdir(parents=True, exist_ok=True)
    dvc_yaml = {"stages": stages} if stages else yaml.safe_load((ROOT / "dvc.yaml").read_text())
    (path / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run([*DVC, "init", "--no-scm", "-q"], cwd=path, check=True)
    return path


def train_project(path: Path, shards: Path) -> Path:
    """A DVC project with the repository's ``train`` stage (its command and outputs; its
    deps without the library modules) for ytmt-ucs seeds 0 and 1 at width 4, one Ray
    worker each, two steps; the shards and an empty best.yaml are in place."""
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["train"]
    stage["deps"] = [d for d in stage["deps"] if not d.startswith("ytmt/")]
    params = tiny_params(train__variants=["ytmt-ucs"], train__seeds=[0, 1], train__epochs=1,
                         train__max_steps_per_epoch=2, train__batch_size=2,
                         train__num_workers=1, train__torch_threads=1, train__sample_every=10,
                         train__log_every_steps=1)
    dvc_project(path, params, {"train": stage})
    (path / "pipelines").mkdir()
    shutil.copy(ROOT / "pipelines/train.py", path / "pipelines/train.py")
    shutil.copytree(shards, path / "outputs/shards")
    (path / "outputs/tune").mkdir()
    (path / "outputs/tune/best.yaml").write_text("{}\n")
    return path


def mlflow_runs(project: Path) -> dict[str, dict]:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("ytmt-train")
    return {r.info.run_name: {"start": r.info.start_time, "end": r.info.end_time,
                              "status": r.info.status, "metrics": r.data.metrics}
            for r in client.search_runs([exp.experiment_id])}

