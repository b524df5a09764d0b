"""The Models page as a new user meets it (offscreen Qt, the real catalog and file checks, the fake Hub):
quality hints and the recommendation, plain errors with Details, stable cards, the loaded bit width,
My models, duplicate imports, the gated-model link, the token in the keyring, the download indicator,
clearing the repacked-model cache and a failed load marked on its card."""

from __future__ import annotations

import random

import pytest
from PySide6.QtWidgets import QStatusBar

from app import hardware
from app.catalog.installed import import_local_gguf, list_installed
from app.settings import AppSettings
from app.ui import model_manager
from app.ui.download_indicator import DownloadIndicator
from tests.app.test_built_in_card import wait_built_in
from tests.app.test_model_choice import MemoryKeyring
from tests.app.test_model_manager import LLAMA_FILE, LLAMA_ID, LLAMA_REPO, SMOL_ID, TIMEOUT_MS, write_tiny_gguf

DATA = b"GGUF" + random.Random(5).randbytes(200_000)


@pytest.fixture
def paths(models_page_paths):
    return models_page_paths


def test_built_in_card_says_built_in_and_every_variant_has_a_quality_hint(make_page, qtbot):
    page = make_page()
    built_in = wait_built_in(qtbot, page)
    assert built_in.subtitle_label.text().startswith("Built into the app")
    assert ".venv" not in built_in.subtitle_label.text() and ".gguf" not in built_in.subtitle_label.text()
    for card_id in ("default", SMOL_ID, "qwen2.5-0.5b-instruct"):  # under 1B: 2-bit marked
        card = page.card(card_id)
        assert card.quality_labels[4].text().startswith("4-bit: close to the original"), card_id
        assert "much worse below ~1B" in card.quality_labels[2].text(), card_id
        assert card.bits_buttons[2].text() == "2-bit (not recommended)" and card.bits_buttons[2].isEnabled()
    for card_id in ("smollm2-1.7b-instruct", LLAMA_ID):
        card = page.card(card_id)
        assert card.bits_buttons[2].text() == "2-bit" and "not measured" in card.quality_labels[2].text()


def test_the_recommendation_is_at_the_top_and_names_a_catalog_model(make_page, monkeypatch):
    monkeypatch.setattr(hardware, "total_memory_bytes", lambda: 8_000_000_000)
    page = make_page()
    label = page.recommendation_label
    assert label.isVisibleTo(page) and "Recommended for this computer" in label.text()
    names = [m.name for m in page.catalog if m.name in label.text()]
    assert len(names) == 1 and "4-bit" in label.text() and "8.00 GB" in label.text()
    layout = page.layout()
    assert layout.indexOf(label) == 1  # right under the page title, above the folder and the cards


def test_cards_keep_their_place_when_states_change(make_page, qtbot, paths, tmp_path):
    page = make_page()
    page.show()
    order = [page.cards_layout.itemAt(i).widget() for i in range(page.cards_layout.count() - 1)]
    page.card(SMOL_ID).show_message("Something went wrong.")
    page.set_active_model("default", 4)
    page.refresh()
    assert [page.cards_layout.itemAt(i).widget() for i in range(page.cards_layout.count() - 1)] == order
    # My models: an imported file goes under its own heading after the whole catalog.
    import_local_gguf(paths.models_dir, write_tiny_gguf(tmp_path))
    page.refresh()
    widgets = [page.cards_layout.itemAt(i).widget() for i in range(page.cards_layout.count() - 1)]
    assert widgets[: len(order) - 1] == order[:-1]  # the catalog cards did not move
    heading = page.my_models_label
    assert heading.isVisibleTo(page) and widgets.index(heading) == len(page.catalog) + 1
    assert widgets[widgets.index(heading) + 1] is page.card("local/tiny.gguf")


