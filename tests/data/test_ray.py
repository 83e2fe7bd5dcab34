"""The Ray backend writes the same bytes as the local one (tiny scale, one local node)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import ray

from ytmt.data.synthesis import synthesize_shards

from .conftest import TINY


@pytest.mark.slow
def test_ray_backend_matches_local(images_dir, shards, tmp_path):
    already = ray.is_initialized()
    out = tmp_path / "ray"
    # Without a running Ray the library starts a 1-CPU local one on 127.0.0.1 and stops it.
    metrics = synthesize_shards(images_dir, out, replace(TINY, backend="ray", workers=1),
                                seed=0)
    assert ray.is_initialized() == already
    assert metrics["backend"] == "ray"
    for split in ("train", "val", "test"):
        for a in sorted((shards / split).iterdir()):
            assert (out / split / a.name).read_bytes() == a.read_bytes(), a
