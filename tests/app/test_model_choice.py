"""Qt-free rules behind the Models page's usability: quality hints from the measured perplexities,
the recommended first download, stable card order, safe model switching, duplicate imports,
plain-language errors and where the Hugging Face token is kept."""

from __future__ import annotations

import re
from pathlib import Path

import keyring.backend
import keyring.errors
import pytest

import app.catalog.errors as catalog_errors
import tmac_core.errors as core_errors
from app.catalog.catalog import ModelVariant, estimate_variant, load_catalog
from app.catalog.installed import InstalledModel
from app.catalog.inventory import (
    EMBEDDED_ID,
    LOCAL,
    PERPLEXITY_2BIT,
    PERPLEXITY_4BIT,
    PERPLEXITY_FLOAT,
    RECOMMEND_MIN_TOK_S,
    TWO_BIT_MIN_PARAMETERS,
    ModelSwitch,
    find_duplicate,
    merge_inventory,
    quality_hint,
    recommend_download,
    two_bit_recommended,
)
from app.catalog.messages import GENERIC, SENTENCES, explain, explain_error
from app.catalog.token_store import load_token, migrate_token, save_token, system_keyring
from app.settings import AppSettings
from app.settings_store import SettingsStore
from app.workers import protocol

BENCHMARKS = Path(__file__).resolve().parents[2] / "docs" / "BENCHMARKS.md"


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


# ---- quality hints ------------------------------------------------------------------------------


def test_quality_figures_are_the_measured_ones_in_benchmarks_md():
    """The hints quote docs/BENCHMARKS.md; if the table is re-measured, the constants must follow."""
    text = BENCHMARKS.read_text(encoding="utf-8")
    table = text[text.index("### Quality: SmolLM2-135M perplexity") :]
    rows = {
        m.group(1).strip(): float(m.group(2)) for m in re.finditer(r"^\| ([^|]+) \| [^|]+ \| ([\d.]+) \|", table, re.M)
    }
    assert rows["float (Q4_1 dequantized)"] == PERPLEXITY_FLOAT
    assert rows["ours 4-bit"] == PERPLEXITY_4BIT
    assert rows["ours 2-bit preset"] == PERPLEXITY_2BIT


def test_each_variant_has_a_quality_hint_and_2_bit_is_not_recommended_below_a_billion():
    assert quality_hint(4, 135_000_000).startswith("4-bit: close to the original") and "+0.22%" in quality_hint(4, None)
    small = quality_hint(2, 494_000_000)
    assert small.startswith("2-bit: much worse below ~1B") and "128" in small and "not recommended" in small
    large = quality_hint(2, TWO_BIT_MIN_PARAMETERS)
    assert "not measured" in large and "not recommended" not in large  # no invented figure for big models
    assert not two_bit_recommended(999_999_999) and two_bit_recommended(TWO_BIT_MIN_PARAMETERS)
    assert two_bit_recommended(None)  # unknown size: no claim either way


# ---- the recommended first download -------------------------------------------------------------


def test_the_recommendation_is_the_largest_model_that_fits_half_the_ram_at_reading_speed(catalog):
    for ram, bandwidth in ((2e9, 5e9), (4e9, 10e9), (8e9, 20e9), (64e9, 80e9)):
        pick = recommend_download(catalog, total_ram=int(ram), bandwidth_bytes_per_s=bandwidth)
        assert pick is not None and pick.fits and pick.bits == 4 and not pick.model.gated
        assert pick.ram_bytes <= ram / 2 and pick.decode_tokens_per_s >= RECOMMEND_MIN_TOK_S
        for other in catalog:  # nothing larger would also have fitted
            if other.gated or other.parameters <= pick.model.parameters or 4 not in other.bits:
                continue  # a native model has no 4-bit variant to recommend
            e = estimate_variant(ModelVariant(other, 4), bandwidth_bytes_per_s=bandwidth)
            assert e.ram_bytes > ram / 2 or e.decode_tokens_per_s < RECOMMEND_MIN_TOK_S, other.id
    more = recommend_download(catalog, total_ram=int(64e9), bandwidth_bytes_per_s=80e9)
    less = recommend_download(catalog, total_ram=int(2e9), bandwidth_bytes_per_s=5e9)
    assert more.model.parameters > less.model.parameters


def test_a_machine_too_small_for_everything_gets_the_smallest_model_marked_as_such(catalog):
    pick = recommend_download(catalog, total_ram=100_000_000, bandwidth_bytes_per_s=1e8)
    assert pick is not None and not pick.fits
    assert pick.model.parameters == min(m.parameters for m in catalog if not m.gated)
    assert recommend_download([], total_ram=None, bandwidth_bytes_per_s=20e9) is None


