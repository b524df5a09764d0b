"""The per-model "exact int8 arithmetic" option: offered only on the card of a model trained with
int8 activations, saved per model in the settings (schema 7), carried by the Load request and
passed to Engine.load by the engine process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app.catalog.catalog import find_model, load_catalog
from app.catalog.installed import list_installed
from app.catalog.inventory import CardState
from app.settings import SCHEMA_VERSION, load_settings, settings_from_dict
from app.ui.model_manager import EXACT_ACTIVATIONS_LABEL, offers_exact_activations
from app.workers.protocol import Load, ProtocolError, decode_request, encode

TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def tiny_bitnet(tmp_path_factory) -> Path:
    """A tiny BitNet b1.58 file (TQ2_0 blocks, a vocabulary the tokenizer reads), from tmac_core.synth."""
    from tmac_core.models import ARCHITECTURES
    from tmac_core.synth import SynthSpec, write_synthetic

    cfg = ARCHITECTURES["bitnet-b1.58"].config(
        dim=256, hidden_dim=512, n_layers=1, n_heads=4, n_kv_heads=2, head_dim=64,
        vocab_size=300, n_ctx_train=128, rope_theta=500000.0, tie_embeddings=True,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("bitnet") / "tiny-bitnet.gguf"
    write_synthetic(path, SynthSpec(cfg, weight_type="tq2_0", seed=3))
    return path


def test_only_an_int8_trained_model_the_user_has_offers_it():
    catalog = load_catalog()
    bitnet, smol = find_model(catalog, "bitnet-b1.58-2b-4t"), find_model(catalog, "smollm2-135m-instruct")
    assert bitnet.config.act_quant == "int8_token" and smol.config.act_quant == "none"
    card = CardState(card_id="x", kind="installed", title="t", subtitle="", model=bitnet, source="/m/x.gguf")
    assert offers_exact_activations(card)
    assert not offers_exact_activations(CardState(card_id="x", kind="catalog", title="t", subtitle="", model=bitnet))
    card.model = smol
    assert not offers_exact_activations(card)


def test_the_setting_is_checked_and_migrated(tmp_path):
    ok = settings_from_dict({"schema_version": SCHEMA_VERSION, "exact_activation_models": ["/m/a.gguf", "default"]})
    assert ok.settings.exact_activation_models == ("/m/a.gguf", "default") and not ok.problems
    for bad in ("/m/a.gguf", [""], [3], {"a": 1}):
        result = settings_from_dict({"schema_version": SCHEMA_VERSION, "exact_activation_models": bad})
        assert result.settings.exact_activation_models == () and "exact_activation_models" in result.problems[0]
    old = tmp_path / "settings.json"
    old.write_text(json.dumps({"schema_version": 6, "theme": "dark"}))
    migrated = load_settings(old)
    assert migrated.settings.exact_activation_models == () and migrated.settings.theme == "dark"
    assert not migrated.problems


def test_the_load_request_carries_it_typed():
    load = Load("/m/x.gguf", None, 512, 2, None, None, exact_activations=True)
    assert decode_request(encode(load)) == load
    document = json.loads(encode(load))
    document["exact_activations"] = "yes"
    with pytest.raises(ProtocolError, match="exact_activations"):
        decode_request(json.dumps(document).encode())


@pytest.mark.engine
def test_the_engine_process_loads_with_it(tiny_bitnet, tmp_path):
    from app.workers.engine_host import EngineHost

    class Pipe:
        def __init__(self):
            self.sent = []

        def send_bytes(self, data):
            self.sent.append(data)

    for exact in (True, False):
        host = EngineHost(Pipe(), None)
        host.load(Load(str(tiny_bitnet), None, 32, 1, str(tmp_path), None, exact_activations=exact))
        assert host.engine is not None, host.conn.sent
        try:
            assert host.engine.exact_activations is exact
        finally:
            host.engine.close()


def test_the_card_shows_and_saves_it_for_a_native_ternary_file(
    qtbot, make_page, models_page_paths, tiny_bitnet, tmp_path
):
    source = tmp_path / "drop" / "tiny-bitnet.gguf"
    source.parent.mkdir()
    shutil.copy(tiny_bitnet, source)
    page = make_page()
    assert page.card("bitnet-b1.58-2b-4t").exact_check.isHidden()  # not downloaded: nothing to load yet
    page.import_files([str(source)])
    qtbot.waitUntil(lambda: bool(list_installed(models_page_paths.models_dir)), timeout=TIMEOUT_MS)
    [entry] = list_installed(models_page_paths.models_dir)
    qtbot.waitUntil(
        lambda: entry.key in page.cards and page.card(entry.key).state.model is not None, timeout=TIMEOUT_MS
    )
    card = page.card(entry.key)
    check = card.exact_check
    assert not check.isHidden() and check.text() == EXACT_ACTIVATIONS_LABEL and not check.isChecked()
    check.click()
    assert page.settings.exact_activation_models == (card.state.source,)
    again = make_page(page.settings)  # a later page shows the saved choice
    qtbot.waitUntil(
        lambda: entry.key in again.cards and again.card(entry.key).state.model is not None, timeout=TIMEOUT_MS
    )
    assert again.card(entry.key).exact_check.isChecked()
    check.click()
    assert page.settings.exact_activation_models == ()
