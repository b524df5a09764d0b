"""The NEON tier on a baseline ARMv8.0 core: the same drivers as test_cross_tiers, run under
qemu-aarch64 emulating a Cortex-A53, which has no dot-product (ASIMDDP), no I8MM and no SVE.
qemu's default model ("max") has them all, so an instruction from ARMv8.2+ slipping into the
NEON files (a flag, an intrinsic, the compiler's own choice) passes there and dies here with
SIGILL. The driver prints the features the runtime detected, proving the model lacks them."""

import os
import subprocess

import pytest

from tests.kernels.test_cross_tiers import (
    ATTN_DRIVER,
    DRIVER,
    SWIGLU_DRIVER,
    build_neon,
    check_driver_output,
    write_cases,
)

BASELINE_CPU = "cortex-a53"  # ARMv8.0-A: no FEAT_DotProd, FEAT_I8MM, SVE

# build.py test's second pass sets TMAC_KERNELS=generic for the Python extension; these binaries
# do not read it, so that pass would repeat the first one's run exactly
pytestmark = pytest.mark.skipif(
    os.environ.get("TMAC_KERNELS") == "generic", reason="same binaries and runs as the first pass"
)


def test_neon_tier_without_dotprod(tmp_path, rng):
    qemu, exe = build_neon(tmp_path, DRIVER)
    cases = tmp_path / "cases.bin"
    n = write_cases(cases, rng)
    out = subprocess.run(
        [qemu, "-cpu", BASELINE_CPU, str(exe), str(cases)], capture_output=True, text=True, timeout=600
    )
    assert "cpu: neon=1 dotprod=0 i8mm=0 sve=0" in out.stdout, out.stdout[:2000] + out.stderr[-2000:]
    check_driver_output(out, n)


@pytest.mark.parametrize(("driver", "n_cases"), [(ATTN_DRIVER, 33), (SWIGLU_DRIVER, 41)], ids=["attention", "swiglu"])
def test_neon_blocks_without_dotprod(tmp_path, driver, n_cases):
    qemu, exe = build_neon(tmp_path, driver)
    out = subprocess.run([qemu, "-cpu", BASELINE_CPU, str(exe)], capture_output=True, text=True, timeout=600)
    check_driver_output(out, n_cases)
