"""The Markdown evaluation report: our numbers beside the paper's Table 1, 3 and 4.

A pure function of the evaluation summary (``outputs/eval/summary.json``), so the report is
reproducible from that file alone.
"""

from __future__ import annotations

from typing import Any

from ytmt.evaluation.paper import TABLE1, TABLE4_REAL20_PSNR_T

PROTOCOL_TEXT = {
    "paper": "paper protocol: outputs clipped to [0, 1], scaled to 0..255 floats, PSNR and SSIM "
             "per colour channel with scikit-image (data_range=255), averaged over channels, "
             "then over images",
    "strict": "strict protocol: images rounded to 8 bits, PSNR over the three channels jointly, "
              "SSIM with channel_axis (joint RGB)",
}


def fmt(stats: dict[str, float] | None, digits: int) -> str:
    """``mean`` or ``mean ± std`` (several seeds); an em dash when missing."""
    if not stats:
        return "—"
    text = f"{stats['mean']:.{digits}f}"
    if stats.get("n", 1) > 1:
        text += f" ± {stats['std']:.{digits}f}"
    return text


def _pair(per_set: dict[str, Any] | None, psnr: str, ssim: str) -> str:
    if per_set is None:
        return "—"
    return f"{fmt(per_set.get(psnr), 2)} / {fmt(per_set.get(ssim), 3)}"


def _set_label(s: dict[str, Any]) -> str:
    return s["name"] + (" (ours)" if s["kind"] == "synthetic" else "")


def _absent(s: dict[str, Any]) -> str:
    return "absent" if not s.get("error") else "absent (broken, see below)"


def _seed_line(summary: dict[str, Any]) -> str:
    counts: dict[str, list[int]] = {}
    for m in summary["models"]:
        if not m.get("source"):
            counts.setdefault(m["variant"], []).append(m["seed"])
    parts = [f"{v} (seed{'s' if len(s) > 1 else ''} {', '.join(map(str, sorted(s)))})"
             for v, s in counts.items()]
    parts += [f"{m['variant']} (imported: {m['source']})" for m in summary["models"]
              if m.get("source")]
    return ", ".join(parts)


def _imported(summary: dict[str, Any]) -> set[str]:
    return {m["variant"] for m in summary["models"] if m.get("source")}


#: How SOURCE.json's values read in the report (values of ytmt's benchmark fetcher).
_SOURCE_TEXT = {("copy", "real20_420"): "real20_420 (the YTMT authors' copy)",
                ("copy", "full"): "full size",
                ("wild_list", "454"): "the 454-image protocol's list (55 Wild images)",
                ("wild_list", "500"): "the 500-image protocol's list (101 Wild images)"}
UNKNOWN_SOURCE = "unknown (not fetched by ytmt)"


def _source_value(s: dict[str, Any] | None, key: str) -> str:
    if s is None:
        return "no such set in data.benchmarks"
    source = s.get("source")
    if not source:
        return UNKNOWN_SOURCE
    value = source.get(key)
    return _SOURCE_TEXT.get((key, str(value)), str(value)) if value else \
        f"unknown (its SOURCE.json has no {key!r})"


def data_source_lines(summary: dict[str, Any]) -> list[str]:
    """Which Real20 copy and which Wild list were scored, and every set's archive."""
    sets = {s["name"]: s for s in summary["sets"] if s["kind"] == "benchmark"}
    lines = [f"- Real20 copy: {_source_value(sets.get('real20'), 'copy')}",
             f"- Wild list: {_source_value(sets.get('wild'), 'wild_list')}"]
    for name, s in sets.items():
        src = s.get("source")
        where = (f"archive {src.get('archive')}, sha256 {str(src.get('sha256'))[:16]}"
                 if src else UNKNOWN_SOURCE)
        lines.append(f"- {name} (`{s['path']}`): {where}")
    return lines


