"""ConversationList: the chats in the sidebar, with New, Rename (in place, F2), Delete (with Undo),
full-text search over titles and messages, and export to Markdown or JSON.

Delete is a soft delete in the store; the Undo bar restores it. Soft-deleted
chats are purged for real a week later (MainWindow does that at start-up).
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QStandardPaths, Qt, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMenu,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from app.chat import export
from app.chat.errors import ChatStoreError
from app.chat.store import ChatStore

ID_ROLE = Qt.ItemDataRole.UserRole
MESSAGE_ROLE = Qt.ItemDataRole.UserRole + 1
UNDO_SECONDS = 10


class ConversationList(QWidget):
    conversationActivated = Signal(int)
    searchHitActivated = Signal(int, int)  # conversation id, message id (0 = title match)
    newRequested = Signal()
    conversationDeleted = Signal(int)

    def __init__(self, store: ChatStore, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("conversationList")
        self.store = store
        self.current_id = 0
        self.deleted_id = 0
        self._refreshing = False
        self.search_box = QLineEdit()
        self.search_box.setObjectName("searchBox")
        self.search_box.setPlaceholderText("Search chats  (Ctrl+F)")
        self.search_box.setAccessibleName("Search chats")
        self.search_box.setClearButtonEnabled(True)
        self._search_timer = QTimer(self, singleShot=True, interval=200)
        self._search_timer.timeout.connect(self.refresh)
        self.search_box.textChanged.connect(lambda _text: self._search_timer.start())
        self.new_button = QPushButton("New chat")
        self.new_button.setObjectName("newChatButton")
        self.new_button.setAccessibleName("New chat")
        self.new_button.setToolTip("New chat (Ctrl+N)")
        self.new_button.clicked.connect(self.newRequested)
        self.list = QListWidget()
        self.list.setObjectName("chatList")
        self.list.setAccessibleName("Chats")
        self.list.setWordWrap(True)
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._show_menu)
        self.list.itemClicked.connect(self._on_item_activated)
        self.list.itemActivated.connect(self._on_item_activated)
        self.list.itemChanged.connect(self._on_item_renamed)
        # Delete (and Backspace, the Mac's delete key) on the focused list deletes the chat under
        # the cursor, with the same Undo bar as the button; not while a title is being edited,
        # since the editor then has the focus.
        for key in (QKeySequence.StandardKey.Delete, QKeySequence(Qt.Key.Key_Backspace)):
            QShortcut(key, self.list, self._delete_current_item, context=Qt.ShortcutContext.WidgetShortcut)
        self.rename_button = self._small_button("Rename", "Rename chat", self.begin_rename)
        self.delete_button = self._small_button("Delete", "Delete chat", lambda: self.delete(self.current_id))
        self.export_button = self._small_button("Export…", "Export chat", self.export_with_dialog)
        self.undo_bar = QFrame()
        self.undo_bar.setObjectName("undoBar")
        self.undo_label = QLabel()
        self.undo_button = QPushButton("Undo")
        self.undo_button.setAccessibleName("Undo delete")
        self.undo_button.clicked.connect(self.undo_delete)
        undo_layout = QHBoxLayout(self.undo_bar)
        undo_layout.setContentsMargins(8, 4, 4, 4)
        undo_layout.addWidget(self.undo_label, 1)
        undo_layout.addWidget(self.undo_button)
        self.undo_bar.hide()
        self._undo_timer = QTimer(self, singleShot=True, interval=UNDO_SECONDS * 1000)
        self._undo_timer.timeout.connect(self.undo_bar.hide)
        self._last_export_folder: Path | None = None
        self.notice_folder: Path | None = None
        self.notice_bar = QFrame()
        self.notice_bar.setObjectName("noticeBar")
        self.notice_label = QLabel()
        self.notice_label.setWordWrap(True)
        self.show_folder_button = QPushButton("Show folder")
        self.show_folder_button.setAccessibleName("Show the export folder")
        self.show_folder_button.clicked.connect(self._open_notice_folder)
        notice_layout = QHBoxLayout(self.notice_bar)
        notice_layout.setContentsMargins(8, 4, 4, 4)
        notice_layout.addWidget(self.notice_label, 1)
        notice_layout.addWidget(self.show_folder_button)
        self.notice_bar.hide()
        self._notice_timer = QTimer(self, singleShot=True, interval=UNDO_SECONDS * 1000)
        self._notice_timer.timeout.connect(self.notice_bar.hide)
        actions = QHBoxLayout()
        for button in (self.rename_button, self.delete_button, self.export_button):
            actions.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 8, 8, 8)
        layout.addWidget(self.new_button)
        layout.addWidget(self.search_box)
        layout.addWidget(self.list, 1)
        layout.addLayout(actions)
        layout.addWidget(self.undo_bar)
        layout.addWidget(self.notice_bar)
        self.refresh()

    def _small_button(self, text: str, accessible: str, slot) -> QPushButton:
        button = QPushButton(text)
        button.setAccessibleName(accessible)
        button.clicked.connect(slot)
        return button

    # ---- listing ------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Rebuild the list: all chats, or the search hits while the search box has text."""
        self._refreshing = True
        self.list.clear()
        query = self.search_box.text().strip()
        try:
            self._fill(query)
        except ChatStoreError as error:
            self.show_notice(f"Could not read the chat history: {error}")
        self._refreshing = False
        has_current = bool(self.current_id)
        for button in (self.rename_button, self.delete_button, self.export_button):
            button.setEnabled(has_current)

    def _fill(self, query: str) -> None:
        if query:
            for hit in self.store.search(query):
                item = QListWidgetItem(f"{hit.conversation_title}\n{hit.snippet}")
                item.setData(ID_ROLE, hit.conversation_id)
                item.setData(MESSAGE_ROLE, hit.message_id or 0)
                item.setToolTip(hit.snippet)
                self.list.addItem(item)
            if not self.list.count():
                item = QListWidgetItem("No chats match.")
                item.setFlags(Qt.ItemFlag.NoItemFlags)
                self.list.addItem(item)
        else:
            for conversation in self.store.list_conversations():
                item = QListWidgetItem(conversation.title)
                item.setData(ID_ROLE, conversation.id)
                item.setData(MESSAGE_ROLE, 0)
                item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
                self.list.addItem(item)
                if conversation.id == self.current_id:
                    item.setSelected(True)
                    self.list.setCurrentItem(item)

    def set_current(self, conversation_id: int) -> None:
        self.current_id = conversation_id
        self.refresh()

    def focus_search(self) -> None:
        self.search_box.setFocus()
        self.search_box.selectAll()

    def _item_for(self, conversation_id: int) -> QListWidgetItem | None:
        for row in range(self.list.count()):
            item = self.list.item(row)
            if item.data(ID_ROLE) == conversation_id and not self.search_box.text().strip():
                return item
        return None

    def _on_item_activated(self, item: QListWidgetItem) -> None:
        conversation_id = item.data(ID_ROLE)
        if not conversation_id:
            return
        if self.search_box.text().strip():
            self.searchHitActivated.emit(conversation_id, item.data(MESSAGE_ROLE) or 0)
        elif conversation_id != self.current_id:
            self.conversationActivated.emit(conversation_id)

    # ---- rename, delete, export ---------------------------------------------------------------

    def begin_rename(self) -> None:
        self.search_box.clear()
        self.refresh()
        item = self._item_for(self.current_id)
        if item is not None:
            self.list.editItem(item)

    def _on_item_renamed(self, item: QListWidgetItem) -> None:
        if self._refreshing or not item.data(ID_ROLE):
            return
        title = " ".join(item.text().split())
        if title:
            self.rename(item.data(ID_ROLE), title)
        else:
            self.refresh()  # an empty title is not a title: put the old one back

    def rename(self, conversation_id: int, title: str) -> None:
        try:
            self.store.rename_conversation(conversation_id, title)
        except ChatStoreError as error:
            self.show_notice(f"Could not rename the chat: {error}")
        self.refresh()

    def delete(self, conversation_id: int) -> None:
        if not conversation_id:
            return
        try:
            title = self.store.get_conversation(conversation_id).title
            self.store.delete_conversation(conversation_id)
        except ChatStoreError as error:
            self.show_notice(f"Could not delete the chat: {error}")
            return
        self.deleted_id = conversation_id
        self.undo_label.setText(f"Deleted “{title}”.")
        self.undo_bar.show()
        self._undo_timer.start()
        self.conversationDeleted.emit(conversation_id)
        self.refresh()

    def _delete_current_item(self) -> None:
        item = self.list.currentItem()
        if item is not None and item.data(ID_ROLE):
            self.delete(item.data(ID_ROLE))

    def undo_delete(self) -> None:
        if self.deleted_id:
            try:
                self.store.restore_conversation(self.deleted_id)
            except ChatStoreError as error:
                self.show_notice(f"Could not restore the chat: {error}")
                return
            restored, self.deleted_id = self.deleted_id, 0
            self.undo_bar.hide()
            self.refresh()
            self.conversationActivated.emit(restored)

    def export_folder(self) -> Path:
        """Where the Export dialog opens: the folder of the last export, else Documents (never
        the process's working directory, which for an installed app is meaningless)."""
        if self._last_export_folder is not None and self._last_export_folder.is_dir():
            return self._last_export_folder
        for location in (
            QStandardPaths.StandardLocation.DocumentsLocation,
            QStandardPaths.StandardLocation.HomeLocation,
        ):
            folder = QStandardPaths.writableLocation(location)
            if folder and Path(folder).is_dir():
                return Path(folder)
        return Path.home()

    def export_with_dialog(self) -> None:
        if not self.current_id:
            return
        try:
            title = self.store.get_conversation(self.current_id).title
        except ChatStoreError as error:
            self.show_notice(f"Could not export the chat: {error}")
            return
        safe = "".join(c if c.isalnum() or c in " -_" else "_" for c in title).strip() or "chat"
        path, chosen = QFileDialog.getSaveFileName(
            self, "Export chat", str(self.export_folder() / f"{safe}.md"), "Markdown (*.md);;JSON with stats (*.json)"
        )
        if not path:
            return
        try:
            written = self.export_to(self.current_id, Path(path), "json" if "json" in chosen.lower() else "markdown")
        except OSError as error:
            self.show_notice(f"Could not export “{title}”: {error.strerror or error}.")
            return
        except ChatStoreError as error:
            self.show_notice(f"Could not export “{title}”: {error}")
            return
        self.show_notice(f"Exported “{title}” to {written.name}.", folder=written.parent)

    def show_notice(self, text: str, folder: Path | None = None) -> None:
        """A line under the list that says what just happened, with "Show folder" after an export."""
        self.notice_label.setText(text)
        self.notice_folder = folder
        self.show_folder_button.setVisible(folder is not None)
        self.notice_bar.show()
        self._notice_timer.start()

    def _open_notice_folder(self) -> None:
        if self.notice_folder is not None:
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.notice_folder)))

    def export_to(self, conversation_id: int, path: Path, fmt: str) -> Path:
        """Write one chat as Markdown or JSON; the suffix is added if missing."""
        path = Path(path)
        suffix = ".json" if fmt == "json" else ".md"
        if path.suffix.lower() != suffix:
            path = path.with_name(path.name + suffix)
        conversation = self.store.get_conversation(conversation_id)
        messages = self.store.list_messages(conversation_id)
        text = export.to_json(conversation, messages) if fmt == "json" else export.to_markdown(conversation, messages)
        path.write_text(text, encoding="utf-8")
        self._last_export_folder = path.parent
        return path

    def _show_menu(self, position) -> None:
        item = self.list.itemAt(position)
        if item is None or not item.data(ID_ROLE):
            return
        conversation_id = item.data(ID_ROLE)
        if conversation_id != self.current_id:
            self.conversationActivated.emit(conversation_id)
        menu = QMenu(self)
        menu.addAction("Rename", self.begin_rename)
        menu.addAction("Export…", self.export_with_dialog)
        menu.addSeparator()
        menu.addAction("Delete", lambda: self.delete(conversation_id))
        menu.exec(self.list.viewport().mapToGlobal(position))
