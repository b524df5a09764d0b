"""Sampler: greedy and seeded determinism, each filter on hand-made distributions,
temperature frequencies, the repeat penalty's llama.cpp semantics, NaN handling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tmac_core.errors import TmacError
from tmac_core.sampling import Sampler, SamplingError, SamplingParams

OFF = dict(top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0)


def logits_of(probs) -> np.ndarray:
    return np.log(np.asarray(probs, dtype=np.float64)).astype(np.float32)


def kept(params: SamplingParams, logits) -> list[int]:
    return np.flatnonzero(np.isfinite(Sampler(params).filtered_logits(logits))).tolist()


def test_greedy_is_argmax_and_deterministic(rng):
    logits = rng.standard_normal(1000).astype(np.float32)
    a = Sampler(SamplingParams(temperature=0.0, repeat_penalty=1.0))
    b = Sampler(SamplingParams(temperature=0.0, repeat_penalty=1.0, seed=5))
    assert [a.sample(logits) for _ in range(5)] == [b.sample(logits) for _ in range(5)] == [int(np.argmax(logits))] * 5


def test_same_seed_same_sequence(rng):
    steps = [rng.standard_normal(500).astype(np.float32) for _ in range(50)]
    params = SamplingParams(temperature=1.0, seed=1234)
    run = lambda p: [Sampler(p).sample(x) for x in steps]  # noqa: E731
    first, second = run(params), run(params)
    assert first == second
    assert run(SamplingParams(temperature=1.0, seed=1235)) != first


def test_top_k_one_is_greedy(rng):
    for _ in range(20):
        logits = rng.standard_normal(300).astype(np.float32)
        s = Sampler(SamplingParams(temperature=1.5, top_k=1, top_p=1.0, min_p=0.0, seed=0))
        assert s.sample(logits) == int(np.argmax(logits))


def test_top_k_keeps_k_best_with_stable_ties():
    logits = np.array([1, 5, 3, 5, 2, 5], dtype=np.float32)
    assert kept(SamplingParams(**{**OFF, "top_k": 2}), logits) == [1, 3]
    assert kept(SamplingParams(**{**OFF, "top_k": 4}), logits) == [1, 2, 3, 5]


def test_top_p_mask():
    probs = [0.05, 0.5, 0.2, 0.15, 0.1]
    # sorted: 0.5, 0.2, 0.15 -> 0.85 reaches 0.8; the crossing token is kept
    assert kept(SamplingParams(**{**OFF, "top_p": 0.8}), logits_of(probs)) == [1, 2, 3]
    assert kept(SamplingParams(**{**OFF, "top_p": 0.5}), logits_of(probs)) == [1]
    assert kept(SamplingParams(**{**OFF, "top_p": 0.01}), logits_of(probs)) == [1]
    assert kept(SamplingParams(**{**OFF, "top_p": 0.96}), logits_of(probs)) == [0, 1, 2, 3, 4]


def test_min_p_mask():
    probs = [0.4, 0.3, 0.2, 0.06, 0.04]
    # threshold 0.1 * 0.4 = 0.04 -> 0.04 itself is kept (>=), nothing below
    assert kept(SamplingParams(**{**OFF, "min_p": 0.1}), logits_of(probs)) == [0, 1, 2, 3, 4]
    assert kept(SamplingParams(**{**OFF, "min_p": 0.5}), logits_of(probs)) == [0, 1, 2]
    assert kept(SamplingParams(**{**OFF, "min_p": 1.0}), logits_of(probs)) == [0]


def test_filters_compose():
    probs = [0.3, 0.25, 0.2, 0.15, 0.1]
    p = SamplingParams(temperature=1.0, top_k=4, top_p=0.7, min_p=0.7, repeat_penalty=1.0)
    # top-k drops 0.1; top-p over the renormalised 4 keeps 3; min-p 0.7*0.3=0.21 keeps 2
    assert kept(p, logits_of(probs)) == [0, 1]


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_temperature_frequencies(temperature):
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    s = Sampler(SamplingParams(temperature=temperature, seed=42, **OFF))
    n = 20000
    counts = np.bincount([s.sample(logits_of(probs)) for _ in range(n)], minlength=4)
    expected = probs ** (1 / temperature)
    expected /= expected.sum()
    # chi-square with 3 degrees of freedom; 16.27 is the 0.999 quantile
    chi2 = float(((counts - n * expected) ** 2 / (n * expected)).sum())
    assert chi2 < 16.27, (counts, expected)


def test_repeat_penalty_llama_cpp_semantics():
    logits = np.array([2.0, -2.0, 1.5, -1.0, 0.5], dtype=np.float32)
    s = Sampler(SamplingParams(temperature=0.0, repeat_penalty=2.0, repeat_last_n=3))
    s.accept([4, 0, 1, 1])  # the window of 3 keeps 0, 1, 1; a repeat counts once
    assert s.filtered_logits(logits).tolist() == [1.0, -4.0, 1.5, -1.0, 0.5]
    assert s.sample(logits) == 2
    # the sampled token enters the window and pushes the oldest out
    assert s.filtered_logits(logits).tolist() == [2.0, -4.0, 0.75, -1.0, 0.5]


def test_repeat_penalty_changes_greedy_choice():
    logits = np.array([3.0, 2.9, 0.0], dtype=np.float32)
    s = Sampler(SamplingParams(temperature=0.0, repeat_penalty=1.1, repeat_last_n=64))
    assert [s.sample(logits) for _ in range(2)] == [0, 1]
    off = Sampler(SamplingParams(temperature=0.0, repeat_penalty=1.1, repeat_last_n=0))
    assert [off.sample(logits) for _ in range(2)] == [0, 0]


def test_nan_logits():
    logits = np.array([np.nan, 1.0, np.nan, 0.5], dtype=np.float32)
    assert Sampler(SamplingParams(temperature=0.0)).sample(logits) == 1
    s = Sampler(SamplingParams(temperature=1.0, seed=3, **OFF))
    assert {s.sample(logits) for _ in range(200)} == {1, 3}
    with pytest.raises(SamplingError, match="NaN"):
        Sampler(SamplingParams()).sample(np.full(8, np.nan, dtype=np.float32))
    with pytest.raises(TmacError):
        Sampler(SamplingParams(temperature=0.0)).sample(np.full(8, -np.inf, dtype=np.float32))
    posinf = np.array([0.0, np.inf, 1.0, np.inf], dtype=np.float32)
    assert {Sampler(SamplingParams(seed=i)).sample(posinf) for i in range(20)} == {1, 3}


def test_bad_shapes():
    with pytest.raises(SamplingError):
        Sampler(SamplingParams()).sample(np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(SamplingError):
        Sampler(SamplingParams()).sample(np.zeros(0, dtype=np.float32))


def test_input_is_not_modified(rng):
    logits = rng.standard_normal(100).astype(np.float32)
    before = logits.copy()
    s = Sampler(SamplingParams(temperature=0.8, seed=1, repeat_penalty=1.3))
    s.accept(range(50))
    s.sample(logits)
    assert np.array_equal(logits, before)


def test_large_vocab_is_fast(rng):
    import time

    logits = rng.standard_normal(128_256).astype(np.float32)
    s = Sampler(SamplingParams(seed=0))
    s.accept(range(64))
    start = time.perf_counter()
    for _ in range(20):
        s.sample(logits)
    assert (time.perf_counter() - start) / 20 < 0.05


@pytest.mark.parametrize(
    "field, value",
    [
        ("temperature", -0.1),
        ("temperature", math.nan),
        ("temperature", 1000.0),
        ("top_k", -1),
        ("top_k", 2.5),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("min_p", -0.01),
        ("min_p", 1.01),
        ("repeat_penalty", 0.0),
        ("repeat_penalty", math.inf),
        ("repeat_last_n", -2),
        ("max_tokens", 0),
        ("seed", -1),
        ("seed", 2**64),
        ("seed", "7"),
        ("top_k", True),
    ],
)
def test_params_validation(field, value):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**{field: value})


def test_params_defaults():
    p = SamplingParams()
    assert (p.temperature, p.top_k, p.top_p, p.min_p, p.repeat_penalty, p.repeat_last_n, p.max_tokens, p.seed) == (
        0.7,
        40,
        0.95,
        0.05,
        1.1,
        64,
        512,
        None,
    )


def test_fast_top_p_equals_a_full_sort(rng):
    """The candidate-sorting top-p keeps exactly what sorting the whole vocabulary keeps,
    ties (kept in id order) and flat distributions included."""
    from tmac_core.sampling import _softmax, _top_p_removed

    for trial in range(60):
        n = int(rng.integers(2, 5000))
        x = (rng.standard_normal(n) * rng.choice([0.01, 1.0, 8.0])).astype(np.float32)
        if trial % 3 == 0:
            x = np.round(x, 1)  # many exact ties
        if trial % 4 == 1:
            x[rng.random(n) < 0.7] = -np.inf  # as after top-k
            x[0] = 1.0
        top_p = float(rng.choice([0.05, 0.5, 0.9, 0.95, 0.999]))
        order = np.argsort(-x, kind="stable")
        n_keep = int(np.searchsorted(np.cumsum(_softmax(x)[order]), top_p)) + 1
        expect = np.ones(n, dtype=bool)
        expect[order[:n_keep]] = False
        np.testing.assert_array_equal(_top_p_removed(x, top_p), expect)


@pytest.mark.parametrize("temperature", [1e-3, 1e-30, 1e-38, 5e-324])
def test_a_tiny_temperature_is_greedy_not_nan(temperature):
    logits = np.array([1.0, 3.0, 2.5, -1.0], np.float32)
    sampler = Sampler(SamplingParams(temperature=temperature, top_k=0, top_p=1.0, min_p=0.0, seed=1))
    with np.errstate(over="raise", invalid="raise"):  # no overflow or NaN on the way
        picks = {sampler.sample(logits.copy()) for _ in range(20)}
    assert picks == {1}
