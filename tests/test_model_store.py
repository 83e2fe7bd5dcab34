"""``info.json`` (ytmt.model_store): the model file is recorded relative to its folder, so a
model folder reads the same after it moved (another project path, another node, DVC's
cache), and a path outside the folder stays as given."""

from __future__ import annotations

import json
import shutil

import pytest

from ytmt.model_store import INFO_FILE, ModelInfo, read_info, write_info


def test_info_json_records_the_model_relative_to_its_folder(tmp_path):
    folder = tmp_path / "project" / "outputs" / "models" / "ytmt-ucs" / "seed0"
    folder.mkdir(parents=True)
    (folder / "model.pt").write_bytes(b"weights")
    write_info(folder, ModelInfo(variant="ytmt-ucs", seed=0,
                                 model_path=str(folder / "model.pt"), epochs=3))
    assert json.loads((folder / INFO_FILE).read_text())["model_path"] == "model.pt"
    assert read_info(folder).model_path == str(folder / "model.pt")

    moved = tmp_path / "elsewhere" / "seed0"
    shutil.copytree(folder, moved)
    shutil.rmtree(tmp_path / "project")
    info = read_info(moved)
    assert info.model_path == str(moved / "model.pt") and info.epochs == 3


def test_a_model_outside_the_folder_keeps_its_path(tmp_path):
    other = tmp_path / "weights" / "model.pt"
    write_info(tmp_path, ModelInfo(variant="ytmt-ucs", seed=1, model_path=str(other)))
    assert json.loads((tmp_path / INFO_FILE).read_text())["model_path"] == str(other)
    assert read_info(tmp_path).model_path == str(other)


def test_info_json_without_model_path_is_refused(tmp_path):
    (tmp_path / INFO_FILE).write_text(json.dumps({"variant": "ytmt-ucs", "seed": 0}))
    with pytest.raises(ValueError, match="expected a mapping with variant, seed and model_path"):
        read_info(tmp_path)