def test_the_bit_buttons_follow_the_bits_actually_loaded(make_page):
    page = make_page(AppSettings(default_bits=2, memory_bandwidth=20e9, memory_bandwidth_cpu=hardware.cpu_model_name()))
    card = page.card("default")
    assert card.bits == 2
    page.set_active_model("default", 4)  # "Load at 4-bit" in the chat banner
    assert card.bits == 4 and "in use" in card.status_label.text()
    page.set_active_model("default", 2)
    assert card.bits == 2


def test_importing_a_file_already_installed_says_so_and_copies_nothing(make_page, qtbot, paths, tmp_path):
    source = write_tiny_gguf(tmp_path)
    page = make_page()
    page.import_files([str(source)])
    qtbot.waitUntil(lambda: "local/tiny.gguf" in page.cards, timeout=TIMEOUT_MS)
    twin = tmp_path / "copy-of-tiny.gguf"
    twin.write_bytes(source.read_bytes())
    page.import_files([str(twin)])
    qtbot.waitUntil(lambda: "already installed" in page.notice_label.text(), timeout=TIMEOUT_MS)
    assert "tiny.gguf" in page.notice_label.text() and page.notice.level == "info"
    assert [m.key for m in list_installed(paths.models_dir)] == ["local/tiny.gguf"]
    assert page.import_button.isEnabled()


def test_import_errors_look_like_errors_with_details(make_page, qtbot, tmp_path):
    bad = tmp_path / "notes.gguf"
    bad.write_bytes(b"These are my notes, not a model." * 20)
    page = make_page()
    page.import_files([str(bad)])
    qtbot.waitUntil(lambda: page.notice.level == "error", timeout=TIMEOUT_MS)
    assert page.notice_label.text().startswith("Could not import notes.gguf: This file is not a model")
    assert "magic" not in page.notice_label.text() and "b'" not in page.notice_label.text()
    assert page.notice.details_label.text() and page.notice.details_button.isVisibleTo(page)


def test_gated_model_links_to_its_page_and_the_token_goes_to_the_keyring(make_page, qtbot, fake_hub, monkeypatch):
    backend = MemoryKeyring()
    monkeypatch.setattr(model_manager, "system_keyring", lambda: backend)
    fake_hub.add_repo(LLAMA_REPO, {LLAMA_FILE: DATA}, gated=True)
    page = make_page(
        AppSettings(hf_token="hf_plain_old", memory_bandwidth=20e9, memory_bandwidth_cpu=hardware.cpu_model_name())
    )
    assert page.settings.hf_token is None and backend.passwords  # the plain-text token moved to the keyring
    card = page.card(LLAMA_ID)
    card.download_button.click()
    qtbot.waitUntil(lambda: LLAMA_ID not in page._jobs, timeout=TIMEOUT_MS)
    assert f"<a href='https://huggingface.co/{LLAMA_REPO}'>" in card.message_label.text()
    assert card.message_label.openExternalLinks() and card.message.level == "error"
    assert "password store" in card.token_note.text() and card.token_row.isVisibleTo(page)
    card.token_edit.setText(fake_hub.valid_token)
    card.save_token_button.click()
    qtbot.waitUntil(lambda: card.state.installed is not None, timeout=TIMEOUT_MS)
    assert list(backend.passwords.values()) == [fake_hub.valid_token] and page.settings.hf_token is None


def test_without_a_keyring_the_token_note_says_where_it_is_kept(make_page, qtbot, fake_hub, monkeypatch):
    monkeypatch.setattr(model_manager, "system_keyring", lambda: None)
    fake_hub.add_repo(LLAMA_REPO, {LLAMA_FILE: DATA}, gated=True)
    page = make_page()
    page.card(LLAMA_ID).download_button.click()
    qtbot.waitUntil(lambda: LLAMA_ID not in page._jobs, timeout=TIMEOUT_MS)
    assert "plain text" in page.card(LLAMA_ID).token_note.text()


