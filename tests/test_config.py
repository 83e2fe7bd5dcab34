import dataclasses

import pytest
import yaml

from ytmt.config import ConfigError, LossConfig, ModelConfig, flatten, parse_section, to_dict
from ytmt.params import load_params, parse_params


def loaded_values(path) -> tuple[dict, dict]:
    """(every value the YAML file at ``path`` sets, the loaded params), both flattened to
    dotted keys."""
    return flatten(yaml.safe_load(open(path))), flatten(to_dict(load_params(path)))


def test_repository_params_yaml_is_valid_and_every_value_it_sets_is_used():
    """The shipped file parses, and each value it sets is the value the stages get: none
    dropped or replaced by a default (whatever the recipe's numbers are)."""
    written, loaded = loaded_values("params.yaml")
    assert written and set(written) <= set(loaded)
    for key, value in written.items():
        assert loaded[key] == value, key


def test_values_that_differ_from_the_defaults_reach_the_params(tmp_path):
    """Control for the test above: values the defaults do not hold come through as well."""
    data = yaml.safe_load(open("params.yaml"))
    data["loss"]["perceptual"], data["train"]["lr"] = 0.37, 3.3e-4
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    written, loaded = loaded_values(tmp_path / "params.yaml")
    assert (loaded["loss.perceptual"], loaded["train.lr"]) == (0.37, 3.3e-4)
    assert all(loaded[key] == value for key, value in written.items())


@pytest.mark.parametrize("section,key,value,message", [
    ("model", "width", -1, "model.width = -1: must be >= 1"),
    ("model", "vgg_weights", "imgnet", "model.vgg_weights = 'imgnet': expected one of 'imagenet'"),
    ("loss", "perceptual", "0.1", "loss.perceptual = '0.1': expected a number"),
    ("loss", "exclusion", [1.0], "loss.exclusion = [1.0]: expected a number"),
    ("model", "hypercolumn", "yes", "model.hypercolumn = 'yes': expected true or false"),
    ("model", "widht", 3, "model.widht: unknown key; allowed keys"),
    ("loss", "perceptual_layer_weights", [1, 2], "expected 5 weights"),
    ("loss", "rec_t_mse", -0.3, "loss.rec_t_mse = -0.3: must be >= 0.0"),
])
def test_malformed_values_fail_with_key_value_and_what_is_allowed(section, key, value, message):
    data = yaml.safe_load(open("params.yaml"))
    data[section] = {**data[section], key: value}
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_params(data)


def test_unknown_section_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="modle: unknown key"):
        parse_params({"modle": {}})
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_params(bad)


def test_parse_and_flatten_round_trip():
    cfg = parse_section(ModelConfig, {"width": 16, "vgg_path": None}, "model")
    assert cfg.width == 16 and cfg.vgg_path is None
    loss = parse_section(LossConfig, {"perceptual": 1}, "loss")
    assert isinstance(loss.perceptual, float)
    flat = flatten({"model": to_dict(cfg)})
    assert flat["model.width"] == 16


def test_a_stage_refuses_malformed_params_in_one_line_before_any_work(tmp_path):
    import subprocess
    import sys

    data = yaml.safe_load(open("params.yaml"))
    data["fetch"]["source"] = "vocc2012"
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(data))
    proc = subprocess.run([sys.executable, "pipelines/fetch.py", "--params", str(bad), "--out",
                           str(tmp_path / "images"), "--metrics", str(tmp_path / "m.json")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: invalid params: fetch.source = 'vocc2012'")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "images").exists()


@dataclasses.dataclass(frozen=True)
class _Inner:
    a: int = 1


@dataclasses.dataclass(frozen=True)
class _Outer:
    inner: _Inner | None = None
    values: tuple[int, ...] | None = None
    choice: int | str | None = None


def _error(data) -> str:
    with pytest.raises(ConfigError) as err:
        parse_section(_Outer, data, "x")
    return str(err.value)


def test_a_union_value_that_fails_gives_each_branch_s_reason():
    # the branch's own error (a nested key, an element) is kept, not dropped
    assert _error({"inner": {"b": 2}}) == (
        "x.inner = {'b': 2}: expected a mapping with keys a or null "
        "(as a mapping with keys a: x.inner.b: unknown key; allowed keys of x.inner: a)")
    assert _error({"values": [1, "two"]}) == (
        "x.values = [1, 'two']: expected a list of int or null "
        "(as a list of int: x.values[1] = 'two': expected an integer)")
    # branches that fail on the type alone: their type names say it all
    assert _error({"choice": [1]}) == "x.choice = [1]: expected int or str or null"
    assert _error({"values": "1"}) == "x.values = '1': expected a list of int or null"
    assert parse_section(_Outer, {"inner": None, "values": [3], "choice": "a"}, "x") == \
        _Outer(None, (3,), "a")
