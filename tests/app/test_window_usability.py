"""What a new user hits in the chat window, without an engine: keyboard focus, the mouse wheel, small windows.

The window is built on a private TMAC_CHAT_HOME (tests/app/conftest.py) and never loads
a model; keys and wheel turns go through Qt's real input path (QTest), so a widget
that swallows Tab or a wheel turn fails here.
"""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QPoint, QPointF, Qt  # noqa: E402
from PySide6.QtTest import QTest  # noqa: E402
from PySide6.QtWidgets import (  # noqa: E402
    QAbstractSlider,
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QPlainTextEdit,
    QScrollArea,
    QTextBrowser,
    QTextEdit,
    QWidget,
)

from app.chat.store import ChatStore  # noqa: E402
from app.paths import app_paths  # noqa: E402
from app.settings import AppSettings  # noqa: E402
from app.settings_store import SettingsStore  # noqa: E402
from app.ui.main_window import MainWindow  # noqa: E402


@pytest.fixture
def window(qtbot):
    paths = app_paths().ensure()
    store = ChatStore(paths.chat_db_file)
    win = MainWindow(SettingsStore(AppSettings(top_k=40), paths.settings_file), paths, store)
    qtbot.addWidget(win)
    yield win
    win.close()
    store.close()


def show(qtbot, win: MainWindow, width: int = 1280, height: int = 800) -> None:
    win.resize(width, height)
    win.show()
    qtbot.waitExposed(win)
    win.activateWindow()
    qtbot.waitUntil(win.isActiveWindow, timeout=3000)


def add_conversation(win: MainWindow) -> int:
    conversation = win.store.create_conversation("A chat")
    win.store.add_message(conversation.id, "user", "Write a short poem about the sea, please.")
    win.store.add_message(
        conversation.id,
        "assistant",
        "The sea rolls in with silver light,\nit hums the harbour into night.\n\n"
        + "A longer line of prose that should wrap at the edge of the conversation and never be cut off. " * 4,
    )
    win.session.open_conversation(conversation.id)
    return conversation.id


def press_tab(qtbot, backwards: bool = False) -> QWidget:
    focused = QApplication.focusWidget()
    assert focused is not None
    key = Qt.Key.Key_Backtab if backwards else Qt.Key.Key_Tab
    QTest.keyClick(focused, key, Qt.KeyboardModifier.ShiftModifier if backwards else Qt.KeyboardModifier.NoModifier)
    qtbot.wait(1)
    after = QApplication.focusWidget()
    assert after is not None
    return after


# ---- #2: Tab moves focus out of every text box --------------------------------------------------


def test_tab_walks_through_the_window_and_never_types_a_tab(qtbot, window):
    show(qtbot, window)
    add_conversation(window)
    start = window.composer.prompt
    start.setFocus()
    qtbot.waitUntil(start.hasFocus, timeout=2000)
    visited: list[QWidget] = [start]
    for _ in range(200):
        widget = press_tab(qtbot)
        if widget is start:
            break
        visited.append(widget)
    else:
        pytest.fail(f"Tab never came back to the message box; stuck at {visited[-1].accessibleName()!r}")
    assert window.sampling_panel.system_prompt in visited, "Tab must reach the system prompt"
    assert len(set(map(id, visited))) == len(visited), "Tab order revisits a widget before coming back"
    for box in window.findChildren(QPlainTextEdit) + window.findChildren(QTextEdit):
        assert "\t" not in box.toPlainText(), box.accessibleName()
    assert window.sampling_panel.values()["system_prompt"] == ""


def test_tab_and_shift_tab_leave_the_system_prompt(qtbot, window):
    show(qtbot, window)
    box = window.sampling_panel.system_prompt
    box.setFocus()
    qtbot.waitUntil(box.hasFocus, timeout=2000)
    assert press_tab(qtbot) is not box
    box.setFocus()
    qtbot.waitUntil(box.hasFocus, timeout=2000)
    assert press_tab(qtbot, backwards=True) is not box
    assert box.toPlainText() == ""


