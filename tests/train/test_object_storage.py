"""Shards and Ray checkpoints in an S3-compatible object store: a real standalone S3 server
(moto's, on 127.0.0.1), reached through the URI form Ray and pyarrow document
(``s3://bucket/prefix?endpoint_override=host:port&scheme=http``), exactly as a MinIO or S3
bucket would be. The reader gives the same samples from an uploaded shard set as from the
folder, and refuses a set whose upload is incomplete. A training run as a user starts it
(``pipelines/train.py --shards s3://... --storage s3://...``, its own local Ray) is killed
mid-run once its first checkpoint is in the bucket; running it again resumes from that
checkpoint and loses no completed epoch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from .conftest import CREDENTIALS, tiny_params

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
def _upload(fs, local: Path, prefix: str) -> None:
    import pyarrow.fs as pafs

    pafs.copy_files(str(local), prefix, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs)


def test_shards_read_from_a_bucket_equal_the_folder(tmp_path, shards, s3_server, monkeypatch):
    import pyarrow.fs as pafs

    from ytmt.data.reader import ShardDataset, real_val_rows
    from ytmt.data.shards import read_manifest, shard_set_key
    from ytmt.train.trainer import ShardsMissing, check_shards

    port, fs = s3_server
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    _upload(fs, shards, "ytmt/shards")
    uri = f"s3://ytmt/shards?endpoint_override=127.0.0.1:{port}&scheme=http"
    assert check_shards(uri) == uri
    assert read_manifest(uri) == read_manifest(shards)
    assert shard_set_key(uri) == shard_set_key(shards)  # the same resume keys either way
    assert real_val_rows(uri) == real_val_rows(shards)
    for split, kw in (("train", {"crop": 32, "augment": True, "seed": 3}), ("val", {})):
        local, remote = (list(ShardDataset(root, split, **kw)) for root in (shards, uri))
        assert len(local) == len(remote) > 0
        for a, b in zip(local, remote, strict=True):
            assert a["id"] == b["id"]
            for key in ("mixture", "transmission", "reflection"):
                assert (a[key] == b[key]).all()

    # an upload that stopped early: a part missing, or cut short
    _upload(fs, shards, "ytmt/partial")
    part = sorted(i.path for i in fs.get_file_info(pafs.FileSelector("ytmt/partial/train")))[0]
    data = fs.open_input_stream(part).read()
    with fs.open_output_stream(part) as f:
        f.write(data[: len(data) // 2])
    partial = f"s3://ytmt/partial?endpoint_override=127.0.0.1:{port}&scheme=http"
    with pytest.raises(ShardsMissing, match="truncated"):
        check_shards(partial)
    fs.delete_file(part)
    with pytest.raises(ShardsMissing, match="listed in .* but missing"):
        check_shards(partial)
    with pytest.raises(ShardsMissing,
                       match=r"nothing/manifest.json\?endpoint_override=.*: missing"):
        check_shards(f"s3://ytmt/nothing?endpoint_override=127.0.0.1:{port}&scheme=http")


def test_synthesize_publishes_the_set_and_training_reads_that_copy(tmp_path, shards, s3_server,
                                                                  monkeypatch):
    """``synthesize.publish`` (the stage's upload for a cluster): the bucket's copy reads back
    as the folder; a second set published over it replaces the manifest and removes the parts
    only the first listed; an upload that fails midway leaves no manifest (never a set that
    looks complete); and the training stages refuse a bucket that holds another set, or none,
    in one line naming the fix."""
    import pyarrow.fs as pafs

    import ytmt.data.shards as sh
    from ytmt.data.config import SynthesizeConfig
    from ytmt.data.synthesis import synthesize_shards

    port, fs = s3_server
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    uri = f"s3://ytmt/pub/shards?endpoint_override=127.0.0.1:{port}&scheme=http"
    with pytest.raises(sh.ShardsMissing, match=r"synthesize.publish = s3://ytmt/pub/shards.* "
                                            r"holds no shard set; .*dvc repro -f synthesize"):
        sh.shards_for_training(shards, uri)

    # a set of many small parts (one per 16 mixtures), then the fixture's set over it
    many = tmp_path / "many"
    synthesize_shards(shards.parent / "images", many, SynthesizeConfig(
        size=48, scale_min=48, scale_max=96, train_mixtures=64, val_mixtures=8, test_mixtures=4,
        workers=1, chunk=16, shard_mb=0.01), seed=1)
    first = sh.publish(many, uri)
    assert first["files"] == len(sh._listed(sh.read_manifest(many))) > 4
    assert sh.read_manifest(uri) == sh.read_manifest(many)
    assert sh.shards_for_training(many, uri) == uri
    with pytest.raises(sh.ShardsMissing, match="holds another shard set than"):
        sh.shards_for_training(shards, uri)

    def objects() -> set[str]:
        found = fs.get_file_info(pafs.FileSelector("ytmt/pub/shards", recursive=True))
        return {i.path.removeprefix("ytmt/pub/shards/") for i in found
                if i.type == pafs.FileType.File}

    second = sh.publish(shards, uri)
    assert second["removed"] == len(sh._listed(sh.read_manifest(many))
                                    - sh._listed(sh.read_manifest(shards))) > 0
    assert objects() == sh._listed(sh.read_manifest(shards)) | {"manifest.json"}
    assert sh.shard_set_key(uri) == sh.shard_set_key(shards) == second["key"]
    assert sh.shards_for_training(shards, uri) == uri
    assert sh.shards_for_training(shards, None) == shards  # no publish: the folder

    # an upload that dies after its first part: the bucket holds no manifest
    real_copy, calls = pafs.copy_files, []

    def dying_copy(*args, **kwargs):
        if calls:
            raise OSError("connection reset")
        calls.append(args)
        return real_copy(*args, **kwargs)

    monkeypatch.setattr(pafs, "copy_files", dying_copy)
    with pytest.raises(OSError, match="connection reset"):
        sh.publish(many, uri)
    assert "manifest.json" not in objects()
    with pytest.raises(sh.ShardsMissing, match="holds no shard set"):
        sh.shards_for_training(shards, uri)


def _train(tmp_path, storage, env, kill_when=None):
    """``pipelines/train.py`` for ytmt-ucs seed 0; ``kill_when()`` true: SIGKILL its
    process group (the driver, its local Ray, the workers)."""
    cmd = [sys.executable, "pipelines/train.py", "--params", str(tmp_path / "params.yaml"),
           "--variant", "ytmt-ucs", "--seed", "0", "--shards", str(env["SHARDS"]),
           "--out", str(tmp_path / "model"), "--metrics", str(tmp_path / "metrics.json"),
           "--plots", str(tmp_path / "plots"), "--storage", storage]
    log = tmp_path / f"train-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            while proc.poll() is None:
                if kill_when is not None and kill_when():
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=60)
                    return None, log.read_text()
                time.sleep(1)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, log.read_text()


def test_training_resumes_from_checkpoints_in_an_s3_bucket(tmp_path, shards, s3_server):
    port, fs = s3_server
    params = tiny_params(tmp_path, train__num_workers=1, train__epochs=3,
                         train__max_steps_per_epoch=2, train__max_failures=0)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    storage = f"s3://ytmt/ray?endpoint_override=127.0.0.1:{port}&scheme=http"
    _upload(fs, shards, "ytmt/shards")  # the run reads only the bucket's copy
    remote_shards = f"s3://ytmt/shards?endpoint_override=127.0.0.1:{port}&scheme=http"
    env = {**os.environ, **CREDENTIALS, "SHARDS": remote_shards,
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)

    import pyarrow.fs as pafs

    def checkpoints() -> list[str]:
        found = fs.get_file_info(pafs.FileSelector("ytmt/ray", recursive=True,
                                                   allow_not_found=True))
        return sorted(i.path for i in found if i.base_name == "checkpoint.pt")

    code, first = _train(tmp_path, storage, env, kill_when=lambda: len(checkpoints()) >= 1)
    assert code is None, f"the run ended before its first checkpoint reached S3:\n{first[-3000:]}"
    assert not (tmp_path / "model" / "model.pt").exists()
    assert not any(Path(tmp_path / "ray_results").glob("**/checkpoint.pt"))  # nothing local

    code, second = _train(tmp_path, storage, env)
    assert code == 0, second[-4000:]
    assert "resumed after epoch" in second, second[-3000:]
    assert len(checkpoints()) >= 2
    client = MlflowClient(params["train"]["tracking_uri"])
    exp = client.get_experiment_by_name(params["train"]["experiment"])
    (run,) = client.search_runs([exp.experiment_id])  # one run across the kill
    assert run.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_psnr_t")]
    assert steps == [1, 2, 3]  # every epoch once: none lost, none repeated
    assert run.data.tags["ytmt_ray_storage"] == storage
    sources = {d.dataset.name: d.dataset.source for d in run.inputs.dataset_inputs}
    assert "s3://ytmt/shards/train" in sources["shards/train"], sources
