"""params.yaml sections ``fetch``, ``synthesize`` and ``data`` (with ``data.download``).

The defaults run on a 2-core laptop in well under a minute (scikit-image's bundled photos,
96 px stored mixtures). The paper's setting (PASCAL VOC 2012, short side in [224, 448],
224 px crops) is a params change, documented in docs/data.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ytmt.config import ConfigError, bounded

#: Natural RGB photos shipped inside scikit-image's wheel (no network, no pooch download).
SAMPLE_IMAGES = (
    "astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "motorcycle_right",
    "hubble_deep_field", "immunohistochemistry", "retina",
)
#: Natural greyscale photos of the same wheel (scenes and textures; read as RGB, each channel
#: the grey level, as the decoder reads a greyscale JPEG of VOC). Documents, drawings and
#: synthetic images of the wheel (page, text, horse, logo, colorwheel) are not photos.
SAMPLE_GREY_IMAGES = ("camera", "brick", "grass", "gravel", "coins", "moon")


@dataclass(frozen=True)
class FetchConfig:
    """Where the training photos come from; written to ``outputs/images``.

    ``source``: ``samples`` (scikit-image's bundled photos, offline), ``voc2012`` (the
    official PASCAL VOC 2012 trainval tar: download with resume, md5 check, extraction of
    ``JPEGImages``) or ``folder`` (every image under ``folder``, recursively).
    ``limit``: keep at most this many images (``null``: all).
    """

    source: Literal["samples", "voc2012", "folder"] = "samples"
    limit: int | None = bounded(None, ge=2)
    samples: tuple[str, ...] = SAMPLE_IMAGES
    folder: str | None = None
    voc_url: str = "http://host.robots.ox.ac.uk/pascal/VOC/voc2012/VOCtrainval_11-May-2012.tar"
    voc_tar: str | None = None  # an already-downloaded tar: no download
    voc_md5: str = "6cd6e144f989b92b3379bac3b3de84fd"
    voc_size: int = bounded(1999639040, ge=1)
    cache_dir: str = "~/.cache/ytmt"  # where the VOC tar is downloaded (and resumed)
    retries: int = bounded(3, ge=0)  # extra resume attempts when a download stops early
    timeout_s: float = bounded(60.0, gt=0)  # socket timeout of one read
    min_side: int = bounded(32, ge=1)  # images with a smaller side are skipped

    def validate(self) -> None:
        if self.source == "folder" and not self.folder:
            raise ConfigError("source = 'folder' needs folder: <path to your images>")
        if self.source == "samples":
            unknown = sorted(set(self.samples) - set(SAMPLE_IMAGES + SAMPLE_GREY_IMAGES))
            if unknown:
                raise ConfigError(f"samples = {unknown!r}: not offline scikit-image photos; "
                                  f"choose from {', '.join(SAMPLE_IMAGES + SAMPLE_GREY_IMAGES)}")
            repeated = sorted({n for n in self.samples if self.samples.count(n) > 1})
            if repeated:
                raise ConfigError(f"samples = {repeated!r} listed more than once")
            if len(self.samples) < 2:
                raise ConfigError("samples: at least 2 photos are needed to pair T with R")
        if len(self.voc_md5) != 32:
            raise ConfigError(f"voc_md5 = {self.voc_md5!r}: expected 32 hex digits")


@dataclass(frozen=True)
class SynthesizeConfig:
    """Reflection synthesis (CEILNet model as the YTMT authors run it, design.md s2).

    Per mixture: T and R get the same random rescale (short side an even size drawn from
    [scale_min, scale_max]), the same horizontal flip (probability ``flip_p``) and the same
    ``size``×``size`` crop; R is blurred with a ``kernel_size``² Gaussian, σ ~ U(sigma_min,
    sigma_max); ``M = T + R``; if max(M) > 1, ``m = (mean(M[M > 1]) − 1)·γ``,
    γ ~ U(gamma_min, gamma_max), ``R = clip(R − m)``, ``M = clip(T + R)``.
    The paper: size 224, scale [224, 448], kernel 11, σ in [2, 5], γ 1.3. Here ``size`` is the
    *stored* size: keep it larger than the training crop so that augmentation adds diversity.
    """

    size: int = bounded(96, ge=16)
    scale_min: int = bounded(96, ge=16)
    scale_max: int = bounded(192, ge=16)
    flip_p: float = bounded(0.5, ge=0.0, le=1.0)
    resample: Literal["opencv", "pil"] = "opencv"  # see docs/data.md: speed vs exact filter
    kernel_size: int = bounded(11, ge=1)
    sigma_min: float = bounded(2.0, gt=0.0)
    sigma_max: float = bounded(5.0, gt=0.0)
    gamma_min: float = bounded(1.3, ge=0.0)
    gamma_max: float = bounded(1.3, ge=0.0)
    train_mixtures: int = bounded(256, ge=1)
    val_mixtures: int = bounded(32, ge=0)
    test_mixtures: int = bounded(32, ge=0)
    val_image_fraction: float = bounded(0.1, ge=0.0, lt=0.5)  # held-out photos for val
    test_image_fraction: float = bounded(0.1, ge=0.0, lt=0.5)  # held-out photos for test
    val_photos: tuple[str, ...] = ()  # named held-out photos (ids) instead of the fraction
    test_photos: tuple[str, ...] = ()
    chunk: int = bounded(32, ge=1)  # mixtures per task and per Parquet row group
    shard_mb: float = bounded(128.0, gt=0.0)  # target (uncompressed) size of one shard file
    compression: Literal["zstd", "lz4", "none"] = "zstd"  # Parquet codec of every column
    compression_level: int = bounded(3, ge=1, le=22)  # zstd level
    workers: int = bounded(0, ge=0)  # processes; 0: every core of this machine
    backend: Literal["local", "ray"] = "local"
    ray_address: str | None = None  # null: $RAY_ADDRESS, else a local Ray; "auto": join one
    # a cluster's copy of the shards (s3://bucket/shards, or a folder every node mounts): the
    # stage uploads the finished set there and the training stages read it from there
    publish: str | None = None

    def validate(self) -> None:
        if self.publish is not None and "://" not in self.publish \
                and not Path(self.publish).expanduser().is_absolute():
            raise ConfigError(f"publish = {self.publish!r}: give a URI (s3://bucket/shards) or "
                              "an absolute path every node mounts, not a relative path")
        if self.kernel_size % 2 != 1:
            raise ConfigError(f"kernel_size = {self.kernel_size}: must be odd")
        if self.scale_min > self.scale_max:
            raise ConfigError(f"scale_min = {self.scale_min} > scale_max = {self.scale_max}")
        if self.scale_min < self.size:
            raise ConfigError(f"scale_min = {self.scale_min}: must be >= size = {self.size} "
                              "(the crop must fit in the rescaled image)")
        lowest_even = self.scale_min + self.scale_min % 2
        if lowest_even > self.scale_max:
            raise ConfigError(f"scale_min = {self.scale_min}, scale_max = {self.scale_max}: no "
                              "even short side in the range (the rescale draws even sizes); "
                              f"set scale_max >= {lowest_even}")
        if self.sigma_min > self.sigma_max:
            raise ConfigError(f"sigma_min = {self.sigma_min} > sigma_max = {self.sigma_max}")
        if self.gamma_min > self.gamma_max:
            raise ConfigError(f"gamma_min = {self.gamma_min} > gamma_max = {self.gamma_max}")
        for split in ("val", "test"):
            named = getattr(self, f"{split}_photos")
            if named and len(named) < 2:
                raise ConfigError(f"{split}_photos = {list(named)!r}: name at least 2 photos "
                                  "(a mixture pairs two of them), or none")
            if len(set(named)) != len(named):
                raise ConfigError(f"{split}_photos = {list(named)!r}: a photo is named twice")
        both = sorted(set(self.val_photos) & set(self.test_photos))
        if both:
            raise ConfigError(f"{both[0]!r} is in both val_photos and test_photos")


#: Sets ``ytmt fetch-data`` / the ``fetch_data`` stage can fetch (``sir2``: the three SIR² ones).
FETCHABLE_SETS = ("real20", "objects", "postcard", "wild", "nature", "real_train", "sir2")
#: The public archives they come from (keys of ``datasets.lock.json`` and ``archives``).
ARCHIVE_KEYS = ("real20_420", "sir2", "nature", "zhang_real")

FetchableSet = Literal["real20", "objects", "postcard", "wild", "nature", "real_train", "sir2"]


@dataclass(frozen=True)
class DownloadConfig:
    """Public benchmark archives fetched into ``data.root`` (``ytmt.data.datasets``).

    ``sets``: what to fetch; empty (the default) fetches nothing and needs no network.
    ``wild_list``: 454 keeps SIR²'s 55 Wild scenes of the 2017 release's ``withgt/`` folder
    (the paper's 454-image protocol), 500 every Wild scene with a ground truth (101).
    ``real20_copy``: ``real20_420`` (the YTMT authors' release) or ``full`` (the full-size
    photos of Zhang et al.'s archive). ``archives``: archive key → a file downloaded by hand
    (``--from``); ``urls``: archive key → another URL (a mirror). ``lock``: sizes and SHA-256
    recorded at first use, checked at every later one.
    """

    sets: tuple[FetchableSet, ...] = ()
    wild_list: Literal[454, 500] = 454
    real20_copy: Literal["real20_420", "full"] = "real20_420"
    archives: dict[str, str] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    lock: str = "datasets.lock.json"
    cache_dir: str = "~/.cache/ytmt"  # downloads land (and resume) here

    def validate(self) -> None:
        for key in ("archives", "urls"):
            unknown = sorted(set(getattr(self, key)) - set(ARCHIVE_KEYS))
            if unknown:
                raise ConfigError(f"{key}.{unknown[0]}: unknown archive; choose from "
                                  f"{', '.join(ARCHIVE_KEYS)}")
        twice = sorted({s for s in self.sets if self.sets.count(s) > 1})
        if twice:
            raise ConfigError(f"sets = {list(self.sets)!r}: {twice[0]} is listed twice")


@dataclass(frozen=True)
class DataConfig:
    """External real data under ``root`` (tracked by data.dvc), in the common layout.

    ``real_val``: the real pairs whose id is ≡ 0 mod ``real_val`` (their position in name
    order for non-numeric names; :func:`ytmt.data.pairing.real_val_pair`) are held out as a
    real validation split, never trained on; 0 holds none out."""

    root: str = "data"
    real_pairs: str = "real_train"
    real_val: int = bounded(9, ge=0)
    benchmarks: dict[str, str] = field(default_factory=dict)
    download: DownloadConfig = field(default_factory=DownloadConfig)