def test_every_editable_text_box_hands_on_tab(qtbot, window):
    """The class, not the instances: any multi-line box in the window, also ones made later
    (the edit box of an older message), lets Tab move focus."""
    show(qtbot, window)
    add_conversation(window)
    user = next(w for w in window.chat_view.widgets.values() if w.message.role == "user")
    user.begin_edit()
    qtbot.wait(10)
    boxes = [
        b
        for b in window.findChildren(QPlainTextEdit) + window.findChildren(QTextEdit)
        if not isinstance(b, QTextBrowser) and not b.isReadOnly()
    ]
    assert len(boxes) >= 3  # the message box, the system prompt, the edit box
    for box in boxes:
        assert box.tabChangesFocus(), box.accessibleName()
    edit_box = next(b for b in boxes if b.objectName() == "editBox")
    edit_box.setFocus()
    qtbot.waitUntil(edit_box.hasFocus, timeout=2000)
    after = press_tab(qtbot)
    assert after is not edit_box and after.accessibleName() == "Cancel editing"
    assert "\t" not in edit_box.toPlainText()


def test_a_text_box_made_after_the_window_also_hands_on_tab(qtbot, window):
    show(qtbot, window)
    late = QPlainTextEdit(window.chat_page)
    late.show()
    qtbot.wait(1)
    assert late.tabChangesFocus()


@pytest.mark.parametrize("prompt", ["\t\t\t", "   ", "\n\n \t\n"])
def test_a_blank_system_prompt_is_saved_as_no_prompt(qtbot, window, prompt):
    panel = window.sampling_panel
    conversation_id = add_conversation(window)
    panel.system_prompt.setPlainText(prompt)
    panel.save_now()
    assert window.store.get_conversation(conversation_id).system_prompt == ""
    window.session.open_conversation(0)
    panel.system_prompt.setPlainText(prompt)
    panel.save_now()
    assert window.settings.system_prompt == ""


# ---- #7: the wheel scrolls the panel, not an unfocused setting ----------------------------------


def wheel_over(widget: QWidget, steps: int) -> None:
    """A real (spontaneous) wheel turn at the widget's centre, as the window system sends it."""
    window = widget.window().windowHandle()
    assert window is not None
    centre = widget.mapTo(widget.window(), widget.rect().center())
    QTest.wheelEvent(window, QPointF(centre), QPoint(0, -120 * steps))


def test_the_wheel_over_an_unfocused_top_k_scrolls_the_panel_and_changes_nothing(qtbot, window):
    show(qtbot, window, 1280, 600)  # short enough that the settings panel scrolls
    panel = window.sampling_panel
    scroll = next(a for a in window.findChildren(QScrollArea) if a.widget() is panel)
    bar = scroll.verticalScrollBar()
    assert bar.maximum() > 0, "the settings panel should scroll at this height"
    scroll.ensureWidgetVisible(panel.top_k)
    qtbot.wait(10)
    window.composer.prompt.setFocus()
    before_scroll = bar.value()
    wheel_over(panel.top_k, -2 if before_scroll > 0 else 2)  # towards the end the panel can still scroll to
    qtbot.wait(10)
    assert panel.top_k.value() == 40
    assert window.settings.top_k == 40
    assert bar.value() != before_scroll, "the panel should scroll instead"


def test_a_focused_spin_box_still_takes_the_wheel(qtbot, window):
    show(qtbot, window)
    panel = window.sampling_panel
    scroll = next(a for a in window.findChildren(QScrollArea) if a.widget() is panel)
    scroll.ensureWidgetVisible(panel.top_k)
    panel.top_k.setFocus()
    qtbot.waitUntil(panel.top_k.hasFocus, timeout=2000)
    wheel_over(panel.top_k, -1)
    qtbot.waitUntil(lambda: panel.top_k.value() != 40, timeout=2000)


def test_the_wheel_never_focuses_a_setting(qtbot, window):
    show(qtbot, window)
    kinds = (QAbstractSpinBox, QComboBox, QAbstractSlider)
    inputs = [w for w in window.findChildren(QWidget) if isinstance(w, kinds)]
    assert inputs
    for widget in inputs:
        if widget.isVisible():
            assert widget.focusPolicy() != Qt.FocusPolicy.WheelFocus, widget.accessibleName()


def test_the_wheel_over_the_unfocused_thread_slider_keeps_the_threads(qtbot, window):
    show(qtbot, window)
    slider = window.perf_panel.slider
    before = slider.value()
    before_setting = window.settings.n_threads
    window.composer.prompt.setFocus()
    wheel_over(slider, 3)
    wheel_over(slider, -3)
    qtbot.wait(10)
    assert slider.value() == before and window.settings.n_threads == before_setting


