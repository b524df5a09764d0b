"""The self-test's own checks, without the window: the kernel-tier comparison must pass here and
must fail when a tier (or the generic tier itself) computes something else; the power probe and
the installation facts must answer without raising; a crashing check becomes a failure line."""

from __future__ import annotations

import numpy as np
import pytest

import tmac_core.kernels as K
from app import self_test


def test_every_tier_here_matches_generic():
    result = self_test.check_kernel_tiers()
    assert result["ok"] is True, result
    assert result["tiers"][0] == "generic" and set(result["results"]) == set(K.available_tiers())
    assert all(verdict == "ok" for verdict in result["results"].values())


def test_a_tier_that_computes_something_else_fails(monkeypatch):
    tiers = [t for t in K.available_tiers() if t != "generic"]
    if not tiers:
        pytest.skip("only the generic tier on this machine")
    real_gemm = K.gemm

    def off_by_one_ulp(packed, x, *, tier=None):
        out = real_gemm(packed, x, tier=tier)
        return np.nextafter(out, np.inf) if tier == tiers[-1] else out

    monkeypatch.setattr(K, "gemm", off_by_one_ulp)
    result = self_test.check_kernel_tiers()
    assert result["ok"] is False
    assert "differs from generic" in result["results"][tiers[-1]]
    assert result["results"]["generic"] == "ok"


def test_a_wrong_generic_tier_fails_against_float64(monkeypatch):
    real_gemm = K.gemm
    monkeypatch.setattr(K, "gemm", lambda packed, x, *, tier=None: real_gemm(packed, x, tier=tier) * 1.5)
    result = self_test.check_kernel_tiers()
    assert result["ok"] is False and "NMSE" in result["results"]["generic"]


def test_power_probe_and_installation_facts_answer():
    power = self_test.probe_power()
    assert power["source"] and (power["sensor"] is not None or power["unavailable_reason"])
    facts = self_test.installation_facts()
    assert facts["frozen"] is False and facts["runtime_dir"].endswith("tmac_core")


def test_a_check_that_raises_is_a_failure_not_a_crash():
    failures: list[str] = []

    def broken():
        raise OSError("no such device")

    result = self_test._probe("power", broken, failures)
    assert result == {"ok": False, "error": "OSError: no such device"}
    assert failures == ["power: OSError: no such device"]
