"""The automatic context (app.catalog.context.choose_n_ctx): what the engine process picks when the
user has not chosen a context, and what the Models page's RAM estimates assume, from one function."""

from __future__ import annotations

import sys

import pytest

from app import hardware
from app.catalog.catalog import CatalogModel, ModelVariant, estimate_variant
from app.catalog.context import AUTO_CTX_MAX, AUTO_CTX_MIN, AUTO_CTX_STEP, MIN_CHAT_CTX, choose_n_ctx
from tmac_core import default_model_path, inspect_model
from tmac_core.plan import kv_cache_bytes

KV = 100_000  # bytes of KV cache per token


def test_plenty_of_memory_gives_the_cap_or_the_models_own_context():
    assert choose_n_ctx(131_072, KV, 1 << 40) == AUTO_CTX_MAX
    assert choose_n_ctx(4096, KV, 1 << 40) == 4096


def test_a_quarter_of_the_free_memory_rounded_down_to_the_step():
    free = 4 * KV * 3000 + 17  # a quarter holds 3,000 tokens
    chosen = choose_n_ctx(131_072, KV, free)
    assert chosen == 3000 // AUTO_CTX_STEP * AUTO_CTX_STEP
    assert AUTO_CTX_MIN <= chosen <= AUTO_CTX_MAX


def test_unknown_memory_gives_the_floor_and_short_models_keep_theirs():
    assert choose_n_ctx(131_072, KV, None) == AUTO_CTX_MIN
    assert choose_n_ctx(1024, KV, None) == 1024
    assert choose_n_ctx(8, KV, None) == 16  # a nonsense header still gives a positive context


def test_little_or_negative_free_memory_still_leaves_room_for_a_chat():
    assert choose_n_ctx(131_072, KV, 0) == MIN_CHAT_CTX
    assert choose_n_ctx(131_072, KV, -(1 << 30)) == MIN_CHAT_CTX  # the weights alone exceed what is free
    assert choose_n_ctx(300, KV, 0) == 300


def test_the_models_page_estimate_uses_the_context_the_engine_will_pick():
    model = CatalogModel.from_summary(inspect_model(default_model_path()), "local/embedded")
    per_token = kv_cache_bytes(model.config, 1)
    for free in (None, 0, 600 * per_token * 4, 1 << 40):
        estimate = estimate_variant(ModelVariant(model, 4), context=None, free_bytes=free)
        after_weights = None if free is None else free - estimate.packed_bytes
        assert estimate.context == choose_n_ctx(model.config.n_ctx_train, per_token, after_weights)
        assert estimate.kv_cache_bytes == kv_cache_bytes(model.config, estimate.context)
    chosen = estimate_variant(ModelVariant(model, 4), context=1024, free_bytes=1 << 40)
    assert chosen.context == 1024  # the user's own choice wins


def test_available_memory_on_windows_is_the_available_physical_memory(monkeypatch):
    from types import SimpleNamespace

    status = SimpleNamespace(ullTotalPhys=16 << 30, ullAvailPhys=9 << 30)  # MEMORYSTATUSEX's fields

    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(hardware, "_windows_memory_status", lambda: status)
    assert hardware.available_memory_bytes() == 9 << 30
    assert hardware.total_memory_bytes() == 16 << 30
    monkeypatch.setattr(hardware, "_windows_memory_status", lambda: None)
    assert hardware.total_memory_bytes() is None


def test_available_memory_on_macos_counts_free_and_speculative_pages(monkeypatch):
    pages = {"vm.page_free_count": 1000, "vm.page_speculative_count": 200}
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(hardware, "_macos_sysctl_int", pages.get)
    page = hardware.os.sysconf("SC_PAGE_SIZE")
    assert hardware.available_memory_bytes() == 1200 * page


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/meminfo")
def test_available_memory_on_linux_is_memavailable():
    with open("/proc/meminfo", encoding="ascii") as meminfo:
        line = next(x for x in meminfo if x.startswith("MemAvailable:"))
    reported = int(line.split()[1]) * 1024
    assert abs(hardware.available_memory_bytes() - reported) < 256 << 20  # read a moment apart
