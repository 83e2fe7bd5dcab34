"""Benchmark fetching, offline: archives in each upstream layout, made here, served from
127.0.0.1 (with HTTP Range) or given as files, laid out as the evaluate stage reads them."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from ytmt.cli import main as cli_main
from ytmt.config import ConfigError, parse_section
from ytmt.data.archives import ArchiveDamaged, ArchiveError, ZipIndex, read_lock
from ytmt.data.benchmarks import read_benchmark
from ytmt.data.config import ARCHIVE_KEYS, DataConfig, DownloadConfig
from ytmt.data.datasets import SOURCE_FILE, fetch_sets
from ytmt.data.download import DownloadError
from ytmt.data.layout import find_pairs
from ytmt.data.manifest import scan_set
from ytmt.data.upstream import ARCHIVES, REAL20_IDS

from .conftest import Server, smooth_photo

REPO = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(7)


def image(fmt: str = "JPEG", h: int = 16, w: int = 24) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(smooth_photo(RNG, h, w)).save(buf, fmt)
    return buf.getvalue()


def zip_of(members: dict[str, bytes], links: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name in links:  # a symlink member (unix mode in external_attr)
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buf.getvalue()


JUNK = {"../evil.jpg": b"escape", "__MACOSX/real20_420/blended/._3.jpg": b"apple double"}


def real20_420_zip() -> bytes:
    """The YTMT authors' real20_420.zip: real20_420/{blended,transmission_layer}/<n>.jpg."""
    members = {}
    for n in REAL20_IDS:
        members[f"real20_420/blended/{n}.jpg"] = image()
        members[f"real20_420/transmission_layer/{n}.jpg"] = image()
    return zip_of({**members, **JUNK}, links=("real20_420/blended/link.jpg",))


def zhang_zip(train_ids=(1, 2, 5)) -> bytes:
    """Zhang et al.'s Drive folder as a zip: real/ (blended + transmission_layer, test and
    training photos) and synthetic/ (no blended/)."""
    members = {"data/synthetic/transmission_layer/a.jpg": image(),
               "data/synthetic/reflection_layer/a.jpg": image()}
    for n in (*REAL20_IDS, *map(str, train_ids)):
        members[f"data/real/blended/{n}.jpg"] = image(h=20)
        members[f"data/real/transmission_layer/{n}.jpg"] = image(h=20)
    return zip_of(members)


def sir2_zip_dropbox() -> bytes:
    """The SIR2.zip layout WindowSeat's script reads: nested zips; Postcard a-m-b.png /
    a-g-b.png, SolidObject and Wildscene <scene>/m.jpg, g.jpg (and r.jpg, left out)."""
    postcard = zip_of({f"Postcard Dataset/Focus/ab/{k}/ab-5-{x}-{k}.png": image("PNG")
                       for k in (11, 12) for x in "mgr"})
    solid = zip_of({f"SolidObjectDataset/{s}/Focus/13/{x}.jpg": image()
                    for s in (8, 9) for x in "mgr"})
    wild = zip_of({**{f"{s}/{x}.jpg": image() for s in ("3", "7s", "12") for x in "mgr"},
                   "40/m.jpg": image()})  # a scene without a ground truth
    return zip_of({"Postcard Dataset.zip": postcard, "SolidObjectDataset.zip": solid,
                   "Wildscene.zip": wild})


def sir2_zip_2017() -> bytes:
    """The 2017 release's layout: WildSceneDataset/withgt/<scene>/ holds the scenes with a
    ground truth the 454-image protocol uses."""
    m = {f"SIR2/SolidObjectDataset/1/Focus/3/{x}.jpg": image() for x in "mg"}
    m.update({f"SIR2/Postcard Dataset/Focus/ab/1/ab-1-{x}-1.png": image("PNG") for x in "mg"})
    m.update({f"SIR2/WildSceneDataset/withgt/{s}/{x}.jpg": image() for s in "12" for x in "mgr"})
    m.update({f"SIR2/WildSceneDataset/extra/{s}/{x}.jpg": image() for s in "9" for x in "mg"})
    return zip_of(m)


