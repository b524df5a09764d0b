"""The real-shape benchmark group's plumbing (tests/bench/big.py) on tiny stand-ins: files made
and reused, our rows measured in their own processes, Targets lines computed from the ratios
and the first load's peak memory. The shapes are patched small; llama.cpp is not needed."""

from __future__ import annotations

import pytest

from tests.bench import big, e2e
from tmac_core.models import ARCHITECTURES


def _tiny(arch: str, **extra):
    return ARCHITECTURES[arch].config(
        dim=256,
        hidden_dim=512,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        head_dim=64,
        vocab_size=600,
        n_ctx_train=1024,
        **extra,
    )


@pytest.fixture
def tiny_group(tmp_path, monkeypatch):
    monkeypatch.setattr(e2e, "MODELS", tmp_path / "models")
    monkeypatch.setattr(e2e, "CACHE", tmp_path / "models" / "repacked")
    monkeypatch.setattr(e2e, "QUIET_WAIT", [0.0])
    monkeypatch.setattr(big, "BITNET_2B4T_CONFIG", _tiny("bitnet-b1.58", tie_embeddings=True))
    monkeypatch.setattr(big, "LLAMA_2B_CONFIG", _tiny("llama", tie_embeddings=True))
    monkeypatch.setattr(big, "LLAMA_8B_CONFIG", _tiny("llama"))
    monkeypatch.setattr(big, "LONG_2B", 48)
    monkeypatch.setattr(e2e, "PROMPT", 8)
    monkeypatch.setattr(e2e, "GEN", 4)
    return tmp_path


def test_ours_files_are_made_once_measured_and_reported(tiny_group, capsys):
    files, made = big.prepare(peer=None)
    assert set(files) == {"b2_ternary", "l8_w2g128", "l8_w4g128", "l8_q4_0"}  # the peer's need llama.cpp
    assert set(made) == set(files)
    again, made_again = big.prepare(peer=None)
    assert again == files and made_again == {}  # reused, not rewritten
    results = big.measure(files, peer=None)
    for key in ("b2_ternary", "l8_w2g128", "l8_w4g128"):
        load = results[("load", key)]
        assert load["cache_hit"] is False and load["rss_peak_bytes"] > 0 and load["packed_bytes"] > 0
    for threads in e2e.THREADS:
        for label, run in [
            ("ours ternary (I2_S, 2B-4T graph)", ""),
            ("ours ternary (I2_S, 2B-4T graph)", "pp512"),
            ("ours EfficientQAT w2g128 (GPTQ folder)", ""),
            ("ours EfficientQAT w4g128 (GPTQ folder)", ""),
        ]:
            group = big.GROUP_2B if "2B-4T" in label else big.GROUP_8B
            r = results[(group, label, threads, run)]
            assert r["cache_hit"] is True and r["decode_tok_s"] > 0 and r["threads"] == threads
    w2 = results[(big.GROUP_8B, "ours EfficientQAT w2g128 (GPTQ folder)", 1, "")]
    w4 = results[(big.GROUP_8B, "ours EfficientQAT w4g128 (GPTQ folder)", 1, "")]
    assert w2["packed_bytes"] < w4["packed_bytes"]  # 2-bit codes read fewer bytes than 4-bit
    text = "\n".join(big.section(results, files, {1: 30.0, 2: 60.0}, made))
    row = f"ours EfficientQAT w2g128 (GPTQ folder) | {w2['bits_per_weight']:.2f} | 1 | {w2['decode_tok_s']:.2f} |"
    assert row in text
    assert "| 8B shape, EfficientQAT w2g128 |" in text and "miss: repacked" in text
    lines = {name: (shown, met) for name, shown, met in big.checks(results)}
    assert all(met is None for _shown, met in lines.values())  # no peer: no ratio, no Q4_K_M file
    assert "Time spent:" in text


def _row(decode=None, prompt=None, **extra) -> dict:
    return {"decode_tok_s": decode, "prompt_tok_s": prompt, **extra}


