"""DVC stage `register`: register every evaluated model in the MLflow Model Registry and move
the champion alias to the best validation score (params `register`); writes --out."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ytmt.evaluation.registry import register_models, write_registry
from ytmt.params import load_params, run_stage


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--models", default="outputs/models",
                    help="the trained models (a DVC dependency; the list comes from --eval)")
    ap.add_argument("--eval", default="outputs/eval", help="the evaluate stage's output")
    ap.add_argument("--out", default="outputs/registry.json")
    args = ap.parse_args(argv)
    cfg = load_params(args.params).register
    summary_path = Path(args.eval) / "summary.json"
    if not summary_path.is_file():
        raise SystemExit(f"{summary_path}: missing; run the evaluate stage first")
    result = register_models(json.loads(summary_path.read_text()), cfg)
    write_registry(result, args.out)
    champ = result["champion"]
    print(f"register: {len(result['versions'])} version(s) of {result['model_name']}; "
          f"{champ['uri']} = version {champ['version']} ({champ['variant']} seed "
          f"{champ['seed']}, {result['metric']} {champ['value']:.4f}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_stage(main))
