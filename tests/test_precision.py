"""One resolver for ``precision: auto | fp32 | bf16`` (ytmt.precision)."""

import pytest
import torch

from ytmt.precision import autocast, bf16_native, cpu_computes_bf16, resolve_precision


@pytest.mark.parametrize("caps, native", [
    ({"avx512_bf16": True, "amx_bf16": False}, True),
    ({"avx512_bf16": False, "amx_bf16": True}, True),     # AMX (Sapphire Rapids and later)
    ({"avx512_f": True, "avx512_bf16": False}, False),    # AVX-512 without BF16: emulated
    ({"architecture": "arm64", "neon": True}, False),
])
def test_cpu_bf16_is_native_with_avx512_bf16_or_amx(caps, native):
    assert cpu_computes_bf16(caps) is native


def test_auto_follows_what_torch_reports_for_this_machine():
    caps = torch.cpu.get_capabilities()
    native = bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    assert bf16_native("cpu") is native
    assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert resolve_precision("auto", torch.device("cpu")) == resolve_precision("auto", "cpu")
    if not torch.cuda.is_available():
        assert resolve_precision("auto", "cuda") == "fp32"


def test_explicit_precisions_are_kept_and_others_refused():
    assert resolve_precision("fp32", "cpu") == "fp32"
    assert resolve_precision("bf16", "cpu") == "bf16"
    with pytest.raises(ValueError, match="precision = 'fp16': expected one of auto, fp32"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="resolve it first"):
        autocast("cpu", "auto")


def test_autocast_is_bf16_or_nothing():
    x = torch.rand(2, 4)
    with autocast("cpu", "bf16"):
        assert (x @ x.t()).dtype == torch.bfloat16
    with autocast(torch.device("cpu"), "fp32"):
        assert (x @ x.t()).dtype == torch.float32
