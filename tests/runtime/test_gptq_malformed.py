"""Malformed GPTQ configs and tensors get a clear, typed error naming what is wrong.

Each case changes one thing in a valid layer (tests/data/gptq fixtures) or config.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tmac_core.errors import ModelFormatError, TmacError, UnsupportedModelError
from tmac_core.loading.gptq import gptq_config, parse_gptq_config, unpack_gptq

FIXTURES = Path(__file__).resolve().parents[1] / "data" / "gptq"
BASE = {"quant_method": "gptq", "bits": 4, "group_size": 128, "sym": True, "desc_act": False}

CONFIG_CASES: list[tuple[str, dict[str, Any], type[TmacError], str]] = [
    ("bits 5", {"bits": 5}, UnsupportedModelError, "5-bit"),
    ("bits 8", {"bits": 8}, UnsupportedModelError, "8-bit"),
    ("bits 9", {"bits": 9}, ModelFormatError, "bits"),
    ("bits 0", {"bits": 0}, ModelFormatError, "bits"),
    ("bits huge", {"bits": 2**40}, ModelFormatError, "bits"),
    ("bits string", {"bits": "4"}, ModelFormatError, "must be an integer"),
    ("bits bool", {"bits": True}, ModelFormatError, "must be an integer"),
    ("group_size 0", {"group_size": 0}, ModelFormatError, "group_size"),
    ("group_size negative", {"group_size": -2}, ModelFormatError, "group_size"),
    ("group_size float", {"group_size": 128.0}, ModelFormatError, "group_size"),
    ("sym string", {"sym": "yes"}, ModelFormatError, "sym"),
    ("desc_act int", {"desc_act": 1}, ModelFormatError, "desc_act"),
    ("format marlin", {"checkpoint_format": "marlin"}, UnsupportedModelError, "marlin"),
    ("format gptq_p", {"checkpoint_format": "gptq_p"}, UnsupportedModelError, "gptq_p"),
    ("format contradicts", {"checkpoint_format": "gptq", "format": "gptq_v2"}, ModelFormatError, "contradicts"),
    ("format not a string", {"checkpoint_format": 2}, ModelFormatError, "checkpoint_format"),
    ("quant_method awq", {"quant_method": "awq"}, UnsupportedModelError, "not GPTQ"),
    ("pack_dtype int16", {"pack_dtype": "int16"}, UnsupportedModelError, "pack_dtype"),
    ("dynamic overrides", {"dynamic": {"+:.*down.*": {"bits": 8}}}, UnsupportedModelError, "dynamic"),
]


@pytest.mark.parametrize(
    ("change", "error", "fragment"), [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES]
)
def test_bad_config(change: dict[str, Any], error: type[TmacError], fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        parse_gptq_config({**BASE, **change})


def test_quantization_config_not_an_object() -> None:
    with pytest.raises(ModelFormatError, match="config.json"):
        gptq_config({"quantization_config": [4, 128]})


def _layer(stem: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    with np.load(FIXTURES / f"{stem}.npz") as data:
        arrays = {name: data[name] for name in ("qweight", "qzeros", "scales", "g_idx")}
        return json.loads(str(data["config"])), arrays


Mutation = Callable[[dict[str, Any], dict[str, Any]], None]


def _set(key: str, value: Any) -> Mutation:
    def apply(cfg: dict[str, Any], arrays: dict[str, Any]) -> None:
        arrays[key] = value(arrays[key]) if callable(value) else value

    return apply


def _cfg(**change: Any) -> Mutation:
    def apply(cfg: dict[str, Any], arrays: dict[str, Any]) -> None:
        cfg.update(change)

    return apply


def _swap_two_groups(g: np.ndarray) -> np.ndarray:
    g = g.copy()
    g[0], g[-1] = g[-1], g[0]
    return g


def _unequal_groups(g: np.ndarray) -> np.ndarray:
    g = g.copy()
    g[g == 1] = 0  # group 0 twice as big, group 1 empty
    return g


def _nan_scale(s: np.ndarray) -> np.ndarray:
    s = s.copy()
    s[0, 3] = np.nan
    return s


def _inf_scale(s: np.ndarray) -> np.ndarray:
    s = s.copy()
    s[-1, 0] = np.inf
    return s


def _vary_one_zero(z: np.ndarray) -> np.ndarray:
    z = z.copy().view(np.uint32)
    z[0, 0] ^= np.uint32(0x3)  # one field no longer the symmetric zero
    return z.view(np.int32)


def _as_v1_sym(z: np.ndarray) -> np.ndarray:
    return np.full_like(z, 0x77777777)  # every 4-bit field 7: v1's symmetric zero


def _as_v2_sym(z: np.ndarray) -> np.ndarray:
    return np.full_like(z, np.uint32(0x88888888).view(np.int32))  # every field 8: v2's symmetric zero


# (id, fixture, mutation, error, message fragment)
TENSOR_CASES: list[tuple[str, str, Mutation, type[TmacError], str]] = [
    ("qweight float", "w4g32_asym_v2", _set("qweight", lambda a: a.astype(np.float32)), ModelFormatError, "int32"),
    ("qweight int64", "w4g32_asym_v2", _set("qweight", lambda a: a.astype(np.int64)), ModelFormatError, "int32"),
    ("qweight 1-D", "w4g32_asym_v2", _set("qweight", lambda a: a.reshape(-1)), ModelFormatError, "2-D"),
    ("qweight empty", "w4g32_asym_v2", _set("qweight", lambda a: a[:0]), ModelFormatError, "non-empty"),
    ("qweight columns", "w4g32_asym_v2", _set("qweight", lambda a: a[:, :16]), ModelFormatError, "columns"),
    ("qweight rows", "w4g32_asym_v2", _set("qweight", lambda a: a[:-4]), ModelFormatError, "scales"),
    ("qweight 3-bit rows", "w3g32_asym_v2", _set("qweight", lambda a: a[:-1]), ModelFormatError, "threes"),
    (
        "EfficientQAT native 3-bit",  # ceil(K/10) words of 10 codes: 13 rows for K = 128
        "w3g32_asym_v2",
        _set("qweight", lambda a: np.vstack([a, a[:1]])),
        ModelFormatError,
        "threes",
    ),
    ("qzeros columns", "w4g32_asym_v2", _set("qzeros", lambda a: a[:, :-1]), ModelFormatError, "qzeros"),
    ("qzeros rows", "w4g32_asym_v2", _set("qzeros", lambda a: a[:-1]), ModelFormatError, "qzeros"),
    ("qzeros dtype", "w4g32_asym_v2", _set("qzeros", lambda a: a.astype(np.uint8)), ModelFormatError, "int32"),
    ("scales rows", "w4g32_asym_v2", _set("scales", lambda a: a[:-1]), ModelFormatError, "scales|qzeros"),
    ("scales vs qzeros", "w4g32_asym_v2", _set("scales", lambda a: a[:, :24]), ModelFormatError, "qweight|qzeros"),
    ("scales int", "w4g32_asym_v2", _set("scales", lambda a: a.astype(np.int16)), ModelFormatError, "float16"),
    ("scales nan", "w4g32_asym_v2", _set("scales", _nan_scale), ModelFormatError, "inf or nan"),
    ("scales inf", "w4g32_asym_v2", _set("scales", _inf_scale), ModelFormatError, "inf or nan"),
    (
        "scales not fp16",
        "w4g32_asym_v2",
        _set("scales", lambda a: a.astype(np.float32) * np.float32(1 + 2**-20)),
        UnsupportedModelError,
        "fp16",
    ),
    ("3-bit N not /32", "w3g32_asym_v2", _set("scales", lambda a: a[:, :16]), ModelFormatError, "qweight|qzeros"),
    ("g_idx short", "w4g32_asym_v2_act", _set("g_idx", lambda a: a[:-1]), ModelFormatError, "g_idx"),
    ("g_idx 2-D", "w4g32_asym_v2_act", _set("g_idx", lambda a: a.reshape(2, -1)), ModelFormatError, "g_idx"),
    ("g_idx float", "w4g32_asym_v2_act", _set("g_idx", lambda a: a.astype(np.float32)), ModelFormatError, "integers"),
    ("g_idx too big", "w4g32_asym_v2_act", _set("g_idx", lambda a: a + 1), ModelFormatError, r"\[0, 4\)"),
    ("g_idx negative", "w4g32_asym_v2_act", _set("g_idx", lambda a: a - 1), ModelFormatError, r"\[0, 4\)"),
    ("g_idx huge", "w4g32_asym_v2_act", _set("g_idx", lambda a: a.astype(np.int64) << 40), ModelFormatError, "g_idx"),
    ("g_idx unequal groups", "w4g32_asym_v2_act", _set("g_idx", _unequal_groups), ModelFormatError, "hold 32"),
    ("g_idx missing", "w4g32_asym_v2_act", _set("g_idx", None), ModelFormatError, "no g_idx"),
    (
        "act-order unlabelled",
        "w4g32_asym_v2",
        _set("g_idx", _swap_two_groups),
        ModelFormatError,
        "desc_act is false",
    ),
    ("group not dividing K", "w4g32_asym_v2", _cfg(group_size=48), UnsupportedModelError, "does not divide"),
    (
        "group not a kernel group",
        "w4g128_asym_v2",
        _cfg(group_size=8),
        UnsupportedModelError,
        "not one of",
    ),
    ("group vs scales rows", "w4g32_asym_v2", _cfg(group_size=64), ModelFormatError, "scales"),
    ("v2 labelled v1 (sym)", "w4g32_sym_v2", _cfg(checkpoint_format="gptq"), ModelFormatError, "mislabelled"),
    ("v1 labelled v2 (sym)", "w4g32_sym_v1", _cfg(checkpoint_format="gptq_v2"), ModelFormatError, "mislabelled"),
    (
        "v2 sym zeros labelled v1 asym",
        "w4g32_asym_v1",
        _set("qzeros", _as_v2_sym),
        ModelFormatError,
        "mislabelled",
    ),
    (
        "v1 sym zeros labelled v2 asym",
        "w4g32_asym_v2",
        _set("qzeros", _as_v1_sym),
        ModelFormatError,
        "mislabelled",
    ),
    ("sym with varying zeros", "w4g32_sym_v2", _set("qzeros", _vary_one_zero), ModelFormatError, "sym is true"),
    ("asym labelled sym", "w2g64_asym_v2", _cfg(sym=True), ModelFormatError, "sym is true"),
]


@pytest.mark.parametrize(
    ("stem", "mutate", "error", "fragment"), [c[1:] for c in TENSOR_CASES], ids=[c[0] for c in TENSOR_CASES]
)
def test_bad_layer(stem: str, mutate: Mutation, error: type[TmacError], fragment: str) -> None:
    raw, arrays = _layer(stem)
    mutate(raw, arrays)
    cfg = parse_gptq_config(raw)
    with pytest.raises(error, match=fragment) as caught:
        unpack_gptq("model.layers.0.mlp.down_proj", cfg, **arrays)
    if isinstance(caught.value, ModelFormatError):
        assert caught.value.path == "model.layers.0.mlp.down_proj"
    else:
        assert "model.layers.0.mlp.down_proj" in str(caught.value)


def test_every_unmutated_layer_loads() -> None:
    """The cases above fail because of their one change, not because the fixture is bad."""
    for stem in {case[1] for case in TENSOR_CASES}:
        raw, arrays = _layer(stem)
        unpack_gptq("layer", parse_gptq_config(raw), **arrays)