# ---- #3: small windows --------------------------------------------------------------------------


def _inside_window_horizontally(win: MainWindow) -> list[str]:
    """Visible labels, buttons and inputs of the chat page whose right edge is past the window's."""
    from PySide6.QtWidgets import QAbstractButton, QLabel

    cut = []
    for widget in win.chat_page.findChildren(QWidget):
        if not isinstance(widget, (QLabel, QAbstractButton, QAbstractSpinBox, QAbstractSlider, QPlainTextEdit)):
            continue
        if not widget.isVisible() or widget.width() == 0:
            continue
        right = widget.mapTo(win, QPoint(widget.width(), 0)).x()
        limit = win.width()
        clip = widget.parentWidget()
        while clip is not None and clip is not win:  # a scroll area's viewport clips what it holds
            if isinstance(clip.parentWidget(), QScrollArea) and clip is clip.parentWidget().viewport():
                limit = min(limit, clip.mapTo(win, QPoint(clip.width(), 0)).x())
            clip = clip.parentWidget()
        if right > limit:
            name = widget.accessibleName() or widget.objectName()
            cut.append(f"{widget.metaObject().className()} {name}: {right} > {limit}")
    return cut


def _messages_fit(qtbot, win: MainWindow) -> None:
    from app.ui.message_widget import ProseLabel

    view = win.chat_view
    qtbot.waitUntil(lambda: view.widget().width() <= view.viewport().width(), timeout=3000)
    labels = view.findChildren(ProseLabel)
    assert labels
    for label in labels:
        right = label.mapTo(view.viewport(), QPoint(label.width(), 0)).x()
        assert right <= view.viewport().width(), f"message text cut off: right edge {right} > {view.viewport().width()}"
        assert label.document().size().width() <= label.viewport().width() + 1
    assert view.viewport().width() >= 400, "the conversation keeps a readable width"


@pytest.mark.parametrize("size", [(1280, 800), (900, 600)])
def test_nothing_is_cut_off(qtbot, window, size):
    show(qtbot, window, *size)
    add_conversation(window)
    qtbot.wait(50)
    assert (window.width(), window.height()) == size, "the window must not be forced larger than asked"
    _messages_fit(qtbot, window)
    assert not _inside_window_horizontally(window)
    for button in (window.composer.send_button,):
        assert button.isVisible()
        assert window.rect().contains(button.mapTo(window, button.rect().bottomRight()))


def test_the_side_column_widens_when_its_figures_grow(qtbot, window):
    """Long live figures must widen the column, not be clipped by its scroll area."""
    show(qtbot, window, 1280, 800)
    perf = window.perf_panel
    perf.prompt_speed.setText("149 tok/s · 7000 tokens (4400 cached) and then some more text")
    perf.power.setText("no power sensor on this machine, and a longer reason")
    qtbot.wait(50)
    assert not _inside_window_horizontally(window)


def test_panels_fold_away_in_a_small_window_and_come_back(qtbot, window):
    show(qtbot, window, 1280, 800)
    assert window.conversations.isVisible() and window.side_panel.isVisible()
    window.resize(900, 600)
    qtbot.waitUntil(lambda: not window.side_panel.isVisible(), timeout=2000)
    assert window.conversations.isVisible() and not window.side_action.isChecked()
    window.resize(700, 600)
    qtbot.waitUntil(lambda: not window.conversations.isVisible(), timeout=2000)
    assert not window.chats_action.isChecked()
    window.resize(1280, 800)
    qtbot.waitUntil(lambda: window.side_panel.isVisible() and window.conversations.isVisible(), timeout=2000)


def test_view_menu_shortcuts_toggle_the_panels_and_the_choice_sticks(qtbot, window):
    show(qtbot, window, 1280, 800)
    window.composer.prompt.setFocus()
    qtbot.keyClick(
        window.composer.prompt, Qt.Key.Key_L, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    )
    qtbot.waitUntil(lambda: not window.conversations.isVisible(), timeout=2000)
    qtbot.keyClick(
        window.composer.prompt, Qt.Key.Key_P, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier
    )
    qtbot.waitUntil(lambda: not window.side_panel.isVisible(), timeout=2000)
    window.resize(1300, 820)  # a resize must not undo what the user chose
    qtbot.wait(20)
    assert not window.conversations.isVisible() and not window.side_panel.isVisible()
    window.resize(900, 600)
    window.side_action.trigger()  # shown on purpose in a small window: it stays
    window.resize(880, 600)
    qtbot.wait(20)
    assert window.side_panel.isVisible() and window.side_action.isChecked()


