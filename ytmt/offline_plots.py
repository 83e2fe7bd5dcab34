"""``dvc plots show`` / ``dvc plots diff`` offline: an HTML template with Vega inside.

DVC's default page loads Vega, Vega-Lite and Vega-Embed from a CDN, so without internet the
curves of ``dvc.yaml``'s plots render as empty boxes (design.md s5). This writes a page
template that carries the three libraries (bundled by the ``vl-convert-python`` package, no
network) and points this repository's local DVC config at it::

    python -m ytmt.offline_plots            # from the repository root (``dev.py`` runs it)

The template is generated, not committed (``.dvc/plots/offline.html`` is git-ignored), and
the setting goes to ``.dvc/config.local`` (also git-ignored), so a clone that never ran this
keeps DVC's default page.
"""

from __future__ import annotations

import configparser
import sys
from pathlib import Path

from ytmt.fileio import atomic_write_text

TEMPLATE = Path("plots") / "offline.html"  # relative to .dvc/, as DVC resolves it

PAGE = """<!DOCTYPE html>
<html>
<head>
  <meta charset="utf-8">
  <title>DVC plots (offline)</title>
  <script type="text/javascript">{bundle}</script>
  <style>table {{ border-spacing: 15px; }} body {{ font-family: sans-serif; }}</style>
</head>
<body>
{{plot_divs}}
</body>
</html>
"""


def template_html() -> str:
    """The page: DVC fills ``{plot_divs}``; Vega, Vega-Lite and Vega-Embed are inline and
    set as globals (``vegaEmbed`` ...), which DVC's plot scripts call."""
    import vl_convert

    bundle = vl_convert.javascript_bundle()
    if "{plot_divs}" in bundle:  # DVC substitutes the placeholder by plain text replacement
        raise RuntimeError("the Vega bundle contains DVC's placeholder text")
    return PAGE.format(bundle=bundle.replace("</script", "<\\/script"))


def install(repo: str | Path = ".") -> Path:
    """Write ``<repo>/.dvc/plots/offline.html`` and set ``plots.html_template`` in
    ``<repo>/.dvc/config.local``. Returns the template's path."""
    dvc_dir = Path(repo) / ".dvc"
    if not dvc_dir.is_dir():
        raise FileNotFoundError(f"{dvc_dir}: not a DVC repository")
    path = atomic_write_text(dvc_dir / TEMPLATE, template_html())
    local = dvc_dir / "config.local"
    config = configparser.ConfigParser()
    if local.is_file():
        config.read(local)
    if not config.has_section("plots"):
        config.add_section("plots")
    config.set("plots", "html_template", TEMPLATE.as_posix())
    with open(local, "w") as f:
        config.write(f)
    return path


if __name__ == "__main__":
    print(f"dvc plots: offline template {install(sys.argv[1] if len(sys.argv) > 1 else '.')}")