def nature_zip() -> bytes:
    """IBCLN's Nature zip: testA1/ = T, testB/ = I, paired in sorted order."""
    return zip_of({**{f"nature/testA1/{i}_t.jpg": image() for i in (1, 2, 3)},
                   **{f"nature/testB/{i}_i.jpg": image() for i in (1, 2, 3)}})


def cfg_for(tmp_path: Path, sets, **kw) -> DownloadConfig:
    return DownloadConfig(sets=tuple(sets), lock=str(tmp_path / "datasets.lock.json"),
                          cache_dir=str(tmp_path / "cache"), **kw)


def served(srv: Server, **keys: str) -> dict[str, str]:
    return {key: srv.url_of(path) for key, path in keys.items()}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def empty(folder: Path) -> bool:
    """No file or folder was left under ``folder`` (or it was never made)."""
    return not folder.exists() or not any(folder.rglob("*"))


# ------------------------------------------------------------------ layouts and re-runs


def test_fetch_lays_out_each_upstream_layout_and_reruns_download_nothing(tmp_path):
    archives = {"/real20_420.zip": real20_420_zip(), "/SIR2.zip": sir2_zip_dropbox(),
                "/nature.zip": nature_zip(), "/zhang.zip": zhang_zip()}
    data = tmp_path / "data"
    with Server(archives) as srv:
        urls = served(srv, real20_420="/real20_420.zip", sir2="/SIR2.zip",
                      nature="/nature.zip", zhang_real="/zhang.zip")
        cfg = cfg_for(tmp_path, ["real20", "sir2", "nature", "real_train"], urls=urls,
                      wild_list=500)
        record = fetch_sets(cfg, data)
        first = len(srv.requests)
        stamps = {p: p.stat().st_mtime_ns for p in data.rglob("*")}
        again = fetch_sets(cfg, data)
        assert {p: p.stat().st_mtime_ns for p in data.rglob("*")} == stamps  # nothing rewritten
        assert len(srv.requests) == first == 4  # one GET per archive, none on the re-run
    counts = {"real20": 20, "objects": 2, "postcard": 2, "wild": 3, "nature": 3,
              "real_train": 3}
    assert {k: e["pairs"] for k, e in record["sets"].items()} == counts
    assert {e["state"] for e in record["sets"].values()} == {"fetched"}
    assert {e["state"] for e in again["sets"].values()} == {"present"}
    folders = {"real20": "real20", "objects": "sir2/objects", "postcard": "sir2/postcard",
               "wild": "sir2/wild", "nature": "nature", "real_train": "real_train"}
    for name, rel in folders.items():  # read as the evaluate stage reads them
        pairs = list(read_benchmark(data / rel))
        assert len(pairs) == counts[name] and pairs[0].mixture.shape[2] == 3
        assert not (data / rel / "reflection_layer").exists()  # R target stays I - T
    assert sorted(p.name for p in (data / "sir2/postcard/blended").iterdir()) == \
        ["Focus_ab_11_ab-5-11.png", "Focus_ab_12_ab-5-12.png"]
    assert sorted(p.name for p in (data / "sir2/objects/blended").iterdir()) == \
        ["8_Focus_13.jpg", "9_Focus_13.jpg"]
    assert sorted(p.name for p in (data / "sir2/wild/blended").iterdir()) == \
        ["12.jpg", "3.jpg", "7s.jpg"]
    assert sorted(p.name for p in (data / "nature/blended").iterdir()) == \
        ["1_i.jpg", "2_i.jpg", "3_i.jpg"]
    assert sorted(p.name for p in (data / "real_train/blended").iterdir()) == \
        ["1.jpg", "2.jpg", "5.jpg"]
    # Bytes are copied as they are: T of nature's 2nd pair is testA1's 2nd file.
    with zipfile.ZipFile(io.BytesIO(archives["/nature.zip"])) as zf:
        assert (data / "nature/transmission_layer/2_i.jpg").read_bytes() == \
            zf.read("nature/testA1/2_t.jpg")
    assert not list(tmp_path.rglob("evil*")) and not list(tmp_path.rglob("link*"))
    assert not list(data.rglob("._*")) and not list(data.rglob(".*fetch-*"))
    lock = read_lock(cfg.lock)
    assert set(lock) == set(ARCHIVE_KEYS)
    assert lock["sir2"].sha256 == sha(archives["/SIR2.zip"])
    assert lock["sir2"].size == len(archives["/SIR2.zip"])
    source = json.loads((data / "sir2/wild" / SOURCE_FILE).read_text())
    assert source == {"set": "wild", "copy": None, "wild_list": "500", "archive": "SIR2.zip",
                      "sha256": lock["sir2"].sha256, "url": urls["sir2"],
                      "fetched": source["fetched"], "pairs": 3}
    assert json.loads((data / "real20" / SOURCE_FILE).read_text())["copy"] == "real20_420"
    # find_pairs ignores SOURCE.json; the scan manifest carries it.
    assert len(find_pairs(data / "real20")) == 20
    assert scan_set(data / "sir2/wild")["source"] == source


