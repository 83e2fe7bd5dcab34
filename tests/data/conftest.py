"""Tiny photo folders, shard sets and a local HTTP server made by the tests themselves."""

from __future__ import annotations

import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ytmt.data.config import FetchConfig, SynthesizeConfig
from ytmt.data.sources import fetch_images
from ytmt.data.synthesis import synthesize_shards


def smooth_photo(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A photo-like (H, W, 3) uint8 image: smooth colour gradients plus texture."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    chans = []
    for _ in range(3):
        a, b, c, f = rng.uniform(0, 1, 4)
        chans.append(0.5 + 0.25 * np.sin(2 * np.pi * (a * yy + b * xx) * (1 + 3 * f) + c * 6)
                     + 0.1 * rng.standard_normal((h, w)))
    return np.clip(np.stack(chans, -1) * 255, 0, 255).astype(np.uint8)


def write_photos(folder: Path, n: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        h, w = (60, 80) if i % 2 else (80, 64)
        p = folder / f"photo{i:02d}.{'jpg' if i % 3 else 'png'}"
        Image.fromarray(smooth_photo(rng, h, w)).save(p)
        paths.append(p)
    return paths


class Server:
    """Serves ``files`` (URL path → bytes; a single payload is served at ``/VOC.tar``) on
    127.0.0.1 with HTTP Range support; ``cut`` bytes makes every response stop early (a
    dropped connection). ``requests`` lists ``(path, start byte)`` of every GET, ``ranges``
    the start bytes; ``url`` is the first file's URL, ``url_of(path)`` any file's."""

    def __init__(self, payload: bytes | dict[str, bytes], cut: int | None = None):
        self.files = payload if isinstance(payload, dict) else {"/VOC.tar": payload}
        self.cut, self.requests = cut, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                start = 0
                rng = self.headers.get("Range")
                if rng:
                    start = int(rng.split("=")[1].split("-")[0])
                server.requests.append((self.path, start))
                if self.path not in server.files:
                    self.send_error(404)
                    return
                body = server.files[self.path][start:]
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:server.cut] if server.cut else body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.url = self.url_of(next(iter(self.files)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def ranges(self) -> list[int]:
        return [start for _, start in self.requests]

    def url_of(self, path: str) -> str:
        return self.base + path

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


TINY = SynthesizeConfig(size=32, scale_min=32, scale_max=48, train_mixtures=24,
                        val_mixtures=8, test_mixtures=8, chunk=8, workers=1)


@pytest.fixture(scope="session")
def tiny_cfg() -> SynthesizeConfig:
    return TINY


@pytest.fixture(scope="session")
def images_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos")
    write_photos(root / "src", 8)
    fetch_images(FetchConfig(source="folder", folder=str(root / "src"), min_side=16),
                 root / "images")
    return root / "images"


@pytest.fixture(scope="session")
def shards(tmp_path_factory, images_dir) -> Path:
    out = tmp_path_factory.mktemp("shards") / "shards"
    synthesize_shards(images_dir, out, TINY, seed=0)
    return out


@pytest.fixture(scope="session")
def big_shards(tmp_path_factory, images_dir) -> Path:
    """More train rows in several row groups and parts (for sharding tests)."""
    out = tmp_path_factory.mktemp("big") / "shards"
    cfg = replace(TINY, train_mixtures=61, chunk=4, shard_mb=0.09)
    synthesize_shards(images_dir, out, cfg, seed=1)
    return out
