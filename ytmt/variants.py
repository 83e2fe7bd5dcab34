"""The named network variants, as data (no torch): what each one is built from.

A variant is a backbone, the exchange of its YTMT heads and a number of stages
(``ytmt.archs.build.build_model`` builds one by name). This table is torch-free so that
params validation (``train.variants``) and the DVC stages that only read params never import
the networks: editing a network does not make the data stages stale.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Exchange(enum.Enum):
    """What a YTMT head hands across streams, and how it merges (``⊕``)."""

    ADD = "add"              # pattern A: t' = ReLU(t) + ReLU⁻(r)
    CONCAT = "concat"        # pattern C: t' = conv1x1([ReLU(t), ReLU⁻(r)])
    RELU_ONLY = "relu_only"  # ablation: t' = conv1x1([ReLU(t), ReLU(r)])
    NONE = "none"            # ablation "w/o FI": t' = ReLU(t)


@dataclass(frozen=True)
class Variant:
    """A named network: backbone, exchange head, number of stages. Variants are data."""

    name: str
    backbone: str  # "unet" | "plain" | "released-unet" (ytmt.archs.released)
    exchange: Exchange
    stages: int
    summary: str

    @property
    def stage1_variant(self) -> str:
        """The single-stage variant whose trained model is this variant's frozen stage 1."""
        if self.stages == 1:
            return self.name
        return _STAGE1_OF[self.name]


VARIANTS: dict[str, Variant] = {v.name: v for v in [
    Variant("ytmt-ucs", "unet", Exchange.CONCAT, 1, "U-shaped, concat head, single stage"),
    Variant("ytmt-uas", "unet", Exchange.ADD, 1, "U-shaped, additive head, single stage"),
    Variant("ytmt-uct", "unet", Exchange.CONCAT, 2, "U-shaped, concat head, two stages"),
    Variant("ytmt-uat", "unet", Exchange.ADD, 2, "U-shaped, additive head, two stages"),
    Variant("ytmt-pcs", "plain", Exchange.CONCAT, 1, "plain, concat head, single stage"),
    Variant("ytmt-pas", "plain", Exchange.ADD, 1, "plain, additive head, single stage"),
    Variant("unet-no-fi", "unet", Exchange.NONE, 1,
            "ablation: dual-stream U-Net without feature interaction (Table 4, w/o FI)"),
    Variant("ytmt-ucs-relu-only", "unet", Exchange.RELU_ONLY, 1,
            "ablation: concat head fed ReLU instead of ReLU⁻ (Table 4, ReLU only)"),
    Variant("ytmt-ucs-released", "released-unet", Exchange.CONCAT, 1,
            "the authors' legacy U-Net of their released weights (ytmt_ucs_old), single stage"),
    Variant("ytmt-uct-released", "released-unet", Exchange.CONCAT, 2,
            "the authors' released two-stage model (ytmt import-authors)"),
]}
_STAGE1_OF = {"ytmt-uct": "ytmt-ucs", "ytmt-uat": "ytmt-uas",
              "ytmt-uct-released": "ytmt-ucs-released"}


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; known: {', '.join(VARIANTS)}") from None
