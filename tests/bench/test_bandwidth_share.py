"""% BW in the benchmark tables is a share of the streaming read taken just before each row's runs,
not of one reading at the start of an hour-long run (on a shared host that went stale: rows
measured an hour later read 105-129% of it)."""

from __future__ import annotations

from tests.bench import e2e


def test_a_speed_run_carries_the_reading_taken_just_before_it(monkeypatch):
    import tests.bench.machine

    calls: list = []
    monkeypatch.setattr(tests.bench.machine, "read_bandwidth", lambda t: (calls.append(("read", t)) or 10.0 * t, "x"))
    monkeypatch.setattr(e2e, "run_json", lambda cmd: calls.append(("run", cmd)) or {"decode_tok_s": 20.0})
    result = e2e.speed_run(["bench"], 2)()
    assert calls == [("read", 2), ("run", ["bench"])], "the reading comes first, on the row's thread count"
    assert result == {"decode_tok_s": 20.0, e2e.READER: 20.0}


def test_the_share_is_of_the_rows_own_reading_and_falls_back_to_the_runs():
    row = {"decode_tok_s": 20.0, e2e.READER: 16.0}
    assert abs(e2e.bw_fraction(400.0, row, 8.0) - 0.5) < 1e-12  # 400 MB x 20 tok/s = 8 GB/s of 16
    assert abs(e2e.bw_fraction(400.0, {"decode_tok_s": 20.0}, 10.0) - 0.8) < 1e-12
    assert e2e.bw_fraction(400.0, {"error": "failed"}, 10.0) is None
    assert e2e.read_gbs(400.0, row) == 8.0 and e2e.read_gbs(None, row) is None


def test_the_footnote_gives_the_span_of_the_readings_per_thread_count():
    speed = {
        ("g", "a", 1): {e2e.READER: 14.6},
        ("g", "b", 1): {e2e.READER: 18.24},
        ("g", "a", 2): {e2e.READER: 25.0},
        ("g", "c", 2): {"error": "failed"},
        ("seconds", "g"): 3.0,
    }
    assert e2e.reader_span(speed, 1, 9.9) == "14.6–18.2 GB/s"
    assert e2e.reader_span(speed, 2, 9.9) == "25.0 GB/s"
    assert e2e.reader_span({}, 2, 21.9) == "21.9 GB/s"
    speed[("files", "a", 1)] = {e2e.READER: 11.0}  # another table's row: in its own span only
    assert e2e.reader_span(speed, 1, 9.9, {"g"}) == "14.6–18.2 GB/s"
    assert e2e.reader_span(speed, 1, 9.9, {"files"}) == "11.0 GB/s"
    assert e2e.reader_span(speed, 1, 9.9) == "11.0–18.2 GB/s"


def test_our_bytes_per_token_leave_out_an_untied_embedding(tmp_path):
    """Ours' MB/token is what its runtime reads per token (bench's decode_bytes), not the packed
    total: of an untied token embedding one row is read, as on llama.cpp's side (decode_bytes)."""
    row = {"decode_tok_s": 20.0, "packed_bytes": 683_000_000, "decode_bytes": 620_000_000}
    assert e2e.decode_mb("ours", row, str(tmp_path / "unused.gguf")) == 620.0
    assert e2e.decode_mb("ours", {"packed_bytes": 683_000_000}, str(tmp_path / "unused.gguf")) is None
