"""The ``ytmt`` command.

::

    ytmt variants                                  # the network variants, one per line
    ytmt separate PATH... --model MODEL --out DIR [--recursive] [--tile N --overlap N]
                                                  [--device cpu|cuda] [--precision auto|fp32|bf16]
    ytmt fetch-data SET... --data DIR [--from ARCHIVE | --url URL] [--wild-list 454|500]
                                      [--real20-copy real20_420|full] [--lock FILE]
    ytmt import-authors FILE --out DIR [--vgg-path P] [--register NAME] [--alias ALIAS]

``separate`` takes image files and folders (their images; ``--recursive``: sub-folders too,
mirrored under DIR); MODEL is a ytmt checkpoint file or an MLflow model URI
(``models:/ytmt@champion``, ``models:/<name>/<version>``, ``runs:/<run id>/model``). For every
input ``<stem>.<ext>`` it writes ``DIR/<stem>_T.png`` (transmission) and ``DIR/<stem>_R.png``
(reflection), 8-bit RGB of the input's size (after its EXIF orientation); inputs that would
share names get distinct ones (``IMG_1_jpg``, ``IMG_1_png``: :mod:`ytmt.photos`). Unreadable
inputs are reported and skipped, and so are (in one line) the files of an input folder that
are not images (a GIF, a text file) and, without ``--recursive``, its sub-folders; the exit
status is 1 when any input failed, 2 for usage errors.

``fetch-data`` downloads benchmark sets (real20, objects, postcard, wild, nature, real_train;
sir2 = the three SIR² ones) into DIR in the common layout (docs/data.md); ``--from`` takes an
archive downloaded by hand (Google Drive sets, offline machines).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def _positive_or_zero(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value}: must be >= 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    from ytmt.inference import DEFAULT_OVERLAP, DEFAULT_PRECISION, DEFAULT_TILE
    from ytmt.precision import PRECISIONS

    parser = argparse.ArgumentParser(prog="ytmt", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("variants", help="list the network variants (ytmt.VARIANTS)")

    sep = sub.add_parser("separate", help="split photos into transmission and reflection",
                         description="Split photos taken through glass into a transmission "
                                     "(<stem>_T.png) and a reflection (<stem>_R.png).")
    sep.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders")
    sep.add_argument("--model", required=True,
                     help="checkpoint file or MLflow model URI (models:/<name>@champion, "
                          "models:/<name>/<version>, runs:/<run id>/model)")
    sep.add_argument("--out", required=True, type=Path, help="output folder (created)")
    sep.add_argument("--recursive", action="store_true",
                     help="also the images in sub-folders of folder inputs (mirrored in --out)")
    sep.add_argument("--tile", type=_positive_or_zero, default=DEFAULT_TILE,
                     help=f"tile size in pixels, a multiple of 16 (default {DEFAULT_TILE}; "
                          "0: whole image in one pass, memory grows with the area)")
    sep.add_argument("--overlap", type=_positive_or_zero, default=DEFAULT_OVERLAP,
                     help=f"pixels shared by neighbouring tiles (default {DEFAULT_OVERLAP})")
    sep.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, ...)")
    sep.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                     help=f"compute precision (default {DEFAULT_PRECISION}: bf16 where the "
                          "device computes it natively, else fp32; weights stay fp32)")
    sep.add_argument("--tracking-uri", default=None,
                     help="MLflow tracking/registry URI for models:/ and runs:/ (default: "
                          "$MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)")
    _add_fetch_data(sub)
    _add_import_authors(sub)
    return parser


def _add_fetch_data(sub: argparse._SubParsersAction) -> None:
    from ytmt.data.config import FETCHABLE_SETS, DownloadConfig

    fd = sub.add_parser("fetch-data", help="download benchmark sets into the common layout",
                        description="Fetch public benchmark sets into DIR/<set>/{blended,"
                                    "transmission_layer}, checked against a lock file.")
    fd.add_argument("sets", nargs="+", metavar="SET", choices=FETCHABLE_SETS,
                    help=f"one of {', '.join(FETCHABLE_SETS)}")
    fd.add_argument("--data", required=True, type=Path, help="data root (params data.root)")
    fd.add_argument("--from", dest="archive", type=Path, default=None,
                    help="the sets' archive, downloaded by hand (needed for Google Drive sets)")
    fd.add_argument("--url", default=None,
                    help="download the sets' archive from this URL instead (a mirror)")
    fd.add_argument("--wild-list", type=int, choices=(454, 500), default=454,
                    help="SIR² Wild: 454 = the 55 withgt/ scenes (paper), 500 = all 101")
    fd.add_argument("--real20-copy", choices=("real20_420", "full"), default="real20_420",
                    help="real20_420: the YTMT authors' release; full: Zhang et al.'s photos")
    fd.add_argument("--lock", default=DownloadConfig.lock,
                    help="archive sizes and SHA-256, recorded at first use (git-tracked)")
    fd.add_argument("--cache", default=DownloadConfig.cache_dir,
                    help="where downloads land and resume")


def cmd_fetch_data(args: argparse.Namespace) -> int:
    from ytmt.data.archives import ArchiveError
    from ytmt.data.config import DownloadConfig
    from ytmt.data.datasets import fetch_sets, one_archive, summary
    from ytmt.data.download import DownloadError

    given = {k: str(v) for k, v in (("archives", args.archive), ("urls", args.url)) if v}
    key = one_archive(args.sets, args.real20_copy) if given else ""
    cfg = DownloadConfig(sets=tuple(args.sets), wild_list=args.wild_list,
                         real20_copy=args.real20_copy, lock=args.lock, cache_dir=args.cache,
                         **{k: {key: v} for k, v in given.items()})
    try:
        record = fetch_sets(cfg, args.data)
    except (DownloadError, ArchiveError) as err:  # the data, not the command line
        print(f"ytmt fetch-data: error: {err}", file=sys.stderr)
        return 1
    for line in summary(record):
        print(line)
    return 0


def _add_import_authors(sub) -> None:
    imp = sub.add_parser(
        "import-authors", help="the authors' released YTMT-UCT weights as a ytmt model",
        description="Import the authors' released two-stage model "
                    "(ytmt_uct_sirs_68_077_00595364.pt) into DIR/model.pt and DIR/info.json, "
                    "with ImageNet VGG-19 (hash-checked); optionally register it in MLflow.")
    imp.add_argument("file", type=Path, metavar="FILE", help="the authors' released .pt file")
    imp.add_argument("--out", required=True, type=Path, help="output folder (new, or an "
                     "earlier import)")
    imp.add_argument("--vgg-path", default=None, help="torchvision's vgg19-dcbb9e9d.pth "
                     "(default: $YTMT_VGG19_PATH, then the torch hub cache)")
    imp.add_argument("--register", default=None, metavar="NAME",
                     help="also register it as a version of this MLflow registered model")
    imp.add_argument("--alias", default=None,
                     help="alias of the registered version (default authors-uct)")
    imp.add_argument("--tracking-uri", default=None,
                     help="MLflow tracking/registry URI (default: $MLFLOW_TRACKING_URI, else "
                          "sqlite:///<cwd>/mlflow.db)")


def cmd_variants() -> int:
    from ytmt import VARIANTS

    for name, v in VARIANTS.items():
        print(f"{name:20s} {v.summary}")
    return 0


def _report_skipped(skipped: list[Path], shown: int = 10) -> None:
    """One stderr line naming what the input folders hold that is not read (at most
    ``shown`` names, then a count): files that are not images, and sub-folders without
    ``--recursive``."""
    from ytmt.data.layout import IMAGE_SUFFIXES

    if not skipped:
        return
    names = [f"{p}/" if p.is_dir() else str(p) for p in skipped]
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    folders = any(p.is_dir() for p in skipped)
    print(f"skipped {len(names)} item(s) that are not images "
          f"({' '.join(sorted(IMAGE_SUFFIXES))})"
          + (" or are sub-folders (--recursive reads them)" if folders else "")
          + f": {', '.join(names[:shown])}{more}", file=sys.stderr)


def cmd_separate(args: argparse.Namespace) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.exceptions import MlflowException
    from tqdm import tqdm

    from ytmt.inference import (
        ImageReadError,
        check_tiling,
        load_image,
        save_png,
        separate,
        tile_count,
    )
    from ytmt.precision import resolve_precision
    from ytmt.serving import load_separator

    tile = args.tile or None
    if tile is not None:
        check_tiling(tile, args.overlap)
    from ytmt.photos import not_read, plan_photos

    photos = plan_photos(args.paths, recursive=args.recursive)
    _report_skipped(not_read(args.paths, recursive=args.recursive))
    precision = resolve_precision(args.precision, args.device)
    try:
        model = load_separator(args.model, tracking_uri=args.tracking_uri)
    except MlflowException as err:
        raise ValueError(f"--model {args.model}: {err.message}") from None
    args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    with tqdm(total=len(photos), unit="img", desc="separate", file=sys.stderr) as bar:
        for photo in photos:
            path = photo.path
            bar.set_postfix_str(path.name)
            try:
                image = load_image(path)
            except (ImageReadError, OSError) as err:
                tqdm.write(f"error: {err}", file=sys.stderr)
                failed += 1
                bar.update(1)
                continue
            h, w = image.shape[:2]
            with tqdm(total=tile_count(h, w, tile, args.overlap), unit="tile", leave=False,
                      desc=path.name, file=sys.stderr) as tiles:
                t_hat, r_hat = separate(model, image, tile=tile, overlap=args.overlap,
                                        device=args.device, precision=precision,
                                        progress=lambda done, total: tiles.update(1))
            t_path, r_path = photo.outputs(args.out)
            save_png(t_hat, t_path)
            save_png(r_hat, r_path)
            bar.update(1)
    done = len(photos) - failed
    print(f"wrote {done} pair(s) to {args.out} ({precision})"
          + (f"; {failed} input(s) failed" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


def cmd_import_authors(args: argparse.Namespace) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.exceptions import MlflowException

    from ytmt.authors import import_authors
    from ytmt.tracking import TrackingUnavailable

    try:
        import_authors(args.file, args.out, vgg_path=args.vgg_path,
                       register_name=args.register, alias=args.alias,
                       tracking_uri=args.tracking_uri,
                       progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    except MlflowException as err:
        raise ValueError(f"MLflow: {err.message}") from None
    except TrackingUnavailable as err:
        raise ValueError(str(err)) from None
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "variants":
            return cmd_variants()
        if args.command == "fetch-data":
            return cmd_fetch_data(args)
        if args.command == "import-authors":
            return cmd_import_authors(args)
        return cmd_separate(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"ytmt {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