def test_real20_full_copy_comes_from_zhangs_archive(tmp_path):
    archive = tmp_path / "zhang.zip"
    archive.write_bytes(zhang_zip())
    cfg = cfg_for(tmp_path, ["real20"], real20_copy="full",
                  archives={"zhang_real": str(archive)})
    assert fetch_sets(cfg, tmp_path / "data")["sets"]["real20"]["pairs"] == 20
    src = json.loads((tmp_path / "data/real20" / SOURCE_FILE).read_text())
    assert src["copy"] == "full" and src["archive"] == "zhang.zip"
    few = tmp_path / "few.zip"  # a Real20 archive missing test photos is refused
    few.write_bytes(zip_of({"real/blended/3.jpg": image(),
                            "real/transmission_layer/3.jpg": image()}))
    with pytest.raises(ArchiveError, match=r"Real20 test photo\(s\) 4, 9, .* missing"):
        fetch_sets(replace(cfg, archives={"zhang_real": str(few)},
                           lock=str(tmp_path / "other.lock.json")), tmp_path / "data2")
    assert not (tmp_path / "data2" / "real20").exists()


# ------------------------------------------------------------------ SIR² Wild lists


def test_wild_lists_454_and_500(tmp_path):
    old = tmp_path / "SIR2-2017.zip"
    old.write_bytes(sir2_zip_2017())
    cfg = cfg_for(tmp_path, ["sir2"], archives={"sir2": str(old)})
    record = fetch_sets(cfg, tmp_path / "data")
    assert {k: e["pairs"] for k, e in record["sets"].items()} == \
        {"objects": 1, "postcard": 1, "wild": 2}
    wild = tmp_path / "data/sir2/wild"
    assert sorted(p.name for p in (wild / "blended").iterdir()) == ["1.jpg", "2.jpg"]
    assert json.loads((wild / SOURCE_FILE).read_text())["wild_list"] == "454"
    # The 500 list takes every Wild scene with a ground truth: only wild is rebuilt.
    objects_source = (tmp_path / "data/sir2/objects" / SOURCE_FILE).read_text()
    record = fetch_sets(replace(cfg, wild_list=500), tmp_path / "data")
    assert record["sets"]["wild"] == {**record["sets"]["wild"], "state": "fetched",
                                      "pairs": 3, "wild_list": "500"}
    assert record["sets"]["objects"]["state"] == "present"
    assert (tmp_path / "data/sir2/objects" / SOURCE_FILE).read_text() == objects_source
    assert sorted(p.name for p in (wild / "blended").iterdir()) == \
        ["1.jpg", "2.jpg", "extra_9.jpg"]
    # An archive without the 2017 withgt/ folder cannot give the 454 list: a clear error.
    new = tmp_path / "SIR2.zip"
    new.write_bytes(sir2_zip_dropbox())
    cfg_new = cfg_for(tmp_path / "n", ["wild"], archives={"sir2": str(new)})
    with pytest.raises(ArchiveError, match="454-image protocol needs the 2017 release's Wild "
                                           "withgt/ folder; use wild_list 500"):
        fetch_sets(cfg_new, tmp_path / "n" / "data")
    assert not (tmp_path / "n" / "data" / "sir2" / "wild").exists()
    assert read_lock(cfg_new.lock) == {}  # nothing trusted from a failed first use


