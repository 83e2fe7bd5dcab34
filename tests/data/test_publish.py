"""``synthesize.publish`` to a folder every node mounts (the object-store case is in
tests/train/test_object_storage.py): the copy reads back as the set, the training stages
take it, and a copy of another set is refused in one line."""

from __future__ import annotations

import shutil

import pytest

from ytmt.data.reader import ShardDataset
from ytmt.data.shards import ShardsMissing, publish, read_manifest, shards_for_training


def test_publish_to_a_shared_folder(tmp_path, shards, big_shards):
    shared = tmp_path / "mnt" / "shared" / "shards"
    up = publish(shards, str(shared))
    assert up["files"] == sum(len(s["parts"]) for s in read_manifest(shards)["splits"].values())
    assert read_manifest(shared) == read_manifest(shards)
    assert shards_for_training(shards, str(shared)) == str(shared)
    a, b = (list(ShardDataset(root, "val")) for root in (shards, shared))
    assert [x["id"] for x in a] == [x["id"] for x in b]
    assert all((x["mixture"] == y["mixture"]).all() for x, y in zip(a, b, strict=True))

    with pytest.raises(ShardsMissing, match="holds another shard set than"):
        shards_for_training(big_shards, str(shared))
    shutil.rmtree(shared)
    with pytest.raises(ShardsMissing, match="holds no shard set"):
        shards_for_training(shards, str(shared))
