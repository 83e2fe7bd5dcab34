"""Params presets: a recipe kept as one file of DVC ``-S`` overrides (``presets/*.yaml``).

A preset file holds ``overrides:``, a list in the grammar of ``dvc exp run -S`` (Hydra's).
:func:`apply_preset` writes them into a params file with DVC's own override code
(``dvc.utils.hydra.apply_overrides``, what ``-S`` runs), so a preset means exactly what the
same ``-S`` list would, and the result is validated like params.yaml::

    python -m ytmt.presets presets/paper.yaml      # then: dvc exp run
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml


def load_preset(path: str | Path) -> list[str]:
    """The override strings of preset ``path``; ValueError when it has none or a non-string."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    overrides = data.get("overrides") if isinstance(data, dict) else None
    if not overrides or not all(isinstance(o, str) and "=" in o for o in overrides):
        raise ValueError(f"{path}: expected 'overrides:' with a list of key=value strings "
                         "(the grammar of dvc exp run -S)")
    return list(overrides)


def apply_preset(preset: str | Path, params: str | Path = "params.yaml") -> list[str]:
    """Apply ``preset`` to the params file ``params`` in place (DVC's override code), check
    the result with :func:`ytmt.params.load_params` (restoring the file if it fails) and
    return the overrides applied."""
    from dvc.utils.hydra import apply_overrides

    from ytmt.params import load_params

    overrides = load_preset(preset)
    params = Path(params)
    before = params.read_text()
    try:
        apply_overrides(params, overrides)
        load_params(params)
    except BaseException:
        params.write_text(before)
        raise
    return overrides


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("preset", help="a preset file, e.g. presets/paper.yaml")
    ap.add_argument("--params", default="params.yaml", help="the params file to change")
    args = ap.parse_args(argv)
    applied = apply_preset(args.preset, args.params)
    print(f"{args.params}: {len(applied)} overrides of {args.preset} applied; run "
          "`dvc exp run` (git diff shows the change)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
