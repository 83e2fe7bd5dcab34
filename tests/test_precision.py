"""One resolver for ``precision: auto | fp32 | bf16`` (ytmt.precision)."""

from pathlib import Path

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


def cpu_flags_from_the_kernel() -> set[str]:
    """The CPU feature flags Linux reports in /proc/cpuinfo (independent of torch)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo (not Linux): no independent record of the CPU's flags")
    flags = next((line for line in cpuinfo.read_text().splitlines()
                  if line.startswith("flags")), None)
    if flags is None:
        pytest.skip("/proc/cpuinfo lists no flags on this architecture")
    return set(flags.split(":", 1)[1].split())


def test_auto_follows_the_cpu_flags_of_this_machine():
    """bf16 is native where the kernel lists AVX-512 BF16 or AMX-BF16 (Linux's names)."""
    native = bool(cpu_flags_from_the_kernel() & {"avx512_bf16", "amx_bf16"})
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


def test_explicit_bf16_on_a_device_that_emulates_it_warns_once(monkeypatch, caplog):
    import ytmt.precision as precision

    monkeypatch.setattr(precision, "bf16_native", lambda device: False)
    monkeypatch.setattr("ytmt.logs._SAID", set())
    with caplog.at_level("WARNING", logger="ytmt.precision"):
        assert resolve_precision("bf16", "cpu") == "bf16"  # the user's choice stands
        assert resolve_precision("bf16", "cpu") == "bf16"
        assert resolve_precision("auto", "cpu") == "fp32"
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "no native bf16" in warned[0] and "slower" in warned[0]
    monkeypatch.setattr(precision, "bf16_native", lambda device: True)
    with caplog.at_level("WARNING", logger="ytmt.precision"):
        caplog.clear()
        assert resolve_precision("bf16", "cuda") == "bf16"
    assert not caplog.records

