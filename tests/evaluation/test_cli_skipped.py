"""Issue 26 §3: `ytmt separate` names what an input folder holds that it does not read."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ytmt.cli import main


def test_separate_lists_the_files_and_folders_it_skips(tmp_path, tiny_checkpoint, capsys):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(folder / "a.png")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(folder / "anim.gif")
    (folder / "notes.txt").write_text("not a photo")
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(folder / "sub" / "b.png")
    args = ["--model", str(tiny_checkpoint), "--out", str(tmp_path / "out")]
    assert main(["separate", str(folder), *args]) == 0
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("skipped"))
    assert line.startswith("skipped 3 item(s) that are not images (.bmp .jpeg .jpg .png .tif "
                           ".tiff .webp) or are sub-folders (--recursive reads them): ")
    assert line.endswith(f"{folder / 'anim.gif'}, {folder / 'notes.txt'}, {folder / 'sub'}/")
    assert "wrote 1 pair(s)" in err
    assert main(["separate", str(folder), "--recursive", *args]) == 0
    err = capsys.readouterr().err
    assert f"skipped 2 item(s) that are not images (.bmp .jpeg .jpg .png .tif .tiff .webp): " \
        f"{folder / 'anim.gif'}, {folder / 'notes.txt'}\n" in err
    assert "wrote 2 pair(s)" in err
    assert main(["separate", str(folder / "a.png"), *args]) == 0
    assert "skipped" not in capsys.readouterr().err
