"""Native low-bit models and model folders on the Models page: catalog schema of the new entries,
a native ternary card with its one labelled choice, cards the runtime cannot load yet, the 2-bit
warning naming a native model, the source mix and the IQ* requantize notice, a model folder
imported by the page and downloaded by a DownloadJob (fake Hub)."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from app.catalog.catalog import (
    NATIVE_FORMATS,
    ModelVariant,
    estimate_variant,
    find_model,
    load_catalog,
    parse_catalog,
)
from app.catalog.errors import CatalogError
from app.catalog.installed import list_installed
from app.catalog.inventory import native_alternative, two_bit_warning
from app.catalog.support import missing_support
from app.ui.model_manager import source_text
from tmac_core.plan import bits_per_weight

BITNET, FALCON = "bitnet-b1.58-2b-4t", "falcon3-1b-instruct-1.58bit"
QAT2, QAT4 = "llama-3-8b-instruct-efficientqat-w2g128", "llama-3-8b-instruct-efficientqat-w4g128"
SMOL = "smollm2-135m-instruct"
DATA = Path(__file__).resolve().parents[1] / "data" / "hf"
TIMEOUT_MS = 15_000


@pytest.fixture
def paths(models_page_paths):
    return models_page_paths


def test_catalog_has_the_native_models_with_their_formats():
    catalog = load_catalog()
    bitnet, falcon, qat2, qat4 = (find_model(catalog, i) for i in (BITNET, FALCON, QAT2, QAT4))
    assert (bitnet.repo_id, bitnet.filename, bitnet.source_quant) == (
        "microsoft/bitnet-b1.58-2B-4T-gguf",
        "ggml-model-i2_s.gguf",
        "I2_S",
    )
    assert bitnet.config.arch == "bitnet-b1.58" and not bitnet.is_folder
    assert falcon.is_folder and falcon.repo_id == "tiiuae/Falcon3-1B-Instruct-1.58bit"
    assert (
        qat2.is_folder and qat4.is_folder and (qat2.source_quant, qat4.source_quant) == ("GPTQ_W2G128", "GPTQ_W4G128")
    )
    assert [m.format_label for m in (bitnet, falcon, qat2, qat4)] == [
        "native ternary",
        "native ternary",
        "native 2-bit",
        "native 4-bit",
    ]
    for model in (bitnet, falcon, qat2, qat4):
        assert model.bits == (None,) and model.size_is_approximate
        [variant] = model.variants()
        assert variant.label == NATIVE_FORMATS[model.native or ""]
    # The estimates come from the plan: BitNet's I2_S blocks run at 2 bits as in the file (its F16 table at 4).
    assert estimate_variant(ModelVariant(bitnet, None)).bits_per_weight == pytest.approx(
        bits_per_weight(bitnet.config, None, _types(bitnet))
    )
    e2, e4 = (estimate_variant(ModelVariant(m, None)) for m in (qat2, qat4))
    assert 2.0 < e2.bits_per_weight < 3.5 < e4.bits_per_weight < 5.0 and e2.packed_bytes < e4.packed_bytes


def _types(model):
    from app.catalog.catalog import source_types

    return source_types(model)


def _document():
    return json.loads(Path("assets/catalog.json").read_text())


@pytest.mark.parametrize(
    "change, message",
    [
        ({"bits": [None, 4]}, "only its own variant"),
        ({"native": "1-bit"}, "native must be"),
        ({"format": "zip"}, "format must be"),
        ({"filename": "model.gguf"}, "folder name"),
        ({"hf_architecture": None}, "hf_architecture"),
        ({"source_quant": "GPTQ_W4G128"}, "GPTQ type"),
        ({"source_quant": "Q2_K"}, "GPTQ type"),
    ],
)
def test_malformed_native_entries_are_refused(change, message):
    document = _document()
    entry = next(e for e in document["models"] if e["id"] == QAT2)
    entry.update(change)
    if change.get("hf_architecture", 0) is None:
        del entry["hf_architecture"]
    with pytest.raises(CatalogError, match=message):
        parse_catalog(document)


def test_support_is_decided_by_the_runtime():
    catalog = load_catalog()
    assert missing_support(find_model(catalog, BITNET)) == ""
    assert missing_support(find_model(catalog, FALCON)) == ""  # a BitNet-packed Llama folder loads
    assert missing_support(find_model(catalog, QAT2)) == missing_support(find_model(catalog, QAT4)) == ""
    llama_folder = dataclasses.replace(find_model(catalog, QAT2), quant_method=None, native=None)
    assert missing_support(llama_folder) == ""  # a plain safetensors Llama folder loads
    awq = dataclasses.replace(find_model(catalog, QAT2), quant_method="awq")
    assert "awq" in missing_support(awq)  # the loader's own refusal, in its words
    unknown = dataclasses.replace(find_model(catalog, QAT2), hf_architecture="MambaForCausalLM")
    assert "MambaForCausalLM" in missing_support(unknown)


def test_two_bit_warning_names_a_native_model():
    catalog = load_catalog()
    alternative = native_alternative(catalog, missing_support)
    # the best native ternary model the runtime loads: BitNet b1.58 2B-4T (2.4 B parameters) over Falcon3 1B
    assert alternative is not None and alternative.id == BITNET
    warning = two_bit_warning(134_515_008, alternative)
    assert "Use 4-bit" in warning and "BitNet b1.58 2B4T" in warning and "native ternary" in warning
    assert two_bit_warning(2_000_000_000, alternative) == ""


def test_the_suggested_native_model_is_the_best_that_fits_the_machine():
    catalog = load_catalog()

    def pick(**machine):
        chosen = native_alternative(catalog, missing_support, **machine)
        return chosen.id if chosen is not None else None

    # 2B-4T as in the file needs ~1.18 GB, Falcon3 1B ~1.02 GB (estimate_variant); at most half the RAM
    assert pick(total_ram=8 << 30, bandwidth_bytes_per_s=20e9) == BITNET
    assert pick(total_ram=int(2.2e9), bandwidth_bytes_per_s=20e9) == FALCON  # only the smaller one fits
    # 20 GB/s: 2B-4T ~17 tok/s, Falcon3 1B ~26; at 9 GB/s only Falcon3 reaches reading speed (8 tok/s)
    assert pick(total_ram=8 << 30, bandwidth_bytes_per_s=9e9) == FALCON
    assert pick(total_ram=1 << 30) == FALCON  # nothing fits: the smallest
    # a model the runtime cannot load is never suggested
    assert pick(total_ram=8 << 30) == BITNET
    no_bitnet = native_alternative(catalog, lambda m: "not yet" if m.id == BITNET else "", total_ram=8 << 30)
    assert no_bitnet is not None and no_bitnet.id == FALCON


def test_native_ternary_card_has_one_labelled_choice_and_unloadable_cards_say_why(make_page):
    page = make_page()
    card = page.card(BITNET)
    assert list(card.bits_buttons) == [None]
    button = card.bits_buttons[None]
    assert button.text() == "native ternary (1.58-bit, as trained)" and button.isChecked()
    assert "native ternary" in card.subtitle_label.text() and "no requantization" in card.subtitle_label.text()
    assert card.estimate_labels[None].text().startswith("<b>native ternary")
    assert "bits/weight" in card.estimate_labels[None].text()
    assert "Source: I2_S" in card.source_label.text()
    assert "Native ternary" in card.quality_labels[None].text()
    assert not card.download_button.isHidden() and "Not downloaded" in card.status_label.text()
    for card_id in (FALCON, QAT2, QAT4):
        qat = page.card(card_id)
        assert not qat.download_button.isHidden() and "model folder" in qat.status_label.text()
    assert page.card(QAT2).bits_buttons[None].text() == "native 2-bit (as trained)"
    assert "native GPTQ w4g128" in page.card(QAT4).source_label.text()
    assert "requantizes" not in page.card(QAT4).source_label.text()


def test_an_unloadable_card_says_why_and_offers_nothing(make_page, monkeypatch):
    """A catalog model the runtime does not read (here: its loader's refusal, simulated for the
    Falcon card, which loads since BitNet-packed Llama folders do) is said, not offered."""
    from app.ui import model_manager

    reason = "this runtime does not read BitNet-packed ternary safetensors yet (its loader says: test)"
    monkeypatch.setattr(model_manager, "missing_support", lambda m: reason if m.id == FALCON else "")
    falcon = make_page().card(FALCON)
    assert falcon.download_button.isHidden() and "Not available yet" in falcon.status_label.text()
    assert "BitNet-packed ternary" in falcon.status_label.text() and falcon.use_button.isHidden()


def test_two_bit_on_a_small_model_points_to_the_native_card(qtbot, make_page):
    page = make_page()
    card = page.card(SMOL)
    card.bits_buttons[2].click()
    alternative = page.alternative  # this machine's best fit (test above): 2B-4T here, Falcon3 1B on 2 GB
    assert alternative is not None and alternative.id in (BITNET, FALCON)
    assert alternative.name in card.bits_warning_label.text()
    assert not card.alternative_button.isHidden() and alternative.name in card.alternative_button.text()
    with qtbot.waitSignal(card.showCard) as shown:
        card.alternative_button.click()
    assert shown.args == [alternative.id]
    card.bits_buttons[4].click()
    assert card.alternative_button.isHidden()


def test_iq_types_are_named_as_requantized_before_loading(make_page):
    smol = find_model(load_catalog(), SMOL)
    from tmac_core.plan import tensor_plan

    types = {s.name: "Q4_K" for s in tensor_plan(smol.config, 4, None)}
    assert "requantizes" not in source_text(dataclasses.replace(smol, tensor_types=types))
    first_ffn = next(name for name in types if name.endswith("ffn_down.weight"))
    types[first_ffn] = "IQ2_XS"
    types["token_embd.weight"] = "F16"
    text = source_text(dataclasses.replace(smol, tensor_types=types, source_quant="Q4_K"))
    assert "Source: Q4_K" in text and "IQ2_XS" in text and "requantizes the IQ2_XS matrices" in text
    assert "F16" not in text.split("requantizes")[1]  # float tables are not a loss worth a warning
    page = make_page()
    card = page.card(SMOL)
    card.state.model = dataclasses.replace(smol, tensor_types=types, source_quant="Q4_K")
    card.update_bits_warning()
    assert "requantizes the IQ2_XS" in card.source_label.text()


def test_a_model_folder_imported_on_the_page_is_listed_and_chosen_by_its_path(qtbot, make_page, paths, tmp_path):
    source = tmp_path / "drop" / "tiny-qwen2"
    shutil.copytree(DATA / "qwen2", source, ignore=shutil.ignore_patterns("reference.npz"))
    (source / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    page = make_page()
    page.import_files([str(source)])
    qtbot.waitUntil(lambda: any(m.is_folder for m in list_installed(paths.models_dir)), timeout=TIMEOUT_MS)
    [entry] = list_installed(paths.models_dir)
    assert not (entry.path / "pytorch_model.bin").exists()
    qtbot.waitUntil(
        lambda: entry.key in page.cards and page.card(entry.key).state.model is not None, timeout=TIMEOUT_MS
    )
    card = page.card(entry.key)
    assert "Imported tiny-qwen2" in page.notice_label.text()
    assert card.source_label.text() == "Source: F16 100 %."  # a float checkpoint: nothing to warn about
    with qtbot.waitSignal(page.modelChosen) as chosen:
        card.use_button.click()
    assert chosen.args == [str(entry.path), 4]
    # The same folder again is recognised, not copied twice.
    page.import_files([str(source)])
    qtbot.waitUntil(lambda: "already installed" in page.notice_label.text(), timeout=TIMEOUT_MS)
    assert len(list_installed(paths.models_dir)) == 1


def test_a_download_job_fetches_a_folder(qtbot, fake_hub, paths):
    from app.workers.download_worker import DownloadJob

    files = {p.name: p.read_bytes() for p in (DATA / "llama").iterdir() if p.name != "reference.npz"}
    fake_hub.add_repo("tiny-org/tiny-llama", {**files, "model.bin": b"\x80\x04"}, git_files=frozenset({"config.json"}))
    job = DownloadJob("tiny-org/tiny-llama", "tiny-llama", paths.models_dir, folder=True, timeout=2)
    with qtbot.waitSignal(job.finished, timeout=TIMEOUT_MS) as done:
        job.start()
    [model] = done.args
    assert model.is_folder and sorted(model.files) == sorted(files)
    from tmac_core import inspect_model

    assert inspect_model(model.path).arch == "llama"


def test_catalog_document_is_unchanged_by_parsing():
    document = _document()
    before = copy.deepcopy(document)
    parse_catalog(document)
    assert document == before


def test_a_catalog_folder_model_downloads_from_its_card_and_is_chosen_by_its_folder(
    qtbot, fake_hub, make_page, paths, monkeypatch
):
    import app.ui.model_manager as page_module

    document = _document()
    entry = next(e for e in document["models"] if e["id"] == QAT2)
    entry.update(
        id="tiny-llama-folder",
        name="Tiny Llama folder",
        repo_id="tiny-org/tiny-llama",
        filename="tiny-llama",
        size_bytes=400_000,
    )
    for key in ("native", "quant_method", "embedding_type"):
        entry.pop(key)
    entry.update(source_quant="F32", bits=[4, 2])
    monkeypatch.setattr(page_module, "load_catalog", lambda: parse_catalog(document))
    files = {p.name: p.read_bytes() for p in (DATA / "llama").iterdir() if p.name != "reference.npz"}
    fake_hub.add_repo("tiny-org/tiny-llama", {**files, "pytorch_model.bin": b"\x80\x04"}, git_files=frozenset())
    page = make_page()
    card = page.card("tiny-llama-folder")
    assert "model folder" in card.status_label.text() and not card.download_button.isHidden()
    card.download_button.click()
    qtbot.waitUntil(lambda: "tiny-llama-folder" not in page._jobs, timeout=TIMEOUT_MS)
    assert card.state.installed is not None and card.state.installed.is_folder, card.message_label.text()
    assert not any("pytorch_model.bin" in r.path for r in fake_hub.requests("GET"))
    with qtbot.waitSignal(page.modelChosen) as chosen:
        card.use_button.click()
    assert chosen.args == [str(card.state.installed.path), 4]
    assert not card.compare_button.isHidden()  # a float folder offers 4 and 2 bits: both can be compared


def test_the_native_ternary_gguf_downloads_and_is_chosen_as_in_the_file(qtbot, fake_hub, make_page):
    data = (Path(__file__).resolve().parents[1] / "data" / "bitnet_tiny" / "model.gguf").read_bytes()
    fake_hub.add_repo("microsoft/bitnet-b1.58-2B-4T-gguf", {"ggml-model-i2_s.gguf": data})
    page = make_page()
    card = page.card(BITNET)
    card.download_button.click()
    qtbot.waitUntil(lambda: BITNET not in page._jobs, timeout=TIMEOUT_MS)
    assert card.state.installed is not None, card.message_label.text()
    assert card.compare_button.isHidden()  # nothing to compare: one variant
    with qtbot.waitSignal(page.modelChosen) as chosen:
        card.use_button.click()
    assert chosen.args == [str(card.state.installed.path), None]


def test_an_imported_gptq_folder_is_a_native_model_with_its_one_variant(qtbot, make_page, paths, tmp_path):
    source = tmp_path / "drop" / "tiny-gptq-w2"
    gptq = Path(__file__).resolve().parents[1] / "data" / "gptq" / "models" / "llama_w2g64_v2"
    shutil.copytree(gptq, source, ignore=shutil.ignore_patterns("reference.npz"))
    page = make_page()
    page.import_files([str(source)])
    qtbot.waitUntil(lambda: bool(list_installed(paths.models_dir)), timeout=TIMEOUT_MS)
    [entry] = list_installed(paths.models_dir)
    qtbot.waitUntil(
        lambda: entry.key in page.cards and page.card(entry.key).state.model is not None, timeout=TIMEOUT_MS
    )
    card = page.card(entry.key)
    assert card.state.model.native == "2-bit"
    assert [b for b, button in card.bits_buttons.items() if not button.isHidden()] == [None]
    assert card.bits_buttons[None].text() == "native 2-bit (as trained)" and card.bits is None
    assert "native GPTQ w2g64" in card.source_label.text() and card.compare_button.isHidden()
    with qtbot.waitSignal(page.modelChosen) as chosen:
        card.use_button.click()
    assert chosen.args == [str(entry.path), None]
