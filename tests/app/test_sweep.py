"""The thread sweep's pure arithmetic: thread counts, the best trade-off rule, saved records."""

from __future__ import annotations

import dataclasses
import json
import math
from types import SimpleNamespace

import pytest

from app.perf.sweep import (
    RECORD_VERSION,
    SweepPoint,
    best_tradeoff,
    load_records,
    make_record,
    model_key_for,
    point_from_chunk,
    points_from_record,
    record_path,
    save_record,
    thread_counts,
)


def pt(threads, tok_s, cpu_s, tokens=48, joules=None, bits=4):
    return SweepPoint(
        bits=bits,
        threads=threads,
        decode_tok_s=tok_s,
        prompt_tok_s=100.0,
        generated_tokens=tokens,
        cpu_s=cpu_s,
        joules=joules,
    )


def test_thread_counts_all_when_few_and_spread_when_many():
    assert thread_counts(1) == [1]
    assert thread_counts(8) == list(range(1, 9))
    many = thread_counts(64)
    assert many[0] == 1 and many[-1] == 64 and len(many) == 12 and many == sorted(set(many))
    assert thread_counts(13, limit=12)[-1] == 13
    with pytest.raises(ValueError):
        thread_counts(0)


def test_best_is_cheapest_within_90_percent_of_fastest():
    points = [pt(1, 10.0, 4.8), pt(2, 18.5, 5.0), pt(4, 19.5, 6.0), pt(8, 20.0, 9.6)]
    choice = best_tradeoff(points)
    assert choice.fastest.threads == 8
    # 2 threads reach 92.5 % of the fastest and burn the fewest CPU-seconds per token of those that do.
    assert choice.best.threads == 2 and choice.metric == "cpu_s_per_token"
    assert "90%" in choice.rule and "CPU-seconds" in choice.rule


def test_slow_but_cheap_runs_are_excluded():
    # 1 thread is the cheapest per token but far slower than the fastest: not chosen.
    choice = best_tradeoff([pt(1, 5.0, 1.0), pt(2, 9.5, 2.4), pt(3, 10.0, 3.0)])
    assert choice.best.threads == 2


def test_energy_is_used_when_every_candidate_has_it():
    points = [pt(2, 19.0, 2.0, joules=40.0), pt(4, 20.0, 3.0, joules=30.0)]
    choice = best_tradeoff(points)
    assert choice.metric == "joules_per_token" and choice.best.threads == 4 and "joules" in choice.rule
    # One candidate without a reading: fall back to CPU-seconds for all.
    mixed = [pt(2, 19.0, 2.0, joules=None), pt(4, 20.0, 3.0, joules=30.0)]
    assert best_tradeoff(mixed).metric == "cpu_s_per_token" and best_tradeoff(mixed).best.threads == 2


def test_ties_go_to_fewer_threads_and_empty_runs_are_ignored():
    assert best_tradeoff([pt(3, 10.0, 4.8), pt(2, 10.0, 4.8)]).best.threads == 2
    assert best_tradeoff([pt(1, 0.0, 0.0, tokens=0)]) is None
    assert best_tradeoff([]) is None
    with pytest.raises(ValueError):
        best_tradeoff([pt(1, 10.0, 1.0, bits=2), pt(1, 10.0, 1.0, bits=4)])


def test_per_token_figures():
    p = pt(2, 10.0, 2.4, tokens=48, joules=9.6)
    assert p.cpu_s_per_token == pytest.approx(0.05) and p.joules_per_token == pytest.approx(0.2)
    assert pt(1, 0.0, 1.0, tokens=0).cpu_s_per_token == math.inf
    assert pt(1, 1.0, 1.0).joules_per_token is None


def test_point_from_final_chunk():
    chunk = SimpleNamespace(decode_tok_s=31.5, prompt_tok_s=200.0, generated_tokens=48, cpu_s=3.0, prompt_cpu_s=0.18)
    p = point_from_chunk(2, 4, chunk, joules=1.5)
    assert (p.bits, p.threads, p.decode_tok_s, p.cpu_s, p.joules, p.prompt_cpu_s) == (2, 4, 31.5, 3.0, 1.5, 0.18)


def test_cpu_per_token_is_the_decode_cpu_as_the_perf_panel_shows_it():
    """The issue's case: a long prompt's CPU divided by the generated tokens showed 56 ms where
    decoding costs ~7 ms. The sweep's figure is the perf panel's (AnswerStats), not the mix."""
    from app.chat.records import AnswerStats

    chunk = SimpleNamespace(
        decode_tok_s=30.0, prompt_tok_s=120.0, generated_tokens=48, cpu_s=2.688, prompt_cpu_s=2.359,
        ttft_s=1.2, prompt_tokens=300, cached_tokens=0, threads=2, elapsed_s=2.8, finish_reason="length",
    )  # fmt: skip
    p = point_from_chunk(4, 2, chunk)
    assert p.decode_cpu_s == pytest.approx(0.329)
    assert p.cpu_s_per_token == pytest.approx(0.329 / 47)  # ~7 ms, the 47 tokens after the first
    assert p.cpu_s_per_token == pytest.approx(AnswerStats.from_chunk(chunk, None).decode_cpu_s_per_token)
    assert 2.688 / 48 > 7 * p.cpu_s_per_token  # what it showed before
    assert dataclasses.replace(p, generated_tokens=1).cpu_s_per_token == math.inf  # no token after the first
    # a record written before the split keeps its old figure (all CPU over the generated tokens)
    assert dataclasses.replace(p, prompt_cpu_s=None).cpu_s_per_token == pytest.approx(2.688 / 48)
    [saved] = points_from_record({"points": [dataclasses.asdict(p)]})
    assert saved == p
    # the cheapest run is the one that decodes cheapest, whatever its prompt cost
    costly_prompt = dataclasses.replace(p, threads=4, cpu_s=4.0, prompt_cpu_s=3.8)  # decode 0.2 CPU-s
    assert best_tradeoff([p, costly_prompt]).best.threads == 4