# ---- the inventory ------------------------------------------------------------------------------


def entry(key: str, *, size: int = 1000, sha: str = "ab" * 32, source: str = "import-copy") -> InstalledModel:
    path = Path("/models") / key
    return InstalledModel(key, path, size, sha, source, None, Path(key).name, None, 0.0, path.with_suffix(".json"))


def test_the_built_in_card_says_built_in_not_where_the_file_is(catalog, tmp_path):
    embedded = tmp_path / "site-packages" / "tmac_chat" / "SmolLM2.gguf"
    embedded.parent.mkdir(parents=True)
    embedded.write_bytes(b"GGUF" + bytes(10))
    state = merge_inventory(catalog, [], {}, embedded)[0]
    assert state.subtitle.startswith("Built into the app") and str(tmp_path) not in state.subtitle
    assert "site-packages" not in state.subtitle and "SmolLM2.gguf" not in state.subtitle


def test_my_models_come_after_the_catalog_in_a_stable_order(catalog):
    files = [entry("local/b.gguf"), entry("local/a.gguf"), entry("x/y/c.gguf", source="hub")]
    forward = [s.card_id for s in merge_inventory(catalog, files, {}, None)]
    backward = [s.card_id for s in merge_inventory(catalog, files[::-1], {}, None)]
    assert forward == backward  # the listing order does not move cards
    assert forward[: 1 + len(catalog)] == [EMBEDDED_ID] + [m.id for m in catalog]
    assert forward[-3:] == ["local/a.gguf", "local/b.gguf", "x/y/c.gguf"]
    assert all(s.kind == LOCAL for s in merge_inventory(catalog, files, {}, None)[-3:])


def test_a_duplicate_is_found_by_content_and_hashed_only_when_a_size_matches():
    installed = [entry("local/a.gguf", size=1000, sha="aa" * 32), entry("local/b.gguf", size=2000, sha="bb" * 32)]
    hashed: list[int] = []

    def sha(value: str):
        return lambda: hashed.append(1) or value

    assert find_duplicate(installed, 3000, sha("cc" * 32)) is None and hashed == []  # no size matches: no read
    assert find_duplicate(installed, 2000, sha("bb" * 32)).key == "local/b.gguf" and len(hashed) == 1
    assert find_duplicate(installed, 2000, sha("dd" * 32)) is None  # same size, other content
    assert find_duplicate([], 2000, sha("bb" * 32)) is None


# ---- switching models safely --------------------------------------------------------------------


def test_a_model_that_fails_to_load_falls_back_to_the_last_good_one_and_is_never_saved():
    switch = ModelSwitch()
    assert switch.request("/m/good.gguf", 4) == ("/m/good.gguf", 4)
    assert switch.loaded() == ("/m/good.gguf", 4)  # loaded: save it
    switch.request("/m/broken.gguf", 2)
    assert switch.failed() == ("/m/good.gguf", 4) and switch.failed_choice == ("/m/broken.gguf", 2)
    switch.request("/m/good.gguf", 4)
    assert switch.loaded() == ("/m/good.gguf", 4) and switch.last_good == ("/m/good.gguf", 4)
    assert switch.loaded() is None  # a restart of the same model: nothing new to save


def test_at_start_up_a_saved_model_that_fails_falls_back_to_the_built_in_one_once():
    switch = ModelSwitch()
    switch.request("/m/deleted.gguf", 4)
    assert switch.failed() == (EMBEDDED_ID, 4)
    switch.request(EMBEDDED_ID, 4)
    assert switch.failed() is None  # the built-in one failing too: no loop
    switch = ModelSwitch()
    switch.request(EMBEDDED_ID, 2)
    assert switch.failed() is None  # the built-in one at 2-bit failing is not retried at 4-bit either
    assert ModelSwitch().failed() is None  # a failure with nothing pending (a restart) changes nothing


def test_a_failed_choice_is_forgotten_once_it_loads():
    switch = ModelSwitch()
    switch.request("/m/a.gguf", 4)
    switch.failed()
    switch.request("/m/a.gguf", 4)
    switch.loaded()
    assert switch.failed_choice is None


# ---- plain-language errors ----------------------------------------------------------------------


def error_classes(module) -> list[type]:
    return [
        c
        for c in vars(module).values()
        if isinstance(c, type) and issubclass(c, Exception) and c.__module__ == module.__name__
    ]


@pytest.mark.parametrize("module", [core_errors, catalog_errors])
def test_every_error_class_has_its_own_plain_sentence(module):
    for cls in error_classes(module):
        assert cls.kind in SENTENCES, f"{cls.__name__}.kind {cls.kind!r} has no plain sentence"


