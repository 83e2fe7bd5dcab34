"""A training's identity (ytmt.train.trainer._open_run): the same config resumes the same
MLflow run and Ray folder only for the same owner and the same Ray storage."""

from __future__ import annotations

from ytmt.train.trainer import _open_run, run_owner


def test_owner_and_storage_are_part_of_a_trainings_identity(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = (uri, "ytmt-train", "ytmt-ucs", 0, "abc123")
    monkeypatch.setenv("YTMT_USER", "alice")
    _, alice, alice_ray = _open_run(*args, "s3://team/ray")
    _, again, again_ray = _open_run(*args, "s3://team/ray")
    assert (again, again_ray) == (alice, alice_ray)  # unfinished: resumed, same Ray folder
    monkeypatch.setenv("YTMT_USER", "bob")
    _, bob, bob_ray = _open_run(*args, "s3://team/ray")
    assert bob != alice and bob_ray != alice_ray  # same config, another person
    monkeypatch.setenv("YTMT_USER", "alice")
    _, moved, moved_ray = _open_run(*args, "s3://team/ray-moved")
    assert moved != alice  # storage moved: a new run, not one history of two attempts
    assert alice_ray.startswith("ytmt-ucs-seed0-abc123-alice")


def test_run_owner_is_file_name_safe(monkeypatch):
    monkeypatch.setenv("YTMT_USER", "Dr. O'Neil/ML team")
    assert run_owner() == "Dr._O_Neil_ML_team"
