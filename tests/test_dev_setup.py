"""dev.py installs the environment with uv, which reads none of pip's settings: the index
settings pip would use (its configuration files, then its PIP_* variables) must reach uv."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _dev():
    spec = importlib.util.spec_from_file_location("ytmt_dev_script", ROOT / "dev.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not (ROOT / ".venv" / "bin" / "python").exists(),
                    reason="dev.py reads pip's settings with the .venv's pip")
def test_pips_index_settings_reach_uv_with_the_variables_over_the_files(tmp_path,
                                                                          monkeypatch):
    conf = tmp_path / "pip.conf"  # loaded after the machine's files (PIP_CONFIG_FILE)
    conf.write_text("[global]\nindex-url = https://mirror.test/simple\n"
                    "extra-index-url = https://a.test/simple https://b.test/simple\n"
                    "find-links = /from/file\nconstraint = /c/constraints.txt\n"
                    "cert = /c/bundle.pem\ntimeout = 60\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.setenv("PIP_FIND_LINKS", "/from/env /also/env")  # overrides the files'
    for name in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT", "PIP_CERT",
                 "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    options, env = _dev().uv_options()
    assert options == ["--index-strategy", "unsafe-best-match",
                       "--index-url", "https://mirror.test/simple",
                       "--extra-index-url", "https://a.test/simple",
                       "--extra-index-url", "https://b.test/simple",
                       "--find-links", "/from/env", "--find-links", "/also/env",
                       "--constraint", "/c/constraints.txt"]
    assert env == {"SSL_CERT_FILE": "/c/bundle.pem"}
    monkeypatch.setenv("SSL_CERT_FILE", "/mine.pem")  # uv's own setting stays
    assert _dev().uv_options()[1] == {}


def test_pip_installs_the_environment_when_uv_fails(tmp_path, monkeypatch):
    """The install commands dev.py runs (recorded, not run), with uv failing."""
    import subprocess

    dev = _dev()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").touch()  # an existing environment whose install is stale
    monkeypatch.setattr(dev, "BIN", bin_dir)
    monkeypatch.setattr(dev, "STAMP", tmp_path / "stamp")
    monkeypatch.setattr(dev, "uv_options", lambda: (["--find-links", "/w"], {}))
    ran = []

    def sh(*cmd, env=None):
        ran.append([Path(str(c)).name if i == 0 else str(c) for i, c in enumerate(cmd)])
        if ran[-1][0] == "uv":
            raise subprocess.CalledProcessError(2, ran[-1])

    monkeypatch.setattr(dev, "sh", sh)
    dev.ensure_env()
    assert [c[:4] for c in ran] == [
        ["python", "-m", "pip", "install"], ["uv", "pip", "install", "--quiet"],
        ["python", "-m", "pip", "install"], ["python", "-m", "pip", "install"]]
    assert ran[0][-1] == dev.UV and ran[1][-3:] == [dev.TORCH, "-e", ".[test]"]
    assert "/w" in ran[1] and ran[2][-1] == dev.TORCH and ran[3][-2:] == ["-e", ".[test]"]
    assert (tmp_path / "stamp").read_text()  # installed: not again next time
    ran.clear()
    dev.ensure_env()
    assert ran == []


def test_commands_are_shown_without_an_index_password(capsys):
    _dev().sh("true", "--index-url", "https://me:s3cret@mirror.test/simple", "--find-links",
              "/w")
    assert capsys.readouterr().out == \
        "+ true --index-url https://***@mirror.test/simple --find-links /w\n"
