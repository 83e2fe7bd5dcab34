"""Two runs of one experiment logging the same new dataset at once (two training runs of the
matrix on one shard set, concurrent sweep trials): MLflow's store looks the dataset up and
then inserts it, so the slower run hits the unique key the faster one just took
(``UNIQUE constraint failed: datasets.experiment_id, datasets.name, datasets.digest``), and
its training stage died of it. :func:`ytmt.tracking.log_inputs_once` tries again and links
the dataset the other run created. Real threads on a real SQLite store; the control shows
that the race happens with MLflow's own call in the same setting."""

from __future__ import annotations

import threading

from mlflow import MlflowClient

from ytmt.tracking import dataset_input, log_inputs_once


def _race(uri: str, name: str, tmp_path, log) -> tuple[list[str], list[str]]:
    """Two runs of a new experiment log the same two datasets at once with ``log(run_id,
    inputs)``; returns (the runs, the errors)."""
    c = MlflowClient(uri)
    exp = c.create_experiment(name)
    runs = [c.create_run(exp).info.run_id for _ in range(2)]
    inputs = [dataset_input(f"shards/{s}", tmp_path / s, "a14b9333dd3c2929", "training")
              for s in ("train", "val")]
    barrier, errors = threading.Barrier(2), []

    def go(run_id: str) -> None:
        barrier.wait()
        try:
            log(run_id, inputs)
        except Exception as err:  # noqa: BLE001 (the control collects MLflow's error)
            errors.append(str(err))

    threads = [threading.Thread(target=go, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return runs, errors


def test_concurrent_runs_log_the_same_new_dataset(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    c = MlflowClient(uri)
    raced = []
    for i in range(30):  # the control: MLflow's own call loses the race now and then
        _, errors = _race(uri, f"control{i}", tmp_path,
                          lambda run_id, inputs: MlflowClient(uri).log_inputs(
                              run_id, datasets=inputs))
        raced += errors
        if raced:
            break
    assert any("UNIQUE constraint failed: datasets" in e for e in raced), raced

    for i in range(10):
        runs, errors = _race(uri, f"fixed{i}", tmp_path,
                             lambda run_id, inputs: log_inputs_once(uri, run_id, inputs))
        assert errors == []
        for run_id in runs:
            logged = {d.dataset.name for d in c.get_run(run_id).inputs.dataset_inputs}
            assert logged == {"shards/train", "shards/val"}