def test_the_status_bar_indicator_follows_downloads(make_page, qtbot, fake_hub):
    repo, name = "bartowski/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct-Q8_0.gguf"
    fake_hub.add_repo(repo, {name: DATA})
    page = make_page()
    bar = QStatusBar()
    qtbot.addWidget(bar)
    shown = []
    indicator = DownloadIndicator.for_page(page, bar, lambda: shown.append(True))
    bar.show()
    events = []
    page.downloadsChanged.connect(lambda *args: events.append(args))
    page.start_download(SMOL_ID)
    assert indicator.isVisibleTo(bar) and "Downloading 1 model" in indicator.label.text()
    qtbot.waitUntil(lambda: SMOL_ID not in page._jobs, timeout=TIMEOUT_MS)
    assert events[0][0] == 1 and events[-1] == (0, 0, 0) and not indicator.isVisibleTo(bar)
    assert any(done == total == len(DATA) for count, done, total in events if count == 1)
    qtbot.mouseClick(indicator, model_manager.Qt.MouseButton.LeftButton)
    assert shown == [True]


def test_clear_cache_deletes_the_repacked_files_and_says_how_much_it_freed(make_page, qtbot, paths, monkeypatch):
    # a folder of this test's own: a live-engine fixture earlier in the session may point
    # TMAC_CACHE_DIR at the cache the other tests share
    monkeypatch.setenv("TMAC_CACHE_DIR", str(paths.cache_dir / "repacked-clear-test"))
    folder = paths.engine_cache_dir
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "abc.tmacw").write_bytes(b"x" * 2_500_000)
    (folder / "keep.txt").write_bytes(b"y")
    page = make_page()
    page.clear_cache_button.click()
    qtbot.waitUntil(lambda: "freed" in page.notice_label.text(), timeout=TIMEOUT_MS)
    assert "2 MB freed" in page.notice_label.text() or "3 MB freed" in page.notice_label.text()
    assert not (folder / "abc.tmacw").exists() and (folder / "keep.txt").exists()
    page.clear_cache_button.click()
    qtbot.waitUntil(lambda: "already empty" in page.notice_label.text(), timeout=TIMEOUT_MS)


def test_a_model_that_failed_to_load_is_marked_on_its_card_until_it_loads(make_page, paths, tmp_path):
    entry = import_local_gguf(paths.models_dir, write_tiny_gguf(tmp_path))
    page = make_page()
    card = page.card(entry.key)
    page.mark_load_failed(str(entry.path), "engine_died", "killed by SIGKILL")
    assert card.message.level == "error" and "stopped unexpectedly" in card.message_label.text()
    assert card.message_label.text().startswith("This model could not be loaded:")
    assert "SIGKILL" not in card.message_label.text() and card.message.details_label.text() == "killed by SIGKILL"
    page.refresh()
    assert card.message.isVisibleTo(page)  # a refresh keeps the mark
    page.set_active_model(str(entry.path), 4)
    assert not card.message.isVisibleTo(page)  # it loaded after all: the mark goes


def test_a_discard_or_delete_the_page_may_not_do_is_shown_on_the_card(make_page, monkeypatch):
    """Discarding a partial download that another window is writing, or deleting a model behind
    a link, raises a typed error from app.catalog; the card says so instead of the slot raising."""
    from app.catalog.errors import DownloadInProgressError, UnsafePathError

    page = make_page()
    card = page.card(SMOL_ID)
    model = card.state.model

    class Partial:
        sha256 = "0" * 64

    def in_another_window(_folder, _sha):
        raise DownloadInProgressError(model.filename, other_process=True)

    monkeypatch.setattr(
        model_manager, "pending_downloads", lambda _folder: {(model.repo_id, model.filename): Partial()}
    )
    monkeypatch.setattr(model_manager, "discard_partial_download", in_another_window)
    page._discard_partial(SMOL_ID)
    assert card.message.text(), "the card explains why nothing was discarded"

    def behind_a_link(_folder, _key):
        raise UnsafePathError(page.models_dir / "link", "is a symbolic link")

    monkeypatch.setattr(model_manager, "delete_installed", behind_a_link)
    page._delete(SMOL_ID, "some/key")
    assert "Could not delete" in card.message.text()
