"""Rewriting a GGUF file with some metadata changed, and the wrong-typed values the
metadata fuzz tests put in each key (tests/runtime/test_gguf_metadata_types.py).

`rewrite` re-emits every key (with its own value type) and every tensor (its bytes
unchanged) through the tests' writer, so a mutated file differs from its source in the
mutated keys only. No Qt.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from tests.runtime.gguf_writer import GGUFWriter
from tmac_core.loading.gguf import GGUFFile, ValueType

# (label, value, value type, element type): every wrong type a key can hold, plus
# values of the right type that are out of range (huge, negative, zero, NaN, empty).
V = ValueType
WRONG_VALUES: list[tuple[str, Any, ValueType, ValueType | None]] = [
    ("u32-zero", 0, V.UINT32, None),
    ("u32-seven", 7, V.UINT32, None),
    ("u32-max", 2**32 - 1, V.UINT32, None),
    ("i32-negative", -1, V.INT32, None),
    ("i64-min", -(2**63), V.INT64, None),
    ("u64-max", 2**64 - 1, V.UINT64, None),
    ("u8", 3, V.UINT8, None),
    ("f32-nan", math.nan, V.FLOAT32, None),
    ("f64-inf", math.inf, V.FLOAT64, None),
    ("f32-negative", -1.5, V.FLOAT32, None),
    ("f32-huge", 3e38, V.FLOAT32, None),
    ("bool", True, V.BOOL, None),
    ("str", "x", V.STRING, None),
    ("str-empty", "", V.STRING, None),
    ("str-not-utf8", b"\xff\xfe<", V.STRING, None),
    ("array-i32", [1, 2, 3], V.ARRAY, V.INT32),
    ("array-u64-huge", [2**64 - 1], V.ARRAY, V.UINT64),
    ("array-f32-nan", [math.nan, 1.0], V.ARRAY, V.FLOAT32),
    ("array-str", ["a", "b"], V.ARRAY, V.STRING),
    ("array-str-not-utf8", [b"\xff", b"\xc3("], V.ARRAY, V.STRING),
    ("array-bool", [True, False], V.ARRAY, V.BOOL),
    ("array-empty", [], V.ARRAY, V.UINT8),
    ("array-nested", [(V.UINT8, [1]), (V.STRING, ["x"])], V.ARRAY, V.ARRAY),
]

# a value meaning "remove the key"
DELETE = object()


def _as_written(value: Any, vtype: ValueType, etype: ValueType | None) -> Any:
    """A value as the reader returned it → what the writer takes."""
    if vtype is ValueType.STRING:
        return value.encode("utf-8", "surrogateescape")
    if vtype is ValueType.ARRAY:
        if etype is ValueType.STRING:
            return [v.encode("utf-8", "surrogateescape") for v in value]
        if etype is ValueType.ARRAY:
            raise NotImplementedError("nested arrays are not re-emitted")
        return list(value)
    return value


def rewrite(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    changes: dict[str, Any],
    tensor_bytes: dict[str, np.ndarray] | None = None,
) -> None:
    """Copy GGUF `src` to `dst` with `changes` applied: key → (value, type, element type),
    or DELETE. A new key is added after the existing ones. `tensor_bytes` replaces the
    raw bytes of some tensors (same type and size)."""
    with GGUFFile.open(src) as f:
        w = GGUFWriter(alignment=f.alignment)
        for key, value in f.metadata.items():
            if key == "general.alignment":
                continue  # the writer adds it
            vtype, etype = f.metadata_types[key]
            change = changes.get(key)
            if change is DELETE:
                continue
            if change is not None:
                w.add(key, change[0], change[1], change[2])
            else:
                w.add(key, _as_written(value, vtype, etype), vtype, etype)
        for key, change in changes.items():
            if key not in f.metadata and change is not DELETE:
                w.add(key, change[0], change[1], change[2])
        for name, info in f.tensors.items():
            raw = (tensor_bytes or {}).get(name)
            w.add_raw_tensor(name, f.tensor_bytes(name).copy() if raw is None else raw, info.ggml_type, info.shape)
        w.write(dst)


def write_tiny_synth(path: str | os.PathLike[str], n_ctx_train: int = 64, weight_type: str = "q8_0") -> None:
    """The tiny synthetic Llama of the load tests (0.1M parameters, a real BPE vocabulary)."""
    from tmac_core.models import ARCHITECTURES
    from tmac_core.synth import SynthSpec, write_synthetic

    cfg = ARCHITECTURES["llama"].config(
        dim=64,
        hidden_dim=128,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        head_dim=16,
        vocab_size=320,
        n_ctx_train=n_ctx_train,
    )
    write_synthetic(path, SynthSpec(config=cfg, weight_type=weight_type, seed=5))
