"""What a message shows: answers as Markdown with raw HTML off, the user's text exactly as typed.

Checked on the real widgets (offscreen Qt, no engine): the text a reader sees is
the block's document as plain text, so a tag swallowed by the renderer fails here.
"""

from __future__ import annotations

import re
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402

from app.chat.records import COMPLETE, AnswerStats, Message  # noqa: E402
from app.ui.markdown_html import prose_to_html  # noqa: E402
from app.ui.message_widget import MessageWidget, ProseLabel  # noqa: E402


def message(role: str, content: str) -> Message:
    return Message(
        id=1, conversation_id=1, role=role, content=content, created=0.0, stats=AnswerStats(), state=COMPLETE
    )


def shown(widget: MessageWidget) -> str:
    """The text a reader sees in the message's prose blocks, blocks joined by blank lines."""
    return "\n\n".join(label.shown_text() for label in widget.findChildren(ProseLabel))


@pytest.fixture
def render(qtbot):
    def render_(role: str, content: str) -> MessageWidget:
        widget = MessageWidget(message(role, content), dark=False)
        qtbot.addWidget(widget)
        return widget

    return render_


@pytest.mark.parametrize(
    "text, visible",
    [
        ("What is the difference between <div> and <span>?", "What is the difference between <div> and <span>?"),
        ("<<Title>>\nThe rest of the answer.", "<<Title>>\nThe rest of the answer."),
        ("<html><body><p>hi</p></body></html>", "<html><body><p>hi</p></body></html>"),
        ("<script>alert(1)</script> after", "<script>alert(1)</script> after"),
        ("Use a <br> tag & an &lt;em&gt; entity", "Use a <br> tag & an <em> entity"),
    ],
)
def test_angle_brackets_in_an_answer_are_shown_as_text(render, text, visible):
    assert shown(render("assistant", text)) == visible


def test_single_line_breaks_stay_line_breaks(render):
    poem = "Roses are red,\nviolets are blue,\nsugar is sweet"
    assert shown(render("assistant", poem)) == poem
    address = "221B Baker Street\nLondon\nNW1 6XE"
    assert shown(render("assistant", address)) == address


def test_indented_text_is_prose_not_code(render):
    widget = render("assistant", "Pasted:\n\n    first indented line\n    second indented line")
    assert widget.code_blocks() == []
    assert "first indented line\nsecond indented line" in shown(widget)


def test_markdown_still_renders_in_answers(render):
    widget = render("assistant", "**bold** and `code`\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\nx = 1\n```")
    (label, *_rest) = widget.findChildren(ProseLabel)
    html = prose_to_html(label.source_text)
    assert "<strong>bold</strong>" in html and "<code>code</code>" in html and "<table" in html
    assert label.document().toPlainText().startswith("bold and code")
    assert [block.code for block in widget.code_blocks()] == ["x = 1"]


def test_a_javascript_link_is_not_a_link(render):
    widget = render("assistant", "[click](javascript:alert(1))")
    assert "href" not in widget.findChildren(ProseLabel)[0].toHtml()


def test_the_users_message_is_shown_exactly_as_typed(render):
    typed = "<b>not bold</b>\n    indented\n**not strong**\n```\nnot a code block"
    widget = render("user", typed)
    (label,) = widget.findChildren(ProseLabel)
    assert not label.markdown and label.toPlainText() == typed
    assert widget.code_blocks() == []


# Characters Markdown does not consume in running text (no emphasis, links, entities,
# autolinks or line-start markers), so every one of them must reach the screen.
_SAFE = string.ascii_letters + string.digits + " <>/\"='&"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(alphabet=_SAFE, min_size=1, max_size=30), min_size=1, max_size=4))
def test_no_character_of_an_answer_vanishes(render, lines):
    text = "\n".join("x" + line.rstrip() for line in lines)
    # HTML, like every Markdown renderer, shows a run of spaces as one space: that is not a loss
    assert shown(render("assistant", text)) == re.sub(" +", " ", text)


def test_a_long_word_wraps_inside_a_narrow_conversation(qtbot):
    """At a small window a long URL, a wide table or a long code line must not push the
    conversation past the right edge (it has no horizontal scroll bar)."""
    from app.chat.records import COMPLETE as DONE
    from app.ui.chat_view import ChatView

    view = ChatView()
    qtbot.addWidget(view)
    text = (
        "https://example.com/"
        + "x" * 300
        + "\n\n| a | b |\n|---|---|\n| "
        + "cell " * 60
        + " | b |"
        + "\n\n```\n"
        + "y" * 400
        + "\n```"
    )
    view.set_messages(
        [
            Message(1, 1, "user", "z" * 300, 0.0, AnswerStats(), DONE),
            Message(2, 1, "assistant", text, 0.0, AnswerStats(), DONE),
        ]
    )
    view.resize(500, 400)
    view.show()
    qtbot.waitExposed(view)
    qtbot.waitUntil(lambda: view.widget().width() <= view.viewport().width(), timeout=2000)
    for label in view.findChildren(ProseLabel):
        assert label.geometry().right() <= view.viewport().width()
        assert label.document().size().width() <= label.viewport().width() + 1


def test_jump_to_latest_appears_when_scrolled_up_and_brings_the_answer_back(qtbot):
    from app.chat.records import COMPLETE as DONE
    from app.ui.chat_view import ChatView

    view = ChatView()
    qtbot.addWidget(view)
    view.set_messages(
        [
            Message(i, 1, "user" if i % 2 else "assistant", f"message {i}\n" * 6, 0.0, AnswerStats(), DONE)
            for i in range(1, 30)
        ]
    )
    view.resize(600, 400)
    view.show()
    qtbot.waitExposed(view)
    bar = view.verticalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() > 0 and bar.value() == bar.maximum(), timeout=2000)
    assert not view.latest_button.isVisible()
    bar.setValue(0)
    assert view.latest_button.isVisible()
    assert view.viewport().rect().contains(view.latest_button.geometry())
    view.latest_button.click()
    assert bar.value() == bar.maximum() and not view.latest_button.isVisible()
    bar.setValue(0)
    view.setFocus()
    qtbot.keyClick(view, Qt.Key.Key_End)
    assert bar.value() == bar.maximum()


@pytest.mark.parametrize("delay_ms", [0, 50])
def test_opening_a_search_hit_shows_that_message_not_the_top_or_the_end(qtbot, delay_ms):
    """A search hit opens its chat and scrolls to the hit, also when the chat was just loaded
    (its blocks are still being laid out) and a later block changes height."""
    from PySide6.QtCore import QTimer

    from app.chat.records import COMPLETE as DONE
    from app.ui.chat_view import ChatView

    view = ChatView()
    qtbot.addWidget(view)
    view.resize(600, 400)
    view.show()
    qtbot.waitExposed(view)
    messages = [
        Message(i, 1, "user" if i % 2 else "assistant", f"message {i}\n" * (3 + i % 5), 0.0, AnswerStats(), DONE)
        for i in range(1, 60)
    ]
    view.set_messages(messages)
    QTimer.singleShot(delay_ms, view, lambda: view.scroll_to_message(20))
    qtbot.wait(400)
    target = view.message_widget(20)
    top = target.mapTo(view.viewport(), target.rect().topLeft()).y()
    assert 0 <= top < view.viewport().height() - 40, f"the hit is at y={top}, outside the view"