def test_a_small_window_with_every_panel_shown_keeps_its_size(qtbot, window):
    """Shown on purpose at 900x600, the performance and settings column scrolls instead of making
    the window taller than the screen (it was 655 px tall)."""
    show(qtbot, window, 1280, 800)
    add_conversation(window)
    window.resize(900, 600)
    qtbot.waitUntil(lambda: not window.side_panel.isVisible(), timeout=2000)
    window.side_action.trigger()
    qtbot.waitUntil(window.side_panel.isVisible, timeout=2000)
    qtbot.wait(50)
    window.resize(900, 600)
    qtbot.wait(50)
    assert (window.width(), window.height()) == (900, 600)
    assert not _inside_window_horizontally(window)


def test_zoom_keys_scale_the_text_and_are_saved(qtbot, window):
    """View → Zoom in / out / Actual size: the style sheet's pixel sizes and the app font follow,
    the factor is saved, and it never compounds or leaves its range."""
    from app.settings import ZOOM_MAX, ZOOM_MIN, load_settings

    show(qtbot, window)
    app = QApplication.instance()
    base_pt = app.font().pointSizeF()
    for keys in ("Ctrl+=", "Ctrl+="):
        QTest.keySequence(window, keys)
    assert window.settings.zoom == pytest.approx(1.2)
    assert app.font().pointSizeF() == pytest.approx(base_pt * 1.2)
    assert "font-size: 17px" in app.styleSheet(), "the messages' 14 px became 17 px"
    QTest.keySequence(window, "Ctrl+-")
    assert window.settings.zoom == pytest.approx(1.1)
    QTest.keySequence(window, "Ctrl+0")
    assert window.settings.zoom == 1.0 and app.font().pointSizeF() == pytest.approx(base_pt)
    for _ in range(40):
        window.zoom_by(0.1)
    assert window.settings.zoom == ZOOM_MAX
    for _ in range(40):
        window.zoom_by(-0.1)
    assert window.settings.zoom == ZOOM_MIN
    window.settings_store.flush()
    assert load_settings(window.paths.settings_file).settings.zoom == ZOOM_MIN
    window.zoom_by(0)
    assert app.font().pointSizeF() == pytest.approx(base_pt)


def test_zoomed_sheet_scales_every_pixel_font_size():
    from app.ui.theme import zoomed_sheet

    sheet = "QLabel { font-size: 14px; } QPushButton { font-size: 11px; padding: 7px; }"
    assert zoomed_sheet(sheet, 1.5) == "QLabel { font-size: 21px; } QPushButton { font-size: 16px; padding: 7px; }"
    assert zoomed_sheet(sheet, 1.0) == sheet


@pytest.mark.parametrize("size", [(1280, 800), (900, 600)])
def test_the_models_page_scrolls_only_its_card_list(qtbot, window, size):
    """At a normal and a small window the page fits the tab and only the card list scrolls: at
    900x600 the page was 3 px taller than the tab, and two nested scroll bars showed."""
    show(qtbot, window, *size)
    window.tabs.setCurrentWidget(window.models_tab)
    qtbot.wait(100)
    page, tab = window.models_page, window.models_tab
    assert not tab.verticalScrollBar().isVisible(), "the page scrolls around the card list's own scroll bar"
    assert page.height() == tab.viewport().height()
    assert page.cards_scroll.height() >= 300, "the card list gets the height the page does not need"


def test_a_very_short_window_scrolls_the_models_page(qtbot, window):
    """Too short for the header rows and a usable card list, the page itself scrolls: nothing is cut off."""
    show(qtbot, window, 900, 330)
    window.tabs.setCurrentWidget(window.models_tab)
    qtbot.wait(100)
    tab = window.models_tab
    assert tab.verticalScrollBar().isVisible()
    assert window.models_page.height() > tab.viewport().height()
