"""`ytmt separate` and `ytmt variants`; checkpoint safety."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

import ytmt
from ytmt.checkpoint import UnsafeCheckpoint, load_checkpoint, model_from_checkpoint
from ytmt.cli import main
from ytmt.inference import DEFAULT_PRECISION, load_image, separate, tile_count
from ytmt.photos import plan_photos
from ytmt.serving import load_separator


def _write(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def test_variants_lists_every_variant(capsys):
    assert main(["variants"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == list(ytmt.VARIANTS)


def test_separate_files_and_folders(tmp_path, tiny_checkpoint, photo, capsys):
    u8 = (photo * 255).astype(np.uint8)
    _write(tmp_path / "in" / "a.jpg", u8)
    _write(tmp_path / "in" / "b.png", u8[:50, :70])
    (tmp_path / "in" / "readme.txt").write_text("skipped: not an image suffix")
    _write(tmp_path / "c.png", np.dstack([u8[..., 0]] * 3)[:40])
    out = tmp_path / "out"
    rc = main(["separate", str(tmp_path / "in"), str(tmp_path / "c.png"),
               "--model", str(tiny_checkpoint), "--out", str(out), "--tile", "32",
               "--overlap", "8"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "a_R.png", "a_T.png", "b_R.png", "b_T.png", "c_R.png", "c_T.png"]
    assert load_image(out / "b_T.png").shape == (50, 70, 3)
    # What was written is the model's tiled output (default precision), quantised to 8 bits.
    model = model_from_checkpoint(tiny_checkpoint)
    t_hat, _ = separate(model, load_image(tmp_path / "in" / "b.png"), tile=32, overlap=8,
                        precision=DEFAULT_PRECISION)
    assert np.abs(load_image(out / "b_T.png") - t_hat).max() <= 0.5 / 255 + 1e-6
    assert "wrote 3 pair(s)" in capsys.readouterr().err


def test_separate_reports_non_images_and_usage_errors(tmp_path, tiny_checkpoint, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    good = _write(tmp_path / "good.png", np.zeros((20, 20, 3), np.uint8))
    args = ["--model", str(tiny_checkpoint), "--out", str(tmp_path / "out")]
    assert main(["separate", str(bad), str(good), *args]) == 1
    err = capsys.readouterr().err
    assert "bad.jpg: not an image" in err and "1 input(s) failed" in err
    assert (tmp_path / "out" / "good_T.png").is_file()
    assert main(["separate", str(tmp_path / "nope.png"), *args]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["separate", str(good), *args[:-2], "--out", str(tmp_path), "--tile", "40"]) == 2
    assert "multiple of 16" in capsys.readouterr().err
    assert main(["separate", str(good), "--model", str(tmp_path / "nope.pt"),
                 "--out", str(tmp_path)]) == 2
    assert "neither a checkpoint file nor an MLflow model URI" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="folder holds no images"):
        plan_photos([tmp_path / "empty"])


def test_same_stems_get_distinct_names_and_recursive_mirrors_folders(tmp_path, capsys,
                                                                      tiny_checkpoint):
    """RAW+JPEG-style exports (IMG_1.jpg and IMG_1.png), the same name in two folders, and
    --recursive: every photo is separated, none overwrites another."""
    shots = tmp_path / "shots"
    rng = np.random.default_rng(0)
    for rel in ("IMG_1.jpg", "IMG_1.png", "IMG_2.png", "day2/IMG_1.png", "day2/deep/a.png"):
        _write(shots / rel, rng.integers(0, 255, (20, 24, 3), dtype=np.uint8))
    _write(tmp_path / "other" / "IMG_2.png", np.zeros((20, 24, 3), np.uint8))
    names = {p.path.relative_to(tmp_path).as_posix(): str(p.name)
             for p in plan_photos([shots, tmp_path / "other"], recursive=False)}
    assert names == {"shots/IMG_1.jpg": "IMG_1_jpg", "shots/IMG_1.png": "IMG_1_png",
                     "other/IMG_2.png": "IMG_2_png", "shots/IMG_2.png": "IMG_2_png-2"}  # sorted
    out = tmp_path / "out"
    args = ["--model", str(tiny_checkpoint), "--out", str(out), "--tile", "0"]
    assert main(["separate", str(shots), "--recursive", *args]) == 0
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))
    assert written == sorted(f"{n}_{layer}.png" for n in (
        "IMG_1_jpg", "IMG_1_png", "IMG_2", "day2/IMG_1", "day2/deep/a") for layer in "TR")
    assert "wrote 5 pair(s)" in capsys.readouterr().err


class Payload:
    """An object whose unpickling would run code."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_pickle_with_code_is_refused(tmp_path, tiny_checkpoint, capsys):
    evil = tmp_path / "evil.pt"
    ckpt = load_checkpoint(tiny_checkpoint)
    ckpt["extra"] = {"payload": Payload()}
    torch.save(ckpt, evil)
    with pytest.raises(UnsafeCheckpoint, match="refused"):
        load_checkpoint(evil)
    with pytest.raises(UnsafeCheckpoint):
        load_separator(evil)
    good = _write(tmp_path / "good.png", np.zeros((20, 20, 3), np.uint8))
    assert main(["separate", str(good), "--model", str(evil), "--out", str(tmp_path)]) == 2
    assert "refused" in capsys.readouterr().err