def layer_table(summary: dict[str, Any], layer: str, protocol: str, with_paper: bool) -> list[str]:
    """One table: rows = sets, columns = [paper,] each variant's PSNR / SSIM of ``layer``."""
    suffix = "" if protocol == "paper" else f"_{protocol}"
    psnr, ssim = f"psnr_{layer}{suffix}", f"ssim_{layer}{suffix}"
    variants = list(summary["variants"])
    head = ["set", "images"]
    if with_paper:
        head.append("paper (variant, table)")
    imported = _imported(summary)
    head += [f"{v} (imported)" if v in imported else v for v in variants]
    if layer == "t":
        head.append("input as T̂")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary["sets"]:
        row = [_set_label(s)]
        paper = TABLE1.get(s["name"])
        paper_cell = (f"{paper['psnr_t']:.2f} / {paper['ssim_t']:.3f} ({paper['variant']}, "
                      f"{paper['table']})" if paper else "—")
        if not s["present"]:
            row += [_absent(s)]
            if with_paper:
                row.append(paper_cell)
            row += ["absent"] * len(variants) + (["absent"] if layer == "t" else [])
        else:
            row.append(str(s.get("scored", s["count"])))
            if with_paper:
                row.append(paper_cell)
            row += [_pair(summary["variants"][v].get(s["name"]), psnr, ssim) for v in variants]
            if layer == "t":
                first = next((summary["variants"][v][s["name"]] for v in variants
                              if s["name"] in summary["variants"][v]), None)
                row.append(_pair(first, "psnr_t_input", "ssim_t_input"))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def ablation_table(summary: dict[str, Any]) -> list[str]:
    """Table 4: Real20 PSNR of T per variant, paper vs ours."""
    real20 = next((s for s in summary["sets"] if s["name"] == "real20"), None)
    lines = ["| variant | paper (Real20 PSNR T) | ours |", "|---|---|---|"]
    for variant, paper in TABLE4_REAL20_PSNR_T.items():
        if variant not in summary["variants"]:
            ours = "not trained"
        elif real20 is None or not real20["present"]:
            ours = "Real20 absent"
        else:
            ours = fmt(summary["variants"][variant].get("real20", {}).get("psnr_t"), 2)
        lines.append(f"| {variant} | {paper:.2f} | {ours} |")
    return lines


def render_report(summary: dict[str, Any]) -> str:
    protocols = summary["protocols"]
    vgg = sorted({m.get("vgg_weights") or "unknown" for m in summary["models"]})
    out = ["# YTMT evaluation report", "",
           f"Models: {_seed_line(summary)}. With several seeds every number is mean ± standard "
           "deviation over seeds (each seed's number being the mean over the set's images).",
           "", "Metrics: PSNR (dB) / SSIM. " + "; ".join(
               f"**{p}** = {PROTOCOL_TEXT[p]}" for p in protocols) + ".",
           "Benchmarks are resized to (h//16·16, w//16·16) like the paper; the reflection "
           "target of real sets is I − T.", ""]
    if "random" in vgg:
        out += ["> **Warning:** at least one model was trained with *random* VGG-19 weights "
                "(no ImageNet file was available), so hypercolumn features and the "
                "perceptual loss are not the paper's: numbers are not comparable with it.", ""]
    if "paper" in protocols:
        out += ["## Transmission T, paper protocol (beside the paper's Table 1 and Table 3)", ""]
        out += layer_table(summary, "t", "paper", with_paper=True) + [""]
    if "strict" in protocols:
        out += ["## Transmission T, strict protocol", ""]
        out += layer_table(summary, "t", "strict", with_paper=False) + [""]
    for p in protocols:
        out += [f"## Reflection R, {p} protocol", ""]
        out += layer_table(summary, "r", p, with_paper=False) + [""]
    if "paper" in protocols:
        out += ["## Ablation (beside the paper's Table 4)", ""]
        out += ablation_table(summary) + [""]
    if any(s["kind"] == "benchmark" for s in summary["sets"]):
        out += ["## Benchmark data", ""] + data_source_lines(summary) + [""]
    broken = [s for s in summary["sets"] if not s["present"] and s.get("error")]
    absent = [s for s in summary["sets"] if not s["present"] and not s.get("error")]
    if absent:
        out += ["Absent sets (not under data/; see docs/evaluation.md to add them): "
                + ", ".join(f"{s['name']} (`{s['path']}`)" for s in absent) + ".", ""]
    for s in broken:
        out += [f"- **{s['name']}** could not be read: {s['error']}"]
    if broken:
        out.append("")
    return "\n".join(out)
