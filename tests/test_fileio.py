"""Atomic writes keep the permissions a plain open() would give (umask), not mkstemp's 0600:
models, info files and `ytmt separate` outputs stay readable by a team (issue 11 §6)."""

import subprocess
import sys
from pathlib import Path

import pytest

CODE = """
import os, stat, sys
from pathlib import Path
os.umask(int(sys.argv[2], 8))
from ytmt.checkpoint import atomic_torch_save
from ytmt.fileio import atomic_write_text, partial_dir
from ytmt.inference import save_png
import numpy as np
root = Path(sys.argv[1])
paths = [atomic_write_text(root / "info.json", "{}"), atomic_torch_save({"a": 1}, root / "m.pt"),
         save_png(np.zeros((4, 4, 3), np.float32), root / "x_T.png"), partial_dir(root / "eval")]
print(" ".join(oct(stat.S_IMODE(p.stat().st_mode)) for p in paths))
"""


@pytest.mark.parametrize("umask, files, folder", [("022", "0o644", "0o755"),
                                                  ("077", "0o600", "0o700"),
                                                  ("002", "0o664", "0o775")])
def test_written_files_follow_the_umask(tmp_path, umask, files, folder):
    out = subprocess.run([sys.executable, "-c", CODE, str(tmp_path), umask], check=True,
                         capture_output=True, text=True, timeout=120).stdout.split()
    assert out == [files, files, files, folder]


def test_an_interrupted_write_leaves_the_old_file(tmp_path):
    from ytmt.fileio import atomic_write, atomic_write_text

    target = atomic_write_text(tmp_path / "a.txt", "old")

    def broken(f):
        f.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, broken)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]
    assert Path(target).is_file()
