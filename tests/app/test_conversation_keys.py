"""The chat list from the keyboard: Delete removes the focused chat (with Undo), not while renaming."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QLineEdit  # noqa: E402

from app.chat.store import ChatStore  # noqa: E402
from app.ui.conversation_list import ID_ROLE, ConversationList  # noqa: E402


@pytest.fixture
def chat_list(qtbot, tmp_path):
    store = ChatStore(tmp_path / "chats.db")
    first = store.create_conversation("First")
    second = store.create_conversation("Second")
    widget = ConversationList(store)
    qtbot.addWidget(widget)
    widget.set_current(second.id)
    widget.show()
    qtbot.waitExposed(widget)
    yield widget, store, first, second
    store.close()


@pytest.mark.parametrize("key", [Qt.Key.Key_Delete, Qt.Key.Key_Backspace])
def test_delete_key_deletes_the_focused_chat_with_undo(qtbot, chat_list, key):
    widget, store, first, second = chat_list
    row = next(r for r in range(widget.list.count()) if widget.list.item(r).data(ID_ROLE) == first.id)
    widget.list.setCurrentRow(row)
    widget.list.setFocus()
    qtbot.waitUntil(widget.list.hasFocus, timeout=2000)
    with qtbot.waitSignal(widget.conversationDeleted, timeout=2000) as deleted:
        qtbot.keyClick(widget.list, key)
    assert deleted.args == [first.id]
    assert [c.id for c in store.list_conversations()] == [second.id]
    assert widget.undo_bar.isVisible()
    widget.undo_delete()
    assert {c.id for c in store.list_conversations()} == {first.id, second.id}


def test_delete_while_renaming_edits_the_title_instead(qtbot, chat_list):
    widget, store, _first, second = chat_list
    widget.begin_rename()
    editor = widget.list.findChild(QLineEdit)
    qtbot.waitUntil(lambda: editor is not None and editor.hasFocus(), timeout=2000)
    editor.selectAll()
    qtbot.keyClick(editor, Qt.Key.Key_Delete)
    assert editor.text() == ""
    assert {c.id for c in store.list_conversations()} >= {second.id}


def test_export_opens_in_documents_and_says_where_it_wrote(qtbot, chat_list, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    widget, _store, _first, second = chat_list
    offered = []

    def choose(_parent, _caption, start, _filters):
        offered.append(start)
        return str(tmp_path / "exported"), "JSON with stats (*.json)"

    monkeypatch.setattr(QFileDialog, "getSaveFileName", choose)
    monkeypatch.chdir(tmp_path / "..")
    widget.export_with_dialog()
    assert (tmp_path / "exported.json").is_file()
    assert widget.notice_bar.isVisible() and "exported.json" in widget.notice_label.text()
    assert widget.show_folder_button.isVisible() and widget.notice_folder == tmp_path
    assert not offered[0].startswith(str(tmp_path.parent) + "/Second"), "not the working directory"
    assert offered[0].endswith("Second.md")
    widget.export_with_dialog()
    assert offered[1] == str(tmp_path / "Second.md"), "the next export starts where the last one went"


def test_a_failed_export_says_so(qtbot, chat_list, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    widget, *_ = chat_list
    monkeypatch.setattr(
        QFileDialog,
        "getSaveFileName",
        lambda *a: (str(tmp_path / "no" / "such" / "folder" / "x.md"), "Markdown (*.md)"),
    )
    widget.export_with_dialog()
    assert widget.notice_bar.isVisible() and "Could not export" in widget.notice_label.text()
    assert not widget.show_folder_button.isVisible()


def test_a_failing_history_is_reported_on_the_list_not_raised(qtbot, chat_list, monkeypatch):
    from app.chat.errors import DatabaseBusyError

    widget, store, first, _second = chat_list

    def busy(*_args, **_kwargs):
        raise DatabaseBusyError("chats.db", "database is locked")

    for name in ("delete_conversation", "rename_conversation", "search"):
        monkeypatch.setattr(store, name, busy)
    widget.delete(first.id)
    assert widget.notice_bar.isVisible() and "Could not delete" in widget.notice_label.text()
    widget.rename(first.id, "New title")
    assert "Could not rename" in widget.notice_label.text()
    widget.search_box.setText("egg")
    widget.refresh()
    assert "Could not read the chat history" in widget.notice_label.text()
