"""The model manager page, driven like a user would, against the fake Hub through the real
huggingface_hub client: downloads (verified, resumed, corrupted, refused), messages for
not found / gated / offline / disk full, import by drag and drop, delete, models folder."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import QMessageBox

from app import hardware
from app.catalog import installed
from app.catalog.download import partial_path
from app.catalog.installed import list_installed
from app.catalog.inventory import CardState
from app.settings import AppSettings, load_settings
from app.ui.model_manager import ModelCard
from tests.runtime.conftest import tiny_llama

SMOL_ID, SMOL_REPO, SMOL_FILE = (
    "smollm2-135m-instruct",
    "bartowski/SmolLM2-135M-Instruct-GGUF",
    "SmolLM2-135M-Instruct-Q8_0.gguf",
)
LLAMA_ID, LLAMA_REPO, LLAMA_FILE = (
    "llama-3.2-1b-instruct",
    "bartowski/Llama-3.2-1B-Instruct-GGUF",
    "Llama-3.2-1B-Instruct-Q8_0.gguf",
)
DATA = b"GGUF" + random.Random(11).randbytes(300_000)
SHA = hashlib.sha256(DATA).hexdigest()
TIMEOUT_MS = 15_000


@pytest.fixture
def paths(models_page_paths):
    return models_page_paths


def serve_smol(hub):
    hub.add_repo(SMOL_REPO, {SMOL_FILE: DATA, "README.md": b"# smol\n"})
    return hub.faults(SMOL_REPO, SMOL_FILE)


def body_requests(hub):
    return [r for r in hub.requests("GET") if "/resolve/" in r.path]


def wait_idle(qtbot, page, card_id):
    qtbot.waitUntil(lambda: card_id not in page._jobs, timeout=TIMEOUT_MS)


def test_download_is_verified_listed_and_usable(qtbot, fake_hub, make_page, paths):
    serve_smol(fake_hub)
    page = make_page()
    card = page.card(SMOL_ID)
    assert card.download_button.isVisible() is False or card.download_button.text() == "Download"
    assert "Not downloaded" in card.status_label.text()
    assert "4-bit:" in card.estimate_labels[4].text() and "tokens/s (estimate)" in card.estimate_labels[2].text()
    card.download_button.click()
    wait_idle(qtbot, page, SMOL_ID)
    assert card.state.installed is not None, card.message_label.text()
    assert f"sha256 {SHA[:12]}" in card.status_label.text() and "verified" in card.status_label.text()
    [entry] = list_installed(paths.models_dir)
    assert entry.key == f"{SMOL_REPO}/{SMOL_FILE}" and entry.path.read_bytes() == DATA
    card.bits_buttons[2].click()
    with qtbot.waitSignal(page.modelChosen) as chosen:
        card.use_button.click()
    assert chosen.args == [str(entry.path), 2]


def test_dropped_connection_resumes_after_restart(qtbot, fake_hub, make_page, paths):
    faults = serve_smol(fake_hub)
    faults.drop_after_bytes, faults.drops_remaining = 100_000, None
    page = make_page()
    page.download_retries = 0
    page.card(SMOL_ID).download_button.click()
    wait_idle(qtbot, page, SMOL_ID)
    card = page.card(SMOL_ID)
    assert "interrupted" in card.message_label.text() and "resume" in card.message_label.text()
    kept = partial_path(paths.models_dir, SHA).stat().st_size
    assert 0 < kept < len(DATA) and list_installed(paths.models_dir) == []
    page.shutdown()
    page.close()

    # "Restart": a new page finds the partial file and offers to resume it.
    faults.drop_after_bytes = None
    page = make_page()
    card = page.card(SMOL_ID)
    assert card.download_button.text() == "Resume" and "Paused at" in card.status_label.text()
    assert card.progress_bar.value() == int(1000 * kept / len(DATA))
    card.download_button.click()
    wait_idle(qtbot, page, SMOL_ID)
    assert card.state.installed is not None and card.state.installed.path.read_bytes() == DATA
    last = body_requests(fake_hub)[-1]
    assert last.range == f"bytes={kept}-" and last.body_bytes == len(DATA) - kept


def test_discarding_a_partial_download_starts_over(qtbot, fake_hub, make_page, paths):
    faults = serve_smol(fake_hub)
    faults.drop_after_bytes, faults.drops_remaining = 50_000, 1
    page = make_page()
    page.download_retries = 0
    card = page.card(SMOL_ID)
    card.download_button.click()
    wait_idle(qtbot, page, SMOL_ID)
    assert partial_path(paths.models_dir, SHA).exists() and card.discard_button.isVisibleTo(page)
    card.discard_button.click()
    assert not partial_path(paths.models_dir, SHA).exists()
    assert not partial_path(paths.models_dir, SHA).with_suffix(".json").exists()
    assert card.download_button.text() == "Download" and not card.discard_button.isVisibleTo(page)
    card.download_button.click()
    wait_idle(qtbot, page, SMOL_ID)
    assert card.state.installed is not None and body_requests(fake_hub)[-1].range is None


def test_cancel_keeps_bytes_and_resume_finishes(qtbot, fake_hub, make_page, paths):
    faults = serve_smol(fake_hub)
    faults.seconds_per_chunk = 0.2  # ~4 s for the 19 chunks: a busy machine still clicks Cancel mid-way
    page = make_page()
    card = page.card(SMOL_ID)
    card.download_button.click()
    qtbot.waitUntil(lambda: "Downloading:" in card.status_label.text(), timeout=TIMEOUT_MS)
    assert card.cancel_button.isVisibleTo(page) and " of " in card.status_label.text()
    assert "/s" in card.status_label.text() and "left" in card.status_label.text()
    card.cancel_button.click()
    wait_idle(qtbot, page, SMOL_ID)
    assert "Paused at" in card.status_label.text() and card.download_button.text() == "Resume"
    assert list_installed(paths.models_dir) == []
    faults.seconds_per_chunk = 0.0
    card.download_button.click()
    wait_idle(qtbot, page, SMOL_ID)
    assert card.state.installed is not None


def test_corrupted_same_size_body_is_rejected(qtbot, fake_hub, make_page, paths):
    serve_smol(fake_hub).corrupt_body = True
    page = make_page()
    page.card(SMOL_ID).download_button.click()
    wait_idle(qtbot, page, SMOL_ID)
    card = page.card(SMOL_ID)
    assert "damaged" in card.message_label.text() and card.message_label.isVisibleTo(page)
    assert card.state.installed is None and list_installed(paths.models_dir) == []
    assert not partial_path(paths.models_dir, SHA).exists()
    assert card.download_button.text() == "Download"


def test_missing_file_says_not_found(qtbot, fake_hub, make_page):
    page = make_page()  # the fake Hub has no such repo
    page.card(SMOL_ID).download_button.click()
    wait_idle(qtbot, page, SMOL_ID)
    assert "was not found" in page.card(SMOL_ID).message_label.text()


def test_gated_model_asks_for_a_token_saves_it_and_retries(qtbot, fake_hub, make_page, paths):
    fake_hub.add_repo(LLAMA_REPO, {LLAMA_FILE: DATA}, gated=True)
    page = make_page()
    card = page.card(LLAMA_ID)
    card.download_button.click()
    wait_idle(qtbot, page, LLAMA_ID)
    assert "token" in card.message_label.text() and "license" in card.message_label.text()
    assert card.token_row.isVisibleTo(page) and card.state.installed is None
    card.token_edit.setText(fake_hub.valid_token)
    changed = []
    page.settings_store.subscribe(lambda settings, _names: changed.append(settings))
    card.save_token_button.click()
    assert changed[-1].hf_token == fake_hub.valid_token
    page.settings_store.flush()
    assert load_settings(paths.settings_file).settings.hf_token == fake_hub.valid_token
    wait_idle(qtbot, page, LLAMA_ID)
    assert card.state.installed is not None and not card.token_row.isVisibleTo(page)
    assert any(r.authorized for r in body_requests(fake_hub))


def test_unreachable_hub_says_offline(qtbot, fake_hub, make_page):
    serve_smol(fake_hub)
    fake_hub.stop()
    page = make_page()
    page.card(SMOL_ID).download_button.click()
    wait_idle(qtbot, page, SMOL_ID)
    assert "offline" in page.card(SMOL_ID).message_label.text()


def test_offline_mode_setting_makes_no_request(qtbot, fake_hub, make_page):
    serve_smol(fake_hub)
    page = make_page(
        AppSettings(offline_mode=True, memory_bandwidth=20e9, memory_bandwidth_cpu=hardware.cpu_model_name())
    )
    page.card(SMOL_ID).download_button.click()
    assert "Offline mode is on" in page.card(SMOL_ID).message_label.text()
    qtbot.wait(100)
    assert fake_hub.log == []


def test_disk_full_is_refused_before_any_request(qtbot, fake_hub, make_page, monkeypatch, paths):
    serve_smol(fake_hub)
    monkeypatch.setattr(installed, "free_disk_bytes", lambda folder: 1000)
    page = make_page()
    page.card(SMOL_ID).download_button.click()
    wait_idle(qtbot, page, SMOL_ID)
    text = page.card(SMOL_ID).message_label.text()
    assert "Not enough disk space" in text and "0.00 GB free" in text
    assert fake_hub.log == [] and list_installed(paths.models_dir) == []


def drop_files(page, files):
    """Deliver drag-enter and drop through QWidget.event (QApplication.notify routes drops only
    while a real drag is in progress, which an offscreen test cannot start)."""
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(f)) for f in files])
    enter = QDragEnterEvent(
        QPoint(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    )
    assert page.event(enter) and enter.isAccepted()
    drop = QDropEvent(
        QPointF(10, 10), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier
    )
    assert page.event(drop) and drop.isAccepted()


def write_tiny_gguf(folder: Path, name="tiny.gguf") -> Path:
    data, _ = tiny_llama().build()
    path = folder / name
    path.write_bytes(data)
    return path


def test_import_by_drop_checks_copies_lists_and_deletes(qtbot, make_page, paths, tmp_path):
    source = write_tiny_gguf(tmp_path)
    page = make_page()
    drop_files(page, [source])
    qtbot.waitUntil(lambda: "local/tiny.gguf" in page.cards, timeout=TIMEOUT_MS)
    assert "Imported tiny.gguf" in page.notice_label.text() and "llama" in page.notice_label.text()
    card = page.card("local/tiny.gguf")
    qtbot.waitUntil(lambda: card.state.model is not None, timeout=TIMEOUT_MS)
    assert "tiny test model" in card.title_label.text() and "2-bit:" in card.estimate_labels[2].text()
    copy = paths.models_dir / "local" / "tiny.gguf"
    assert copy.read_bytes() == source.read_bytes()
    with qtbot.waitSignal(page.modelChosen) as chosen:
        card.use_button.click()
    assert chosen.args == [str(copy), None]  # a quantized file runs as in the file by default

    # Delete asks first; Cancel keeps it, Yes removes it.
    card.delete_button.click()
    box = page.findChild(QMessageBox, "confirmDelete")
    box.button(QMessageBox.StandardButton.Cancel).click()
    assert copy.exists() and "local/tiny.gguf" in page.cards
    card.delete_button.click()
    box = [b for b in page.findChildren(QMessageBox, "confirmDelete") if b.isVisible()][0]
    box.button(QMessageBox.StandardButton.Yes).click()
    qtbot.waitUntil(lambda: "local/tiny.gguf" not in page.cards, timeout=TIMEOUT_MS)
    assert not copy.exists() and source.exists() and list_installed(paths.models_dir) == []


@pytest.mark.parametrize(
    "damage, expected",
    [
        (lambda data: data[: len(data) // 2], "tensor"),  # truncated: the tensor data is missing
        (lambda data: b"NOPE" + data[4:], "not a GGUF"),  # wrong magic
    ],
)
def test_import_of_a_bad_file_shows_the_specific_error(qtbot, make_page, paths, tmp_path, damage, expected):
    good = write_tiny_gguf(tmp_path, "good.gguf").read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(damage(good))
    page = make_page()
    page.import_files([str(bad)])
    qtbot.waitUntil(lambda: page.notice_label.text().startswith("Could not import bad.gguf"), timeout=TIMEOUT_MS)
    # A plain sentence, styled as an error; the reader's specific finding is behind "Details".
    assert "not a model this app can read" in page.notice_label.text() and page.notice.level == "error"
    assert expected in page.notice.details_label.text() and page.notice.details_button.isVisibleTo(page)
    assert not page.notice.details_label.isVisibleTo(page)
    page.notice.details_button.click()
    assert page.notice.details_label.isVisibleTo(page)
    for internal in ("magic", "offset", "tensor_info", "b'"):
        assert internal not in page.notice_label.text()
    assert list_installed(paths.models_dir) == [] and not any(k.startswith("local/") for k in page.cards)
    assert page.import_button.isEnabled()


def test_models_folder_setting(qtbot, make_page, paths, tmp_path):
    page = make_page()
    other = tmp_path / "elsewhere" / "models"
    assert page.set_models_dir(str(other))
    assert page.models_dir == other.resolve() and other.is_dir()
    page.settings_store.flush()
    assert load_settings(paths.settings_file).settings.models_dir == str(other.resolve())
    assert str(other.resolve()) in page.folder_label.text()
    page.import_files([str(write_tiny_gguf(tmp_path))])
    qtbot.waitUntil(lambda: "local/tiny.gguf" in page.cards, timeout=TIMEOUT_MS)
    assert (other / "local" / "tiny.gguf").exists() and not (paths.models_dir / "local").exists()
    assert page.set_models_dir(None) and "local/tiny.gguf" not in page.cards


def test_embedded_model_is_always_there_and_used_as_default(qtbot, make_page):
    page = make_page(AppSettings(default_bits=2, memory_bandwidth=20e9, memory_bandwidth_cpu=hardware.cpu_model_name()))
    card = page.card("default")
    assert card.status_label.text() == "Installed" and not card.delete_button.isVisibleTo(page)
    assert card.bits == 2
    with qtbot.waitSignal(page.modelChosen) as chosen:
        card.use_button.click()
    assert chosen.args == ["default", 2]


def test_two_bit_on_a_small_model_warns_on_its_card_but_is_allowed(qtbot, make_page):
    page = make_page()
    card = page.card("default")  # the embedded SmolLM2-135M: perplexity ~670 at 2 bits
    qtbot.waitUntil(lambda: card.state.model is not None, timeout=TIMEOUT_MS)  # its file read
    warning = card.bits_warning_label
    assert card.bits is None and not warning.isVisibleTo(page)  # as in the file, the default
    card.bits_buttons[2].click()
    assert warning.isVisibleTo(page) and "135M parameters" in warning.text() and "Use 4-bit" in warning.text()
    assert warning.accessibleName() and "nonsense" in card.bits_buttons[2].accessibleDescription()
    with qtbot.waitSignal(page.modelChosen) as chosen:
        card.use_button.click()
    assert chosen.args == ["default", 2]
    card.bits_buttons[4].click()
    assert not warning.isVisibleTo(page)


def test_two_bit_warning_follows_the_parameter_count(qtbot, make_page):
    page = make_page(AppSettings(default_bits=2, memory_bandwidth=20e9, memory_bandwidth_cpu=hardware.cpu_model_name()))
    for card_id in (LLAMA_ID, "tinyllama-1.1b-chat", "smollm2-1.7b-instruct"):  # 1B and more: fine at 2 bits
        card = page.card(card_id)
        assert card.bits == 2 and not card.bits_warning_label.isVisibleTo(page), card_id
    qwen = page.card("qwen2.5-0.5b-instruct")
    assert qwen.bits_warning_label.isVisibleTo(page) and "494M parameters" in qwen.bits_warning_label.text()


def test_two_bit_warning_on_a_local_file_waits_for_its_size(qtbot, make_page, paths, tmp_path):
    page = make_page(AppSettings(default_bits=2, memory_bandwidth=20e9, memory_bandwidth_cpu=hardware.cpu_model_name()))
    page.import_files([str(write_tiny_gguf(tmp_path))])
    qtbot.waitUntil(lambda: "local/tiny.gguf" in page.cards, timeout=TIMEOUT_MS)
    card = page.card("local/tiny.gguf")
    qtbot.waitUntil(lambda: card.state.model is not None, timeout=TIMEOUT_MS)
    parameters = card.state.model.parameters  # read from the file: the tiny test model's ~60 thousand
    assert parameters < 1e6 and card.bits_warning_label.isVisibleTo(page)
    assert f"{parameters / 1e3:.0f}k parameters" in card.bits_warning_label.text()

    # Until the file is read (or if it cannot be) the size is unknown, and unknown warns of nothing.
    unread = ModelCard(CardState("local/x.gguf", "local", "x.gguf", "", None), default_bits=2)
    qtbot.addWidget(unread)
    assert unread.bits == 2 and unread.bits_warning_label.text() == "" and unread.bits_warning_label.isHidden()


def test_bandwidth_is_measured_once_and_cached_in_settings(qtbot, make_page, paths):
    page = make_page(AppSettings())
    assert "speed: measuring" in page.card(SMOL_ID).estimate_labels[4].text()
    qtbot.waitUntil(lambda: page.settings.memory_bandwidth is not None, timeout=TIMEOUT_MS)
    page.settings_store.flush()
    saved = load_settings(paths.settings_file).settings
    assert saved.memory_bandwidth > 1e8 and saved.memory_bandwidth_cpu == hardware.cpu_model_name()
    assert "tokens/s (estimate)" in page.card(SMOL_ID).estimate_labels[4].text()
    assert "GB/s" in page.bandwidth_label.text()
    second = make_page(saved)  # cached: no new measurement, estimates at once
    assert "tokens/s (estimate)" in second.card(SMOL_ID).estimate_labels[4].text()
    assert not second._bandwidth_measuring
    # A 2-bit variant reads fewer bytes per token than the 4-bit one, so its estimate is faster.
    four = float(second.card(SMOL_ID).estimate_labels[4].text().split("≈ ")[-1].split(" tokens")[0])
    two = float(second.card(SMOL_ID).estimate_labels[2].text().split("≈ ")[-1].split(" tokens")[0])
    assert two > four > 0
