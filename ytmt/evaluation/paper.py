"""The numbers our reports are compared with (YTMT, NeurIPS 2021; design.md s2).

All are PSNR (dB) / SSIM of the transmission T under the paper protocol.
"""

from __future__ import annotations

#: Table 1: YTMT-UCT on the real benchmarks; Table 3: YTMT-UCS on Nature.
TABLE1 = {
    "real20": {"variant": "ytmt-uct", "psnr_t": 23.26, "ssim_t": 0.806, "table": "Table 1"},
    "objects": {"variant": "ytmt-uct", "psnr_t": 24.87, "ssim_t": 0.896, "table": "Table 1"},
    "postcard": {"variant": "ytmt-uct", "psnr_t": 22.91, "ssim_t": 0.884, "table": "Table 1"},
    "wild": {"variant": "ytmt-uct", "psnr_t": 25.48, "ssim_t": 0.890, "table": "Table 1"},
    "nature": {"variant": "ytmt-ucs", "psnr_t": 23.85, "ssim_t": 0.810, "table": "Table 3"},
}

#: Table 4 (ablation): Real20 PSNR of T per variant.
TABLE4_REAL20_PSNR_T = {
    "unet-no-fi": 20.57,
    "ytmt-ucs-relu-only": 22.79,
    "ytmt-ucs": 23.05,
    "ytmt-uct": 23.09,
    "ytmt-uas": 23.26,
    "ytmt-uat": 23.39,
}