def test_every_protocol_failure_kind_has_a_sentence():
    kinds = [protocol.NOT_READY, protocol.SUPERSEDED, protocol.RESTARTED, protocol.INVALID_ARGUMENT]
    kinds += [protocol.OUT_OF_MEMORY, protocol.OS_ERROR, protocol.INTERNAL, "engine_died"]
    assert all(kind in SENTENCES for kind in kinds)


@pytest.mark.parametrize(
    "kind, technical",
    [
        ("model_format", "not a GGUF file: magic b'Thes'"),
        ("model_format", "tensor_info[0].ne at offset 1234: dimension 0 out of range"),
        ("offline", "Cannot reach Hugging Face: you appear to be offline. (RemoteProtocolError)"),
        ("engine_died", "killed by SIGKILL"),
        ("a_kind_nobody_has_yet", "Traceback (most recent call last): KeyError('x')"),
    ],
)
def test_the_sentence_never_carries_the_internals_the_detail_keeps_them(kind, technical):
    plain = explain(kind, technical)
    assert plain.detail == technical
    for internal in ("magic", "b'", "tensor_info", "offset", "RemoteProtocolError", "SIGKILL", "Traceback", "KeyError"):
        assert internal not in plain.text
    assert plain.text.endswith(".") and plain.text[0].isupper()
    if kind.startswith("a_kind"):
        assert plain.text == GENERIC


def test_explain_error_reads_the_kind_of_a_real_error_from_the_runtime(tmp_path):
    from tmac_core import inspect_model

    bad = tmp_path / "notes.gguf"
    bad.write_bytes(b"These are not weights" * 10)
    with pytest.raises(core_errors.ModelFormatError) as caught:
        inspect_model(bad)
    plain = explain_error(caught.value, subject="Could not import notes.gguf")
    assert plain.kind == "model_format" and plain.text.startswith("Could not import notes.gguf: This file is not")
    assert "magic" in plain.detail or "GGUF" in plain.detail
    assert (
        explain_error(MemoryError()).kind == "out_of_memory" and explain_error(PermissionError("x")).kind == "os_error"
    )


def test_disk_full_keeps_its_own_figures_in_the_sentence(tmp_path):
    error = catalog_errors.DiskFullError(tmp_path, needed=3_000_000_000, free=1_000_000)
    plain = explain_error(error)
    assert "Not enough disk space" in plain.text and "0.00 GB free" in plain.text and plain.detail == ""


# ---- the Hugging Face token ---------------------------------------------------------------------


class MemoryKeyring(keyring.backend.KeyringBackend):
    """An OS password store for the test: the keyring API, kept in a dict."""

    priority = 1  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.passwords: dict[tuple[str, str], str] = {}

    def get_password(self, service, username):
        return self.passwords.get((service, username))

    def set_password(self, service, username, password):
        self.passwords[(service, username)] = password

    def delete_password(self, service, username):
        self.passwords.pop((service, username), None)


class LockedKeyring(MemoryKeyring):
    def set_password(self, service, username, password):
        raise keyring.errors.PasswordSetError("the keyring is locked")


def test_the_token_goes_to_the_keyring_and_a_plain_text_one_is_migrated(tmp_path):
    store = SettingsStore(AppSettings(hf_token="hf_oldplaintext"), tmp_path / "settings.json")
    backend = MemoryKeyring()
    assert migrate_token(store, backend)
    assert store.current.hf_token is None and load_token(store.current, backend) == "hf_oldplaintext"
    store.flush()
    assert "hf_oldplaintext" not in (tmp_path / "settings.json").read_text()
    assert save_token("hf_new", store, backend) and load_token(store.current, backend) == "hf_new"
    assert not migrate_token(store, backend)  # nothing left in plain text


def test_without_a_keyring_the_token_stays_in_settings(tmp_path):
    store = SettingsStore(AppSettings(), tmp_path / "settings.json")
    assert not save_token("hf_plain", store, None) and store.current.hf_token == "hf_plain"
    assert load_token(store.current, None) == "hf_plain" and not migrate_token(store, None)
    locked = LockedKeyring()  # a keyring that refuses: the same fallback, and the token still works
    assert not save_token("hf_other", store, locked) and store.current.hf_token == "hf_other"
    assert not migrate_token(store, locked) and store.current.hf_token == "hf_other"


def test_the_system_keyring_is_none_when_its_backend_cannot_store(monkeypatch):
    import keyring.backends.fail

    monkeypatch.setattr(keyring.core, "_keyring_backend", keyring.backends.fail.Keyring())
    assert system_keyring() is None
    monkeypatch.setattr(keyring.core, "_keyring_backend", MemoryKeyring())
    assert system_keyring() is keyring