def test_targets_are_the_ratios_against_llama_cpp_and_the_8b_load_bounds():
    tern, tq2 = "ours ternary (I2_S, 2B-4T graph)", "llama.cpp TQ2_0 (llama graph)"
    w2, w4 = "ours EfficientQAT w2g128 (GPTQ folder)", "ours EfficientQAT w4g128 (GPTQ folder)"
    g2, g8 = big.GROUP_2B, big.GROUP_8B
    results = {
        (g2, tern, 1, ""): _row(30.0, 300.0),
        (g2, tq2, 1, ""): _row(20.0, 100.0),  # decode 1.5× (met), prompt 3.0× (met)
        (g2, tern, 2, ""): _row(29.0, 290.0),
        (g2, tq2, 2, ""): _row(20.0, 100.0),  # 1.45×, 2.9×: not met
        (g2, tern, 1, "pp512"): _row(1.0, 250.0),
        (g2, tq2, 1, "pp512"): _row(1.0, 100.0),  # 2.5×: not met
        (g8, w2, 1, ""): _row(9.0),
        (g8, "llama.cpp Q2_K", 1, ""): _row(6.0),  # 1.5×
        (g8, w4, 1, ""): _row(5.0),
        (g8, "llama.cpp Q4_0", 1, ""): _row(4.0),  # 1.25×
        ("load", "l8_q4_k_m"): {"load_s": 40.0, "rss_peak_bytes": 5.6e9, "packed_bytes": 4.9e9, "cache_hit": False},
    }
    met = {name: ok for name, _shown, ok in big.checks(results)}
    assert met["2B-4T ternary decode ≥ 1.5× llama.cpp TQ2_0, 1 thread"] is True
    assert met["2B-4T ternary prompt (128) ≥ 3× llama.cpp TQ2_0, 1 thread"] is True
    assert met["2B-4T ternary decode ≥ 1.5× llama.cpp TQ2_0, 2 threads"] is False
    assert met["2B-4T ternary prompt (128) ≥ 3× llama.cpp TQ2_0, 2 threads"] is False
    assert met["2B-4T ternary prompt (512) ≥ 3× llama.cpp TQ2_0, 1 thread"] is False
    assert met["2B-4T ternary prompt (512) ≥ 3× llama.cpp TQ2_0, 2 threads"] is None  # not measured
    assert met["8B EfficientQAT w2g128 decode ≥ 1.5× llama.cpp Q2_K, 1 thread"] is True
    assert met["8B EfficientQAT w4g128 decode ≥ 1.2× llama.cpp Q4_0, 1 thread"] is True
    assert met["8B EfficientQAT w4g128 decode ≥ 1.2× llama.cpp Q4_0, 2 threads"] is None
    name = "8B Q4_K_M first load (cold repack cache): peak RSS < 6.5 GB and ≤ packed + 1 GB"
    assert met[name] is True
    results[("load", "l8_q4_k_m")]["rss_peak_bytes"] = 6.0e9  # under 6.5 GB but packed + 1.1 GB
    assert {n: ok for n, _s, ok in big.checks(results)}[name] is False
    results[("load", "l8_q4_k_m")]["cache_hit"] = True  # a warm cache says nothing about the first load
    assert {n: ok for n, _s, ok in big.checks(results)}[name] is None


def test_only_big_runs_the_group_alone_and_prints_its_section_and_targets(tiny_group, monkeypatch, capsys):
    import tests.bench.machine

    monkeypatch.setattr(tests.bench.machine, "read_bandwidth", lambda threads: (30.0 * threads, "stub"))
    monkeypatch.setattr(e2e, "peer_python", lambda: None)
    monkeypatch.setattr(e2e, "prepare_models", lambda peer: pytest.fail("--only big made the other groups' files"))
    assert e2e.main(["--only", "big", "--no-doc", "--quiet-wait", "0"]) == 0
    out = capsys.readouterr().out
    assert "### Real shapes: BitNet b1.58 2B-4T and Llama-3-8B (synthetic weights)" in out
    assert "| 2B-4T ternary decode ≥ 1.5× llama.cpp TQ2_0, 1 thread | not measured | not measured |" in out
    assert "| 2B-4T shape, ternary I2_S |" in out and "real-shape group measured in" in out


def test_with_llama_cpp_every_row_and_target_is_measured(tiny_group):
    peer = e2e.peer_python()
    if peer is None:
        pytest.skip("llama-cpp-python is not installed (python build.py bench installs it)")
    files, _made = big.prepare(peer)
    assert set(files) == set(big.model_paths()) - {"b2_tq2_0_f16embd"}
    assert not (e2e.MODELS / big.model_paths()["b2_tq2_0_f16embd"]).exists()  # the intermediate is gone
    assert e2e.tensor_mix(files["b2_tq2_0"])[1].startswith("TQ2_0")
    results = big.measure(files, peer)
    for group, label, _engine, _key in big.CONFIGS:
        for threads in e2e.THREADS:
            assert results[(group, label, threads, "")]["decode_tok_s"] > 0, (label, threads)
    load = results[("load", "l8_q4_k_m")]
    assert load["cache_hit"] is False and load["rss_peak_bytes"] > 0  # emptied first, every run
    assert all(met is not None for _name, _shown, met in big.checks(results))
    table = big.speed_table(results, files, {1: 30.0, 2: 60.0})
    assert table.count("| llama.cpp Q4_K_M |") == 2 and table.count("| llama.cpp TQ1_0 (llama graph) |") == 2
