"""The performance panel's numbers: prompt and decode CPU apart, a rolling rate that shows a thread
change at once, the chart's marks, and the panel following the selected chat (offscreen Qt, no engine).

The chunks are real tmac_core.types.Chunk records with the counters an engine reports: a
prompt step that costs 0.5 CPU-seconds, then decoding at 7 ms of CPU per token.
"""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from app.chat.records import AnswerStats  # noqa: E402
from app.chat.store import ChatStore  # noqa: E402
from app.paths import app_paths  # noqa: E402
from app.settings import AppSettings  # noqa: E402
from app.settings_store import SettingsStore  # noqa: E402
from app.ui.perf_panel import PerfPanel  # noqa: E402
from app.ui.rate_chart import ROLLING_TOKENS, AnswerRates  # noqa: E402
from tmac_core.types import Chunk  # noqa: E402


def chunks(
    n: int, *, prompt_cpu: float = 0.5, decode_cpu: float = 0.007, prompt_tokens: int = 100, cached: int = 0
) -> list[Chunk]:
    """An answer of n tokens: the first after 0.4 s; 10 tok/s with 2 threads, from token 33 on 20 tok/s
    with 4 threads; then the final chunk."""
    out, elapsed = [], 0.4
    for token in range(1, n + 1):
        if token > 1:
            elapsed += 0.1 if token <= 32 else 0.05
        threads = 2 if token <= 32 else 4
        cpu = prompt_cpu + decode_cpu * (token - 1)
        decode_tok_s = (token - 1) / (elapsed - 0.4) if token > 1 else 0.0
        out.append(
            Chunk(
                "x",
                7,
                prompt_tokens,
                cached,
                token,
                250.0,
                decode_tok_s,
                0.4,
                elapsed,
                cpu,
                threads,
                prompt_cpu_s=prompt_cpu,
            )
        )
    last = out[-1]
    out.append(
        Chunk(
            "",
            None,
            prompt_tokens,
            cached,
            n,
            250.0,
            last.decode_tok_s,
            0.4,
            elapsed,
            last.cpu_s,
            4,
            "length",
            prompt_cpu_s=prompt_cpu,
        )
    )
    return out


def test_prompt_and_decode_cpu_are_reported_apart():
    stats = AnswerStats.from_chunk(chunks(48)[-1])
    assert (stats.prompt_cpu_s, stats.decode_cpu_s) == (pytest.approx(0.5), pytest.approx(0.007 * 47))
    assert stats.prompt_cpu_s_per_token == pytest.approx(0.5 / 100)
    assert stats.decode_cpu_s_per_token == pytest.approx(0.007)
    # What the panel showed before: all CPU over generated tokens, ~17 ms where decoding costs 7.
    assert (0.5 + 0.007 * 47) / 48 > 2 * stats.decode_cpu_s_per_token
    # kept with the message: the split survives the store's JSON
    assert AnswerStats.from_json(stats.to_json()) == stats


def test_a_fully_cached_prompt_has_no_per_token_prompt_cost():
    stats = AnswerStats.from_chunk(chunks(5, cached=100)[-1])
    assert stats.prompt_cpu_s is not None and stats.prompt_tokens_read == 0 and stats.prompt_cpu_s_per_token is None


def test_the_rolling_rate_shows_a_thread_change_that_the_average_hides():
    rates = AnswerRates()
    answer = chunks(48)
    for chunk in answer:
        rates.add(chunk)
    assert rates.rolling_tok_s == pytest.approx(20.0)
    assert answer[-1].decode_tok_s < 15  # the whole-answer average is still far behind
    assert [(m.token, m.threads) for m in rates.marks] == [(33, 4)]
    assert rates.points[-1] == (48, pytest.approx(20.0)) and len(rates.points) >= 48 - ROLLING_TOKENS


@pytest.fixture
def panel(qtbot):
    store = SettingsStore(AppSettings(), None)
    widget = PerfPanel(None, store, default_threads=1)
    qtbot.addWidget(widget)
    return widget


def test_the_panel_shows_the_split_cpu_and_the_current_rate(panel, qtbot):
    panel.answer_started(1)
    for chunk in chunks(48):
        panel.show_chunk(chunk)
    assert panel.cpu_per_token.text() == "7.0 ms CPU / token"
    assert panel.prompt_cpu.text() == "5.0 ms CPU / token"
    assert panel.speed_now.text().startswith("now 20.0 tok/s")
    assert panel.chart.rates is panel.rates and panel.rates.marks
    panel.resize(300, 600)
    panel.show()
    qtbot.waitExposed(panel)
    assert not panel.chart.grab().isNull()  # the chart paints with a thread mark without failing


def test_the_panel_follows_the_selected_chat(qtbot):
    from app.ui.main_window import MainWindow

    paths = app_paths().ensure()
    with ChatStore(paths.chat_db_file) as store:
        fast = store.create_conversation("fast")
        store.add_message(fast.id, "user", "hi")
        fast_stats = AnswerStats(
            generated_tokens=41,
            decode_tok_s=31.5,
            ttft_s=0.2,
            prompt_tokens=20,
            threads=3,
            cpu_s=2.0,
            elapsed_s=1.5,
            prompt_cpu_s=0.4,
            decode_cpu_s=1.6,
        )
        store.add_message(fast.id, "assistant", "hello", stats=fast_stats)
        slow = store.create_conversation("slow")
        store.add_message(slow.id, "user", "hi")
        store.add_message(
            slow.id, "assistant", "hello", stats=AnswerStats(generated_tokens=9, decode_tok_s=4.25, prompt_tokens=20)
        )
        empty = store.create_conversation("empty")
        window = MainWindow(SettingsStore(AppSettings(), paths.settings_file), paths, store)
        qtbot.addWidget(window)
        perf = window.perf_panel
        window.session.open_conversation(fast.id)
        assert perf.speed.text() == "31.5" and perf.tokens.text() == "41" and perf.threads_used.text() == "3"
        # the stored split, also for an answer written before this session
        assert perf.prompt_cpu.text() == "20.0 ms CPU / token" and perf.cpu_per_token.text() == "40.0 ms CPU / token"
        window.session.open_conversation(slow.id)
        assert perf.speed.text() == "4.2" or perf.speed.text() == "4.3"
        assert perf.tokens.text() == "9"
        assert perf.prompt_cpu.text() == "–" and perf.cpu_per_token.text() == "–"  # a row without the split
        window.session.open_conversation(empty.id)
        assert perf.speed.text() == "–" and perf.tokens.text() == "–"
        window.close()
