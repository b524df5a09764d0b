"""The Models page's estimate for a file equals what the engine reports after loading
it, byte for byte: both come from tmac_core.plan, and the engine counts what it built."""

from __future__ import annotations

import pytest

from app.catalog.catalog import CatalogModel, ModelVariant, estimate_variant
from tmac_core import Engine, default_model_path, inspect_model


@pytest.fixture(scope="module")
def embedded():
    return CatalogModel.from_summary(inspect_model(default_model_path()), "local/embedded")


@pytest.fixture(scope="module", params=[4, 2])
def loaded(request, tmp_path_factory):
    engine = Engine.load("default", bits=request.param, cache_dir=tmp_path_factory.mktemp("cache"))
    yield request.param, engine.info
    engine.close()


def test_the_estimate_is_what_the_engine_holds(embedded, loaded):
    bits, info = loaded
    estimate = estimate_variant(ModelVariant(embedded, bits), context=info.n_ctx)
    assert estimate.context == info.n_ctx
    assert estimate.packed_bytes == info.packed_bytes
    assert estimate.kv_cache_bytes == info.kv_cache_bytes