# ------------------------------------------------------------------ resume and corruption


def test_interrupted_download_resumes_with_range(tmp_path):
    payload = nature_zip()
    with Server({"/n.zip": payload}, cut=len(payload) // 3 + 1) as srv:
        cfg = cfg_for(tmp_path, ["nature"], urls={"nature": srv.url})
        assert fetch_sets(cfg, tmp_path / "data")["sets"]["nature"]["pairs"] == 3
    assert len(srv.ranges) == 3 and srv.ranges[0] == 0 and srv.ranges[1] > 0
    assert read_lock(cfg.lock)["nature"].sha256 == sha(payload)


def test_lock_mismatch_fails_and_leaves_the_good_folder(tmp_path):
    good = real20_420_zip()
    bad = good[:3000] + bytes([good[3000] ^ 0xFF]) + good[3001:]
    files = {"/real20_420.zip": good}
    data = tmp_path / "data"
    with Server(files) as srv:
        cfg = cfg_for(tmp_path, ["real20"], urls={"real20_420": srv.url})
        fetch_sets(cfg, data)
        before = {p.name: p.read_bytes() for p in (data / "real20" / "blended").iterdir()}
        files["/real20_420.zip"] = bad  # upstream changed (or a corrupt mirror)
        for p in (tmp_path / "cache").iterdir():
            p.unlink()
        # A new folder (another data root) fails before anything is extracted.
        with pytest.raises(DownloadError, match=r"sha256 [0-9a-f]+ != expected"):
            fetch_sets(cfg, tmp_path / "other")
        assert empty(tmp_path / "other")
        assert not list((tmp_path / "cache").iterdir())  # the corrupt download is deleted
    # --from with a file that is not the locked one: refused, nothing extracted.
    wrong = tmp_path / "real20_420.zip"
    wrong.write_bytes(bad)
    with pytest.raises(DownloadError, match="sha256 .* nothing was extracted"):
        fetch_sets(cfg_for(tmp_path, ["real20"], archives={"real20_420": str(wrong)}),
                   tmp_path / "third")
    assert not (tmp_path / "third" / "real20").exists()
    # The good folder of the first fetch is untouched throughout.
    assert {p.name: p.read_bytes() for p in (data / "real20" / "blended").iterdir()} == before
    assert read_lock(cfg.lock)["real20_420"].sha256 == sha(good)


def test_broken_zip_fails_with_one_line_and_leaves_nothing(tmp_path):
    payload = sir2_zip_dropbox()
    with Server({"/SIR2.zip": payload[: len(payload) // 2] + b"\0" * 100}) as srv:
        cfg = cfg_for(tmp_path, ["sir2"], urls={"sir2": srv.url}, wild_list=500)
        with pytest.raises(ArchiveDamaged) as err:
            fetch_sets(cfg, tmp_path / "data")
    assert "\n" not in str(err.value) and "nothing was extracted" in str(err.value)
    assert "the download was deleted" in str(err.value)
    assert empty(tmp_path / "data")
    assert not list((tmp_path / "cache").glob("SIR2.zip*"))
    assert read_lock(cfg.lock) == {}
    # A member with a bad CRC (inside a nested zip) fails the same way; an existing good
    # folder (fetched from a good archive) stays as it was.
    good = tmp_path / "good.zip"
    good.write_bytes(payload)
    fetch_sets(cfg_for(tmp_path, ["objects"], archives={"sir2": str(good)}), tmp_path / "d2")
    before = sorted(p.name for p in (tmp_path / "d2/sir2/objects/blended").iterdir())
    inner = zip_of({"SolidObjectDataset/8/Focus/13/m.jpg": image(),
                    "SolidObjectDataset/8/Focus/13/g.jpg": image()})
    start = inner.index(b"\xff\xd8")  # corrupt the stored JPEG bytes, not the headers
    inner = inner[:start + 50] + bytes([inner[start + 50] ^ 0xFF]) + inner[start + 51:]
    crc = tmp_path / "crc.zip"
    crc.write_bytes(zip_of({"SolidObjectDataset.zip": inner}))
    with pytest.raises(ArchiveDamaged, match="damaged member"):
        fetch_sets(cfg_for(tmp_path / "x", ["objects"], archives={"sir2": str(crc)}),
                   tmp_path / "d2")
    assert sorted(p.name for p in (tmp_path / "d2/sir2/objects/blended").iterdir()) == before
    assert not list((tmp_path / "d2").rglob(".*fetch-*"))


# ------------------------------------------------------------------ --from, Drive, refusals


def test_drive_sets_need_a_file_and_say_what_to_download(tmp_path):
    cfg = cfg_for(tmp_path, ["nature"])
    with pytest.raises(ValueError) as err:
        fetch_sets(cfg, tmp_path / "data")
    msg = str(err.value)
    assert ARCHIVES["nature"].url in msg and "testA1/ (T) and testB/ (I)" in msg
    assert "--from FILE" in msg and "data.download.archives.nature" in msg
    assert not (tmp_path / "cache").exists()  # nothing was downloaded
    archive = tmp_path / "Nature.zip"
    archive.write_bytes(nature_zip())
    cfg = replace(cfg, archives={"nature": str(archive)})
    assert fetch_sets(cfg, tmp_path / "data")["sets"]["nature"]["state"] == "fetched"
    assert read_lock(cfg.lock)["nature"].sha256 == sha(archive.read_bytes())
    assert fetch_sets(cfg, tmp_path / "data")["sets"]["nature"]["state"] == "present"
    # Once present, the archive is not needed any more (not even its file).
    archive.unlink()
    assert fetch_sets(replace(cfg, archives={}), tmp_path / "data")["sets"]["nature"][
        "state"] == "present"


def test_a_folder_made_by_hand_is_never_replaced(tmp_path):
    (tmp_path / "data/nature/blended").mkdir(parents=True)
    archive = tmp_path / "n.zip"
    archive.write_bytes(nature_zip())
    with pytest.raises(ValueError, match="not made by fetch-data"):
        fetch_sets(cfg_for(tmp_path, ["nature"], archives={"nature": str(archive)}),
                   tmp_path / "data")
    assert list((tmp_path / "data/nature").iterdir()) == [tmp_path / "data/nature/blended"]


def test_a_fetch_killed_mid_swap_is_repaired(tmp_path):
    archive = tmp_path / "n.zip"
    archive.write_bytes(nature_zip())
    cfg = cfg_for(tmp_path, ["nature"], archives={"nature": str(archive)})
    fetch_sets(cfg, tmp_path / "data")
    nature = tmp_path / "data/nature"
    nature.rename(tmp_path / "data/.nature.fetch-old")  # killed between the two renames
    (tmp_path / "data/.nature.fetch-tmp/blended").mkdir(parents=True)  # and a half build
    assert fetch_sets(cfg, tmp_path / "data")["sets"]["nature"]["state"] == "present"
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["nature"]


def test_zip_index_ignores_links_traversal_and_hidden_members(tmp_path):
    path = tmp_path / "a.zip"
    path.write_bytes(zip_of({"a/x.jpg": b"1", "a/.hidden.jpg": b"2", "../up.jpg": b"3",
                             "/abs.jpg": b"4", "__MACOSX/a/._x.jpg": b"5",
                             "b.zip": zip_of({"in/y.png": b"6"})}, links=("a/l.jpg",)))
    with ZipIndex(path, tmp_path) as index:
        assert sorted(map(str, index.files)) == ["a/x.jpg", "b/in/y.png"]
        assert index.read(next(f for f in index.files if f.name == "y.png")) == b"6"
    assert [p.name for p in tmp_path.iterdir()] == ["a.zip"]  # the spool folder is gone
    (tmp_path / "not.zip").write_bytes(b"plain text")
    with pytest.raises(ArchiveDamaged, match="not a readable zip archive"):
        ZipIndex(tmp_path / "not.zip", tmp_path)


def test_download_params_are_validated():
    def parse(download):
        return parse_section(DataConfig, {"download": download}, "data")

    assert parse({"sets": ["real20", "sir2"], "wild_list": 500}).download.sets == \
        ("real20", "sir2")
    for bad, msg in [({"sets": ["real21"]}, r"data.download.sets\[0\] = 'real21'"),
                     ({"wild_list": 455}, "data.download.wild_list = 455"),
                     ({"real20_copy": "420"}, "data.download.real20_copy"),
                     ({"archives": {"wild": "x.zip"}}, "archives.wild: unknown archive"),
                     ({"urls": {"x": "http://h"}}, "urls.x: unknown archive"),
                     ({"sets": ["nature", "nature"]}, "nature is listed twice")]:
        with pytest.raises(ConfigError, match=msg):
            parse(bad)
    assert tuple(ARCHIVES) == ARCHIVE_KEYS


# ------------------------------------------------------------------ entry points


def test_cli_fetch_data(tmp_path, capsys):
    archive = tmp_path / "nature.zip"
    archive.write_bytes(nature_zip())
    args = ["fetch-data", "nature", "--data", str(tmp_path / "data"), "--from", str(archive),
            "--lock", str(tmp_path / "lock.json"), "--cache", str(tmp_path / "cache")]
    assert cli_main(args) == 0
    assert "nature: fetched: 3 pairs" in capsys.readouterr().out
    assert cli_main(args) == 0
    assert "present, matches the lock" in capsys.readouterr().out
    assert cli_main(["fetch-data", "nature", "real20", "--data", str(tmp_path / "data"),
                     "--from", str(archive)]) == 2
    assert "come from different archives" in capsys.readouterr().err
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 not really")
    assert cli_main(["fetch-data", "nature", "--data", str(tmp_path / "d2"), "--from",
                     str(broken), "--lock", str(tmp_path / "l2.json")]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the hashing progress line
    assert err.startswith("ytmt fetch-data: error:") and "not a readable zip" in err


def run_stage(params: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    code = ("import runpy, sys; sys.argv = ['scan_data.py', '--params', 'params.yaml', "
            "'--out', 'outputs/data_manifest.json', '--real-out', 'outputs/real.json']\n"
            "try:\n    runpy.run_path({!r}, run_name='__main__')\n"
            "finally:\n    print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
            .format(str(REPO / "pipelines" / "scan_data.py")))
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)


def test_pipeline_entry_point_default_is_offline_and_light(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    proc = run_stage(params, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("NO-TORCH")
    assert "fetch" not in proc.stdout  # nothing asked, nothing fetched
    manifest = json.loads((tmp_path / "outputs/data_manifest.json").read_text())
    assert not manifest["benchmarks"]["real20"]["present"]
    assert not (tmp_path / "data").exists() and not (tmp_path / "datasets.lock.json").exists()


def test_pipeline_entry_point_fetches_what_params_name(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    payload = real20_420_zip()
    with Server({"/real20_420.zip": payload}) as srv:
        params["data"]["download"].update(sets=["real20"], urls={"real20_420": srv.url},
                                          cache_dir=str(tmp_path / "cache"))
        proc = run_stage(params, tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "scan: fetch real20: fetched: 20 pairs in data/real20" in proc.stdout
        real20 = json.loads((tmp_path / "outputs/data_manifest.json").read_text())[
            "benchmarks"]["real20"]
        assert real20["present"] and real20["count"] == 20
        assert real20["source"]["copy"] == "real20_420"
        assert json.loads((tmp_path / "datasets.lock.json").read_text())["real20_420"][
            "sha256"] == sha(payload)
        proc = run_stage(params, tmp_path)
        assert proc.returncode == 0 and len(srv.requests) == 1
        assert "real20: present, matches the lock" in proc.stdout
    params["data"]["download"]["sets"] = ["nature"]  # a Drive set without its file
    proc = run_stage(params, tmp_path)
    assert proc.returncode == 1 and "download it by hand" in proc.stderr
    params["data"]["download"]["sets"] = ["real21"]
    proc = run_stage(params, tmp_path)
    assert proc.returncode == 2 and "data.download.sets[0] = 'real21'" in proc.stderr

