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
