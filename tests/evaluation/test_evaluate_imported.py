"""The evaluate stage scores imported models (params evaluate.imported) under both protocols
and reports them beside the paper's Table 1 with the benchmark copies that were used."""

import json

import pytest

from tests.archs.authors_reference import random_authors_nets, save_hash_named_vgg, save_released
from tests.evaluation.conftest import make_benchmarks, scan_benchmarks
from ytmt.authors import import_authors
from ytmt.config import ConfigError, parse_section
from ytmt.evaluation.config import EvaluateConfig
from ytmt.evaluation.evaluate import run_evaluation


@pytest.fixture(scope="module")
def evaluated_import(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-imported")
    file = save_released(root / "released.pt", *random_authors_nets(8))
    vgg, _ = save_hash_named_vgg(root)
    import_authors(file, root / "authors-uct", vgg_path=vgg)
    manifest = make_benchmarks(root)
    (root / "data/real20/SOURCE.json").write_text(json.dumps({
        "set": "real20", "copy": "real20_420", "wild_list": None,
        "archive": "real20_420.zip", "sha256": "ab" * 32}))
    manifest = scan_benchmarks(root)  # as the pipeline: the fetcher writes it, scan reads it
    cfg = parse_section(EvaluateConfig, {"synthetic": False, "visual_cases": 0,
                                         "imported": {"authors-uct": str(root / "authors-uct")}},
                        "evaluate")
    summary = run_evaluation(cfg, root / "no-trained-models", None, manifest, root / "eval",
                             log_mlflow=False)
    return summary, (root / "eval" / "report.md").read_text()


def test_imported_model_is_scored_under_both_protocols(evaluated_import):
    summary, _ = evaluated_import
    (model,) = summary["models"]
    assert model["variant"] == "authors-uct" and model["source"].startswith("released.pt")
    real20 = summary["variants"]["authors-uct"]["real20"]
    assert {"psnr_t", "ssim_t", "psnr_t_strict", "ssim_r_strict"} <= set(real20)
    assert real20["psnr_t"]["n"] == 1
    assert [s["source"]["copy"] for s in summary["sets"] if s["name"] == "real20"] == \
        ["real20_420"]


def test_report_puts_it_beside_table_1_and_names_the_benchmark_copies(evaluated_import):
    _, report = evaluated_import
    table1 = report.split("## Transmission T, paper protocol")[1].split("##")[0]
    assert "| paper (variant, table) | authors-uct (imported) |" in table1
    assert "23.26 / 0.806 (ytmt-uct, Table 1)" in table1
    assert "authors-uct (imported: released.pt (sha256" in report
    data = report.split("## Benchmark data")[1]
    assert "- Real20 copy: real20_420 (the YTMT authors' copy)" in data
    assert "- Wild list: unknown (not fetched by ytmt)" in data
    assert "archive real20_420.zip, sha256 abababab" in data


def test_imported_names_and_folders_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="evaluate: imported.ytmt-uct: a variant's name"):
        parse_section(EvaluateConfig, {"imported": {"ytmt-uct": "x"}}, "evaluate")
    cfg = EvaluateConfig(imported={"authors-uct": str(tmp_path / "nothing")}, synthetic=False)
    with pytest.raises(FileNotFoundError, match="evaluate.imported.authors-uct: .*model.pt not "
                                                "found .*ytmt import-authors"):
        run_evaluation(cfg, tmp_path / "models", None, None, tmp_path / "eval",
                       log_mlflow=False)