class InputSpy(torch.nn.Module):
    """A per-pixel separator that records the (h, w) of every input the model is given."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[int, int]] = []

    def forward(self, x):
        self.sizes.append(tuple(x.shape[-2:]))
        return x * 0.7, x * 0.3


@pytest.mark.slow
def test_tiling_bounds_what_the_model_sees_on_a_12_megapixel_photo(tmp_path, monkeypatch):
    """`ytmt separate --tile 512` on a 4000x3000 photo hands the model one tile at a time,
    never more than 512 pixels a side, so the activations' memory is that of a tile
    whatever the photo (bench/bench_inference.py measures the hypercolumn model's peak
    memory at a tile). Control: untiled, the model gets the whole photo, padded to a
    multiple of 16."""
    h, w = 3000, 4000
    ramp = np.linspace(0, 255, w, dtype=np.float32)
    photo = _write(tmp_path / "big.png", np.dstack(
        [np.broadcast_to(ramp, (h, w)).astype(np.uint8)] * 3))
    spy = InputSpy()
    monkeypatch.setattr("ytmt.serving.load_separator", lambda ref, tracking_uri=None: spy)
    out = tmp_path / "out"
    assert main(["separate", str(photo), "--model", "spy", "--out", str(out),
                 "--tile", "512", "--overlap", "32"]) == 0
    assert len(spy.sizes) == tile_count(h, w, 512, 32) == 7 * 9
    assert max(max(size) for size in spy.sizes) == 512
    t_hat = load_image(out / "big_T.png")
    assert t_hat.shape == (h, w, 3)
    spy.sizes.clear()
    separate(spy, t_hat, tile=None, device="cpu")
    assert spy.sizes == [(3008, 4000)]


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory, photo):
    """A width-8 ytmt-ucs trained for 40 steps on crops of ``photo`` (T) behind a blurred
    reflection (R), in fp32; with the (T, R, mixture) it was trained on."""
    import torch.nn.functional as F
    from skimage import data

    from ytmt.checkpoint import model_spec, save_checkpoint
    from ytmt.params import resolve_params
    from ytmt.train.components import build_components
    from ytmt.train.step import build_step, train_step

    from ..train.conftest import tiny_params

    params = resolve_params(tiny_params(model__width=8, train__lr=2e-3))
    parts = build_components(params, "ytmt-ucs")
    step = build_step(parts, parts.model, params.train, torch.device("cpu"))
    coffee = torch.from_numpy(data.coffee()[::3, ::3][:96, :128].transpose(2, 0, 1) / 255)
    blurred = F.avg_pool2d(coffee[None].float(), 5, 1, 2, count_include_pad=False)[0]
    t, r = photo * 0.7, blurred.permute(1, 2, 0).numpy() * 0.3
    images = [torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]
              for a in (t + r, t, r)]
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        y, x = (int(torch.randint(0, n - 48, (1,), generator=gen)) for n in (96, 128))
        crop = tuple(a[..., y:y + 48, x:x + 48] for a in images)
        train_step(step, crop)
    path = save_checkpoint(tmp_path_factory.mktemp("trained") / "model.pt", parts.model,
                           model_spec(parts.model, 8))
    return path, t, t + r


def test_separate_in_bf16_matches_fp32_within_half_a_db(tmp_path, trained_checkpoint):
    """Issue 13, acceptance 3: on a trained model, `ytmt separate --precision bf16` scores
    within 0.5 dB PSNR of fp32 against the truth, and the two outputs nearly coincide."""
    from ytmt.metrics import psnr_ssim

    path, t, mixture = trained_checkpoint
    _write(tmp_path / "m.png", (mixture * 255).round().astype(np.uint8))
    outputs = {}
    for precision in ("fp32", "bf16"):
        assert main(["separate", str(tmp_path / "m.png"), "--model", str(path), "--out",
                     str(tmp_path / precision), "--precision", precision, "--tile", "0"]) == 0
        outputs[precision] = load_image(tmp_path / precision / "m_T.png")
    psnr = {p: psnr_ssim(o, t)[0] for p, o in outputs.items()}
    identity = psnr_ssim(load_image(tmp_path / "m.png"), t)[0]
    assert psnr["fp32"] > identity + 1.0, (psnr, identity)  # the model did learn
    assert abs(psnr["bf16"] - psnr["fp32"]) < 0.5, psnr
    assert psnr_ssim(outputs["bf16"], outputs["fp32"])[0] > 35.0
    assert not np.array_equal(outputs["bf16"], outputs["fp32"])  # bf16 did run
