"""Acceptance 2: a worker killed mid-run is restored from the last checkpoint (one MLflow run,
every epoch's metrics exactly once), and an interrupted training resumes when run again."""

import os
import time
from pathlib import Path

import pytest
import ray.train
from mlflow import MlflowClient

from ytmt.checkpoint import load_checkpoint
from ytmt.params import parse_params
from ytmt.ray_local import HEALTH_CHECK_ENV, LOCAL_HEALTH_CHECK_S
from ytmt.train.loop import shard_dataset, train_loop_per_worker
from ytmt.train.trainer import train_variant

from .conftest import pickle_by_value, tiny_params

pickle_by_value(__name__)


# Ray Train's controller collects the workers' reports (and so registers their checkpoints)
# when it polls them, every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S: on the local Ray these tests
# run on (ytmt.ray_local.start_local_ray) the variable as set, else 0.5 s. A worker that dies
# sooner than that after reporting loses its report, and the restart begins from an older
# checkpoint or from scratch. Waiting four intervals (at least 2 s) before dying makes the
# fault the one the tests mean: a node lost after its last checkpoint was taken.
_POLL_S = float(os.environ.get(HEALTH_CHECK_ENV, LOCAL_HEALTH_CHECK_S))
_REPORT_GRACE_S = max(4 * _POLL_S, 2.0)


class KillingShards:
    """``dataset_fn``: real shards, but rank ``rank`` dies (``os._exit``, no clean-up, like a
    lost node) when it starts epoch ``epoch`` (0-based) and ``marker`` does not exist yet,
    :data:`_REPORT_GRACE_S` after the previous epoch's report."""

    def __init__(self, marker, rank, epoch):
        self.marker, self.rank, self.epoch = str(marker), rank, epoch

    def __call__(self, root, split, crop, augment, seed, rank, world_size):
        ds = shard_dataset(root, split, crop, augment, seed, rank, world_size)
        if split == "train" and rank == self.rank:
            set_epoch, marker, kill_at = ds.set_epoch, Path(self.marker), self.epoch

            def dying_set_epoch(epoch):
                if epoch == kill_at and not marker.exists():
                    marker.touch()
                    time.sleep(_REPORT_GRACE_S)
                    os._exit(1)
                set_epoch(epoch)

            ds.set_epoch = dying_set_epoch
        return ds


class KillOnce:
    """A train loop: the shared loop reading :class:`KillingShards`."""

    def __init__(self, marker, rank, epoch):
        self.dataset_fn = KillingShards(marker, rank, epoch)

    def __call__(self, config):
        train_loop_per_worker(dict(config, dataset_fn=self.dataset_fn))


def check_single_run(params, info_run_id, epochs):
    client = MlflowClient(params.train.tracking_uri)
    exp = client.get_experiment_by_name(params.train.experiment)
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs] == [info_run_id]
    assert runs[0].info.status == "FINISHED"
    for key in ("epoch", "train_loss", "val_psnr_t", "val_ssim_t_strict", "loss_rec", "lr"):
        steps = [m.step for m in client.get_metric_history(info_run_id, key)]
        assert steps == list(range(1, epochs + 1)), (key, steps)


@pytest.mark.slow
def test_killed_worker_is_restored_from_checkpoint(tmp_path, shards, ray_local):
    params = parse_params(tiny_params(tmp_path, train__num_workers=2, train__epochs=3,
                                      train__max_steps_per_epoch=2, train__max_failures=1))
    marker = tmp_path / "killed"
    trained = train_variant(params, "ytmt-ucs", shards, tmp_path / "models", seed=0,
                            train_loop=KillOnce(marker, rank=1, epoch=2))
    assert marker.exists(), "the fault was not injected"
    extra = load_checkpoint(trained.model_path)["extra"]
    assert trained.epochs == 3 and [h["epoch"] for h in extra["history"]] == [1, 2, 3]
    ckpt = load_checkpoint(Path(trained.ray_run) / _latest_checkpoint(trained.ray_run)
                           / "checkpoint.pt")
    # restarted from epoch 2's checkpoint, the last one taken before the worker died
    assert ckpt["extra"]["starts"] == [0, 2]
    check_single_run(params, trained.mlflow_run_id, 3)


def _latest_checkpoint(run_dir):
    return sorted(p.name for p in Path(run_dir).glob("checkpoint_*") if p.is_dir())[-1]


@pytest.mark.slow
def test_interrupted_training_resumes_when_run_again(tmp_path, shards, ray_local):
    params = parse_params(tiny_params(tmp_path, train__num_workers=1, train__epochs=3,
                                      train__max_steps_per_epoch=2, train__max_failures=0))
    marker = tmp_path / "killed"
    with pytest.raises(ray.train.TrainingFailedError):
        train_variant(params, "ytmt-ucs", shards, tmp_path / "models", seed=0,
                      train_loop=KillOnce(marker, rank=0, epoch=2))
    assert marker.exists()
    client = MlflowClient(params.train.tracking_uri)
    (failed,) = client.search_runs([client.get_experiment_by_name(
        params.train.experiment).experiment_id])
    assert failed.info.status == "FAILED"

    trained = train_variant(params, "ytmt-ucs", shards, tmp_path / "models", seed=0)
    assert trained.mlflow_run_id == failed.info.run_id
    ckpt = load_checkpoint(Path(trained.ray_run) / _latest_checkpoint(trained.ray_run)
                           / "checkpoint.pt")
    assert ckpt["extra"]["starts"] == [0, 2]  # continued after epoch 2's checkpoint
    check_single_run(params, trained.mlflow_run_id, 3)