def _record(bits=4, machine="Test CPU 9000 (8 threads)", created_at=1000.0, points=None):
    return make_record(
        model_key="default",
        model_name="SmolLM2",
        source="default",
        bits=bits,
        machine=machine,
        cpu_model="Test CPU 9000",
        logical_cores=8,
        tier="avx2",
        prompt="p",
        max_tokens=48,
        points=points
        if points is not None
        else [pt(2, 18.0, 5.0, bits=bits), pt(1, 10.0, 4.8, bits=bits), pt(4, 5.0, 1.0, bits=6 - bits)],
        power_label="unavailable",
        power_unavailable_reason="no power sensor",
        created_at=created_at,
    )


def test_record_keeps_its_bits_only_sorted_with_the_choice(tmp_path):
    record = _record()
    assert record["record_version"] == RECORD_VERSION
    assert [p["threads"] for p in record["points"]] == [1, 2]
    assert record["best"]["threads"] == 2 and record["best"]["fastest_threads"] == 2
    assert record["points"][0]["cpu_s_per_token"] == pytest.approx(0.1)
    path = save_record(tmp_path, record)
    assert path == record_path(tmp_path, "default", 4, record["machine"])
    assert json.loads(path.read_text()) == record
    assert points_from_record(json.loads(path.read_text())) == [pt(1, 10.0, 4.8), pt(2, 18.0, 5.0)]


def test_one_file_per_model_bits_machine_and_newest_first(tmp_path):
    save_record(tmp_path, _record(bits=4, created_at=1.0))
    save_record(tmp_path, _record(bits=2, created_at=2.0))
    save_record(tmp_path, _record(bits=4, created_at=3.0))  # replaces the first
    save_record(tmp_path, _record(bits=4, machine="Other CPU", created_at=4.0))
    (tmp_path / "broken.json").write_text("{not json")
    records = load_records(tmp_path)
    assert [(r["bits"], r["created_at"]) for r in records] == [(4, 4.0), (4, 3.0), (2, 2.0)]
    assert load_records(tmp_path, "nothing.gguf") == []
    assert load_records(tmp_path / "missing") == []


def test_record_file_names_are_safe():
    path = record_path(__import__("pathlib").Path("/m"), "../../etc/passwd", 2, "CPU / with: odd*chars")
    assert path.parent.as_posix() == "/m" and "/" not in path.name and ":" not in path.name
    assert record_path(path.parent, "a b", 2, "x") != record_path(path.parent, "a_b", 2, "x")


def test_model_key():
    assert model_key_for("default") == "default"
    assert model_key_for("/models/local/My-Model.Q8_0.gguf") == "My-Model.Q8_0.gguf"


def test_the_chart_axes_and_cost_pick_round_numbers_and_the_available_metric():
    from app.ui.sweep_chart import cost_metric, cost_of, cost_unit, nice_ceiling

    assert [nice_ceiling(v) for v in (0, 0.45, 0.7, 1.0, 1.3, 2.2, 4.1, 7.0, 23.0)] == [1, 0.5, 1, 1, 2, 2.5, 5, 10, 25]
    with_energy = [pt(1, 10.0, 4.8, joules=2.4), pt(2, 18.0, 5.0, joules=2.0)]
    assert cost_metric(with_energy) == "joules_per_token" and cost_unit("joules_per_token") == "J / token"
    mixed = with_energy + [pt(4, 19.0, 6.0)]
    assert cost_metric(mixed) == "cpu_s_per_token" and cost_unit("cpu_s_per_token") == "CPU ms / token"
    assert cost_of(mixed[0], "cpu_s_per_token") == pytest.approx(100.0)  # 4.8 CPU-s / 48 tokens, in ms


def test_the_chart_draws_both_bit_widths_and_describes_the_best(qtbot):
    from PySide6.QtGui import QColor

    from app.ui.sweep_chart import BITS_COLORS, SweepChart

    chart = SweepChart()
    qtbot.addWidget(chart)
    chart.resize(480, 300)
    empty = chart.grab().toImage()
    points = [pt(1, 10.0, 4.8), pt(2, 18.5, 5.0), pt(4, 19.5, 6.0), pt(1, 14.0, 4.0, bits=2), pt(2, 25.0, 4.4, bits=2)]
    chart.set_data(points, max_threads=4)
    assert sorted(chart.best) == [2, 4] and chart.best[4].best.threads == 2
    assert "4-bit best at 2 threads, 18.5 tokens/s" in chart.accessibleDescription()
    drawn = chart.grab().toImage()
    colours = {drawn.pixelColor(x, y).name() for x in range(0, drawn.width(), 2) for y in range(0, drawn.height(), 2)}
    for bits in (4, 2):
        near = [c for c in colours if _close(QColor(c), BITS_COLORS[bits])]
        assert near, f"no {bits}-bit line drawn"
    assert empty.size() == drawn.size() and empty != drawn


def _close(a, b, tolerance=40) -> bool:
    return abs(a.red() - b.red()) + abs(a.green() - b.green()) + abs(a.blue() - b.blue()) < tolerance
