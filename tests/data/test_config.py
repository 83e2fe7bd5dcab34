"""params.yaml sections fetch / synthesize / data: defaults load, bad values name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from ytmt.config import ConfigError, parse_section
from ytmt.data.config import DataConfig, FetchConfig, SynthesizeConfig
from ytmt.params import load_params

REPO = Path(__file__).resolve().parents[2]


def test_repo_params_load():
    p = load_params(REPO / "params.yaml")
    assert p.fetch.source == "samples" and p.synthesize.size < p.synthesize.scale_max
    assert p.synthesize.kernel_size == 11 and p.synthesize.gamma_min == 1.3
    assert isinstance(p.data, DataConfig)


@pytest.mark.parametrize("cls, section, values, match", [
    (FetchConfig, "fetch", {"source": "folder"}, "needs folder"),
    (FetchConfig, "fetch", {"source": "flickr"}, "one of 'samples'"),
    (FetchConfig, "fetch", {"samples": ["astronaut", "brain"]}, "not offline"),
    (FetchConfig, "fetch", {"samples": ["astronaut"]}, "at least 2"),
    (FetchConfig, "fetch", {"samples": ["astronaut", "page"]}, "not offline"),
    (FetchConfig, "fetch", {"samples": ["camera", "coffee", "camera"]}, "more than once"),
    (FetchConfig, "fetch", {"limit": 1}, ">= 2"),
    (FetchConfig, "fetch", {"voc_md5": "abc"}, "32 hex"),
    (SynthesizeConfig, "synthesize", {"kernel_size": 10}, "odd"),
    (SynthesizeConfig, "synthesize", {"size": 128}, "scale_min = 96: must be >= size"),
    (SynthesizeConfig, "synthesize", {"sigma_min": 6.0}, "sigma_min = 6.0 > sigma_max"),
    (SynthesizeConfig, "synthesize", {"backend": "spark"}, "one of 'local', 'ray'"),
    (SynthesizeConfig, "synthesize", {"resample": "lanczos"}, "one of 'opencv', 'pil'"),
    (SynthesizeConfig, "synthesize", {"flip_p": 1.5}, "<= 1.0"),
    (SynthesizeConfig, "synthesize", {"chunks": 3}, "unknown key"),
    (SynthesizeConfig, "synthesize", {"test_photos": ["coffee"]}, "at least 2 photos"),
    (SynthesizeConfig, "synthesize", {"val_photos": ["a", "b", "a"]}, "named twice"),
    (SynthesizeConfig, "synthesize", {"val_photos": ["a", "b"], "test_photos": ["b", "c"]},
     "'b' is in both val_photos and test_photos"),
])
def test_bad_values_are_rejected(cls, section, values, match):
    with pytest.raises(ConfigError, match=match):
        parse_section(cls, values, section)


@pytest.mark.parametrize("size, low, high", [(97, 97, 97), (96, 97, 97), (33, 33, 33)])
def test_a_scale_range_without_an_even_size_is_refused(size, low, high):
    # the rescale draws an even short side in [scale_min, scale_max]: 97..97 has none (the
    # draw fell to 96, below the stored size)
    with pytest.raises(ConfigError, match=f"synthesize: scale_min = {low}, scale_max = {high}: "
                                          "no even short side in the range"):
        parse_section(SynthesizeConfig, {"size": size, "scale_min": low, "scale_max": high},
                      "synthesize")


def test_odd_bounds_with_an_even_size_between_them_are_fine():
    cfg = parse_section(SynthesizeConfig, {"size": 97, "scale_min": 97, "scale_max": 98},
                        "synthesize")
    assert (cfg.scale_min, cfg.scale_max) == (97, 98)
    parse_section(SynthesizeConfig, {"size": 96, "scale_min": 96, "scale_max": 96}, "synthesize")


def test_publish_must_be_a_uri_or_an_absolute_path():
    from ytmt.config import ConfigError
    from ytmt.params import parse_params

    for ok in ("s3://bucket/shards?endpoint_override=minio:9000", "/mnt/shared/shards"):
        assert parse_params({"synthesize": {"publish": ok}}).synthesize.publish == ok
    with pytest.raises(ConfigError, match="publish = 'outputs/shards'.*absolute path"):
        parse_params({"synthesize": {"publish": "outputs/shards"}})
