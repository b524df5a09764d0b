"""The curated model list (assets/catalog.json) and what each variant will cost on this machine.

Every catalog model has one source GGUF on the Hub; the runtime repacks it to
4 or 2 bits at load time, so each model offers a "4-bit" and a "2-bit" variant.
For a variant we estimate the packed size, the RAM needed at the default
context, and a decode speed from a memory-bandwidth model (decode is bandwidth
bound: every weight is read once per token). Pure Python: must not import
PySide6, huggingface_hub or tmac_core.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.catalog.errors import CatalogError

SCALE_OVERHEAD_BITS = 0.5             # fp16 scale + fp16 zero per group of 64 weights (repack.py, layout.py)
RESIDUAL_SCALE_OVERHEAD_BITS = 1.0    # the output residual pass uses 32-wide groups
KV_BYTES_PER_VALUE = 2                # the runtime keeps K and V in fp16 (EngineInfo.kv_cache_bytes)
TILE_ROWS = 64                        # packed matrices are padded to a multiple of 64 rows
RUNTIME_OVERHEAD_BYTES = 200_000_000  # interpreter, tokenizer, activations, logits, thread stacks
DEFAULT_CONTEXT = 2048
DEFAULT_BANDWIDTH_BYTES_PER_S = 20e9  # a dual-channel DDR4 laptop, as achieved by a streaming read
BANDWIDTH_EFFICIENCY = 0.7            # kernels reach ~60–80 % of streaming bandwidth in practice

_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "id": str, "name": str, "repo_id": str, "filename": str, "source_quant": str, "size_bytes": int,
    "license": str, "parameters": int, "architecture": str, "context_length": int, "gated": bool,
    "dim": int, "hidden_dim": int, "n_layers": int, "n_heads": int, "n_kv_heads": int, "head_dim": int,
    "vocab_size": int, "tied_embeddings": bool, "bits": list,
}


@dataclass(frozen=True)
class CatalogModel:
    id: str
    name: str
    repo_id: str
    filename: str
    source_quant: str
    size_bytes: int               # approximate; the Hub's size is authoritative at download time
    license: str
    parameters: int
    architecture: str
    context_length: int
    gated: bool
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    tied_embeddings: bool
    bits: tuple[int, ...]
    size_is_approximate: bool = True

    def variants(self) -> list["ModelVariant"]:
        return [ModelVariant(self, b) for b in self.bits]


@dataclass(frozen=True)
class ModelVariant:
    model: CatalogModel
    bits: int

    @property
    def label(self) -> str:
        return f"{self.bits}-bit"

    @property
    def key(self) -> str:
        return f"{self.model.id}@{self.bits}bit"


@dataclass(frozen=True)
class VariantEstimate:
    packed_bytes: int             # repacked weights on disk / mapped in memory
    kv_cache_bytes: int           # at `context` tokens
    ram_bytes: int                # packed + KV + runtime overhead
    bytes_per_token: int          # memory read to produce one token (weights + output head + KV)
    decode_tokens_per_s: float    # bandwidth model; an upper-bound style estimate, not a promise
    context: int


def default_catalog_path() -> Path:
    # PyInstaller puts data under sys._MEIPASS; in a checkout it is <repo>/assets.
    base = Path(getattr(sys, "_MEIPASS", Path(__file__).resolve().parents[2]))
    return base / "assets" / "catalog.json"


def parse_catalog(document: Any) -> list[CatalogModel]:
    """Validate a parsed catalog document; raise CatalogError naming the first bad entry."""
    if not isinstance(document, dict) or not isinstance(document.get("models"), list):
        raise CatalogError("catalog must be an object with a 'models' list")
    if document.get("catalog_version") != 1:
        raise CatalogError(f"unsupported catalog_version {document.get('catalog_version')!r}")
    models: list[CatalogModel] = []
    seen: set[str] = set()
    for index, entry in enumerate(document["models"]):
        where = f"catalog entry {index} ({entry.get('id', '?') if isinstance(entry, dict) else '?'})"
        if not isinstance(entry, dict):
            raise CatalogError(f"{where}: not an object")
        for name, kind in _REQUIRED.items():
            value = entry.get(name)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise CatalogError(f"{where}: field {name!r} missing or not {getattr(kind, '__name__', kind)}")
        if entry["id"] in seen:
            raise CatalogError(f"{where}: duplicate id")
        seen.add(entry["id"])
        if entry["repo_id"].count("/") != 1 or not entry["filename"].endswith(".gguf"):
            raise CatalogError(f"{where}: repo_id must be 'owner/name' and filename a .gguf")
        if "/" in entry["filename"] or "\\" in entry["filename"] or entry["filename"].startswith("."):
            raise CatalogError(f"{where}: filename must be a plain file name")
        if not entry["bits"] or any(b not in (2, 4) for b in entry["bits"]):
            raise CatalogError(f"{where}: bits must be a non-empty list of 2 and/or 4")
        for name in ("size_bytes", "parameters", "context_length", "dim", "n_layers", "n_heads", "n_kv_heads",
                     "head_dim", "vocab_size", "hidden_dim"):
            if entry[name] <= 0:
                raise CatalogError(f"{where}: {name} must be positive")
        if entry["vocab_size"] * entry["dim"] >= entry["parameters"]:
            raise CatalogError(f"{where}: parameters smaller than the embedding table")
        fields = {name: entry[name] for name in _REQUIRED}
        fields["bits"] = tuple(entry["bits"])
        fields["size_is_approximate"] = bool(entry.get("size_is_approximate", True))
        models.append(CatalogModel(**fields))
    return models


def load_catalog(path: Path | None = None) -> list[CatalogModel]:
    path = Path(path) if path is not None else default_catalog_path()
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CatalogError(f"cannot read {path}: {error}") from error
    return parse_catalog(document)


def find_model(models: list[CatalogModel], model_id: str) -> CatalogModel:
    for model in models:
        if model.id == model_id:
            return model
    raise CatalogError(f"no catalog model {model_id!r}")


def runtime_matrices(model: CatalogModel) -> list[tuple[str, int, int]]:
    """(GGUF tensor name, rows, columns) of every matrix the runtime packs, embedding table included."""
    q_dim, kv_dim = model.n_heads * model.head_dim, model.n_kv_heads * model.head_dim
    out = [("token_embd.weight", model.vocab_size, model.dim)]
    if not model.tied_embeddings:
        out.append(("output.weight", model.vocab_size, model.dim))
    for layer in range(model.n_layers):
        b = f"blk.{layer}."
        out += [(b + "attn_q.weight", q_dim, model.dim), (b + "attn_k.weight", kv_dim, model.dim),
                (b + "attn_v.weight", kv_dim, model.dim), (b + "attn_output.weight", model.dim, q_dim),
                (b + "ffn_gate.weight", model.hidden_dim, model.dim),
                (b + "ffn_up.weight", model.hidden_dim, model.dim),
                (b + "ffn_down.weight", model.dim, model.hidden_dim)]
    return out


def runtime_tensor_bits(model: CatalogModel, name: str, bits: int) -> int:
    """The bits the runtime gives one matrix: a copy of tmac_core/models/llama.py:layer_bits
    (the 2-bit preset keeps the embedding/output table, attn_v and the first and last layers at 4)."""
    if bits != 2:
        return bits
    if name in ("token_embd.weight", "output.weight") or ".attn_v." in name:
        return 4
    layer = int(name.split(".")[1]) if name.startswith("blk.") else -1
    return 4 if layer in (0, model.n_layers - 1) else 2


def _matrix_bytes(rows: int, cols: int, bits: int, scale_overhead_bits: float = SCALE_OVERHEAD_BITS) -> float:
    rows = -(-rows // TILE_ROWS) * TILE_ROWS
    return rows * cols * (bits + scale_overhead_bits) / 8


def runtime_packed_bytes(model: CatalogModel, bits: int) -> int:
    """Bytes of repacked matrices the runtime holds for a Q8_0 source at `bits` (EngineInfo.packed_bytes).
    At 4 bits a Q8_0 output table also gets a second 4-bit pass on its residual in 32-wide groups
    (tmac_core/models/llama.py:output_residual)."""
    total = sum(_matrix_bytes(r, c, runtime_tensor_bits(model, n, bits)) for n, r, c in runtime_matrices(model))
    if bits == 4:
        total += _matrix_bytes(model.vocab_size, model.dim, 4, scale_overhead_bits=RESIDUAL_SCALE_OVERHEAD_BITS)
    return int(total)


def kv_cache_bytes(model: CatalogModel, context: int) -> int:
    # K and V, per layer, per KV head: (seq_len, head_dim)
    return 2 * model.n_layers * model.n_kv_heads * model.head_dim * context * KV_BYTES_PER_VALUE


def bytes_read_per_token(model: CatalogModel, bits: int, position: int) -> int:
    """Memory traffic for one decode step at `position`: every packed matrix except the embedding
    table, which is read one row per token unless it doubles as the output head (tied), plus the
    KV cache so far."""
    weights = runtime_packed_bytes(model, bits)
    if not model.tied_embeddings:
        weights -= _matrix_bytes(model.vocab_size, model.dim, runtime_tensor_bits(model, "token_embd.weight", bits))
    return int(weights + kv_cache_bytes(model, position))


def predict_decode_tokens_per_s(model: CatalogModel, bits: int, bandwidth_bytes_per_s: float, *,
                                position: int = 256, efficiency: float = BANDWIDTH_EFFICIENCY) -> float:
    """Decode speed from the bandwidth model: usable bandwidth ÷ bytes read per token."""
    if bandwidth_bytes_per_s <= 0:
        raise ValueError("bandwidth must be positive")
    return bandwidth_bytes_per_s * efficiency / bytes_read_per_token(model, bits, position)


def estimate_variant(variant: ModelVariant, *, bandwidth_bytes_per_s: float = DEFAULT_BANDWIDTH_BYTES_PER_S,
                     context: int = DEFAULT_CONTEXT) -> VariantEstimate:
    model, bits = variant.model, variant.bits
    context = min(context, model.context_length)
    packed = runtime_packed_bytes(model, bits)
    kv = kv_cache_bytes(model, context)
    return VariantEstimate(
        packed_bytes=packed, kv_cache_bytes=kv, ram_bytes=packed + kv + RUNTIME_OVERHEAD_BYTES,
        bytes_per_token=bytes_read_per_token(model, bits, min(256, context)),
        decode_tokens_per_s=predict_decode_tokens_per_s(model, bits, bandwidth_bytes_per_s,
                                                        position=min(256, context)),
        context=context,
    )


def measure_memory_bandwidth(buffer_bytes: int = 64 * 1024 * 1024, repeats: int = 3) -> float:
    """Rough copy bandwidth in bytes/s (read + write counted), best of `repeats`. ~50 ms; stdlib only.

    A bytearray slice assignment is one memcpy, so this measures the memory system, not Python.
    """
    source = bytearray(buffer_bytes)
    target = bytearray(buffer_bytes)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        target[:] = source
        best = min(best, time.perf_counter() - start)
    return 2 * buffer_bytes / max(best, 1e-9)
