"""The curated model list (assets/catalog.json) and what each variant will cost on this machine.

Every catalog model has one source on the Hub: a GGUF file, or (`format` "folder") a
Hugging Face model folder whose allow-listed files are downloaded (app.catalog.download).
The runtime runs its matrices as in the file (each at its own type's bits, exactly: no
requantization) or repacks them to 4 or 2 bits at load time, so a model offers up to an
"as in the file", a "4-bit" and a "2-bit" variant (`bits` None, 4, 2). A native low-bit
model (`native`: "ternary", "2-bit", "4-bit": trained or quantization-aware-trained at that
width, e.g. BitNet b1.58, EfficientQAT GPTQ exports) offers only what it has: as in the
file, its own codes; requantizing those to another width would only lose quality.
For a variant we estimate the packed size, the RAM needed at the default
context, and a decode speed from a memory-bandwidth model (decode is bandwidth
bound: every weight is read once per token). The sizes are the runtime's own:
tmac_core.plan lists the matrices and their packed bytes exactly. Pure Python: may
import tmac_core.plan, tmac_core.types and the architecture registry
(tmac_core.models), which load neither numpy nor the compiled runtime; must not
import PySide6, huggingface_hub or the rest of tmac_core.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.catalog.context import choose_n_ctx
from app.catalog.errors import CatalogError
from tmac_core.errors import UnsupportedModelError
from tmac_core.models import architecture
from tmac_core.plan import (
    MATRIX_ROLES,
    ModelConfig,
    SourceSummary,
    TensorSpec,
    is_quantized,
    kv_cache_bytes,
    matrix_bytes,
    packed_bytes,
    parse_gptq_type,
    source_summary,
    tensor_plan,
)
from tmac_core.types import ModelSummary

RUNTIME_OVERHEAD_BYTES = 200_000_000  # interpreter, tokenizer, activations, logits, thread stacks
DEFAULT_CONTEXT = 2048
DEFAULT_BANDWIDTH_BYTES_PER_S = 20e9  # a dual-channel DDR4 laptop, as achieved by a streaming read
BANDWIDTH_EFFICIENCY = 0.7  # kernels reach ~60–80 % of streaming bandwidth in practice

_REQUIRED: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "name": str,
    "repo_id": str,
    "filename": str,
    "source_quant": str,
    "size_bytes": int,
    "license": str,
    "parameters": int,
    "architecture": str,
    "context_length": int,
    "gated": bool,
    "dim": int,
    "hidden_dim": int,
    "n_layers": int,
    "n_heads": int,
    "n_kv_heads": int,
    "head_dim": int,
    "vocab_size": int,
    "tied_embeddings": bool,
    "bits": list,
}
FORMATS = ("gguf", "folder")
# What a native low-bit model is trained at, and how its card names its one variant.
NATIVE_FORMATS = {
    "ternary": "native ternary (1.58-bit, as trained)",
    "2-bit": "native 2-bit (as trained)",
    "3-bit": "native 3-bit (as trained)",
    "4-bit": "native 4-bit (as trained)",
}
_OPTIONAL: dict[str, type | tuple[type, ...]] = {
    "format": str,
    "native": str,
    "embedding_type": str,  # GGML type of token_embd/output when it differs from source_quant
    "plan_type": str,  # the GGML type whose kernel format the block matrices run in (a folder's stand-in)
    "hf_architecture": str,  # a folder's config.json architectures[0]
    "quant_method": str,  # a folder's quantization_config quant_method ("gptq", "bitnet")
    "size_is_approximate": bool,
}


@dataclass(frozen=True)
class CatalogModel:
    """A model the page offers: where to get it and its ModelConfig (shapes for the estimates)."""

    id: str
    name: str
    repo_id: str
    filename: str
    source_quant: str  # GGML type of the source file's matrices ("Q8_0")
    size_bytes: int  # approximate; the Hub's size is authoritative at download time
    license: str
    parameters: int
    gated: bool
    config: ModelConfig  # catalog.json lists shapes only: rope_theta/norm_eps keep their defaults
    bits: tuple[int | None, ...]  # the variants offered; None: as in the file
    size_is_approximate: bool = True
    tensor_types: dict[str, str] = field(default_factory=dict, hash=False)  # per tensor, for an inspected file
    format: str = "gguf"  # "gguf": `filename` is the file; "folder": `filename` names the installed folder
    native: str | None = None  # NATIVE_FORMATS key for a native low-bit model
    embedding_type: str | None = None
    plan_type: str | None = None
    hf_architecture: str | None = None
    quant_method: str | None = None

    @property
    def is_folder(self) -> bool:
        return self.format == "folder"

    @property
    def format_label(self) -> str:
        """What the card says the model is: "native ternary", "native 2-bit", "GGUF Q8_0", "safetensors"."""
        if self.native is not None:
            return f"native {self.native}"
        return "safetensors folder" if self.is_folder else f"GGUF {self.source_quant}"

    @classmethod
    def from_summary(cls, summary: ModelSummary, model_id: str) -> CatalogModel:
        """An inspected local file as a CatalogModel, so the same estimates apply to it. A file
        whose block matrices are ternary or GPTQ codes is a native low-bit model (native_format)."""
        path = Path(summary.path)
        native = native_format(summary.tensor_types)
        return cls(
            id=model_id,
            name=summary.name,
            repo_id="local/local",
            filename=path.name,
            source_quant=summary.file_type,
            size_bytes=summary.file_size,
            license="",
            parameters=summary.n_params,
            gated=False,
            config=summary.config,
            bits=(None,) if native else (None, 4, 2) if runs_as_in_file(summary.file_type) else (4, 2),
            size_is_approximate=False,
            tensor_types=summary.tensor_types,
            native=native,
        )

    def variants(self) -> list[ModelVariant]:
        return [ModelVariant(self, b) for b in self.bits]


TERNARY_TYPES = frozenset({"TQ1_0", "TQ2_0", "I2_S"})


def native_format(tensor_types: dict[str, str]) -> str | None:
    """NATIVE_FORMATS key of a file whose block matrices are all ternary ("ternary") or all GPTQ
    codes of one width ("2-bit"...), else None: such weights are the model as trained, and
    requantizing them to another width would only lose quality."""
    blocks = {t for name, t in tensor_types.items() if name.startswith("blk.") and name.endswith(".weight")}
    blocks -= {"F32", "F16", "BF16"}  # norms
    if blocks and blocks <= TERNARY_TYPES:
        return "ternary"
    widths = {parse_gptq_type(t) for t in blocks}
    if blocks and None not in widths and len({w[0] for w in widths if w is not None}) == 1:
        bits = next(w[0] for w in widths if w is not None)
        return f"{bits}-bit" if f"{bits}-bit" in NATIVE_FORMATS else None
    return None


def runs_as_in_file(source_quant: str) -> bool:
    """Whether a file whose matrices are mostly `source_quant` has an "as in the file" variant:
    quantized files do (each matrix runs at its own type's bits); float files are repacked."""
    return is_quantized(source_quant.upper())


def bits_label(bits: int | None, source_quant: str | None = None, native: str | None = None) -> str:
    """How the app names a variant: "4-bit", "2-bit", "as in the file (Q4_K_M)", or a native
    model's one variant: "native ternary (1.58-bit, as trained)"."""
    if bits is not None:
        return f"{bits}-bit"
    if native is not None:
        return NATIVE_FORMATS[native]
    return f"as in the file ({source_quant})" if source_quant else "as in the file"


@dataclass(frozen=True)
class ModelVariant:
    model: CatalogModel
    bits: int | None  # None: as in the file

    @property
    def label(self) -> str:
        return bits_label(self.bits, self.model.source_quant, self.model.native)

    @property
    def key(self) -> str:
        return f"{self.model.id}@{'file' if self.bits is None else f'{self.bits}bit'}"


@dataclass(frozen=True)
class VariantEstimate:
    packed_bytes: int  # repacked weights on disk / mapped in memory
    kv_cache_bytes: int  # at `context` tokens
    ram_bytes: int  # packed + KV + runtime overhead
    bytes_per_token: int  # memory read to produce one token (weights + output head + KV)
    decode_tokens_per_s: float  # bandwidth model; an upper-bound style estimate, not a promise
    context: int
    bits_per_weight: float  # packed matrices (scales included) per matrix weight: what will run


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
        for name, kind in _OPTIONAL.items():
            if name in entry and not isinstance(entry[name], kind):
                raise CatalogError(f"{where}: field {name!r} is not {getattr(kind, '__name__', kind)}")
        if entry["id"] in seen:
            raise CatalogError(f"{where}: duplicate id")
        seen.add(entry["id"])
        kind_of_source = entry.get("format", "gguf")
        if kind_of_source not in FORMATS:
            raise CatalogError(f"{where}: format must be one of {', '.join(FORMATS)}")
        folder = kind_of_source == "folder"
        if entry["repo_id"].count("/") != 1 or entry["filename"].endswith(".gguf") == folder:
            raise CatalogError(
                f"{where}: repo_id must be 'owner/name' and filename a .gguf (a folder name for a folder model)"
            )
        if folder and not isinstance(entry.get("hf_architecture"), str):
            raise CatalogError(f"{where}: a folder model names its hf_architecture")
        native = entry.get("native")
        if native is not None:
            if native not in NATIVE_FORMATS:
                raise CatalogError(f"{where}: native must be one of {', '.join(NATIVE_FORMATS)}")
            if entry["bits"] != [None]:
                raise CatalogError(f"{where}: a native {native} model offers only its own variant: bits [null]")
        gptq = parse_gptq_type(entry["source_quant"])
        if native in ("2-bit", "3-bit", "4-bit") and (gptq is None or f"{gptq[0]}-bit" != native):
            raise CatalogError(f"{where}: a native {native} model's source_quant is its GPTQ type (GPTQ_W2G128)")
        if "/" in entry["filename"] or "\\" in entry["filename"] or entry["filename"].startswith("."):
            raise CatalogError(f"{where}: filename must be a plain file name")
        if not entry["bits"] or any(b not in (None, 2, 4) or isinstance(b, bool) for b in entry["bits"]):
            raise CatalogError(f"{where}: bits must be a non-empty list of null (as in the file), 4 and/or 2")
        if None in entry["bits"] and not runs_as_in_file(entry["source_quant"]):
            raise CatalogError(f"{where}: a {entry['source_quant']} file has no as-in-the-file variant")
        for name in (
            "size_bytes",
            "parameters",
            "context_length",
            "dim",
            "n_layers",
            "n_heads",
            "n_kv_heads",
            "head_dim",
            "vocab_size",
            "hidden_dim",
        ):
            if entry[name] <= 0:
                raise CatalogError(f"{where}: {name} must be positive")
        if entry["vocab_size"] * entry["dim"] >= entry["parameters"]:
            raise CatalogError(f"{where}: parameters smaller than the embedding table")
        try:
            arch = architecture(entry["architecture"])
        except UnsupportedModelError as error:
            raise CatalogError(f"{where}: {error}") from None
        config = arch.config(
            dim=entry["dim"],
            hidden_dim=entry["hidden_dim"],
            n_layers=entry["n_layers"],
            n_heads=entry["n_heads"],
            n_kv_heads=entry["n_kv_heads"],
            head_dim=entry["head_dim"],
            vocab_size=entry["vocab_size"],
            n_ctx_train=entry["context_length"],
            tie_embeddings=entry["tied_embeddings"],
        )
        models.append(
            CatalogModel(
                id=entry["id"],
                name=entry["name"],
                repo_id=entry["repo_id"],
                filename=entry["filename"],
                source_quant=entry["source_quant"],
                size_bytes=entry["size_bytes"],
                license=entry["license"],
                parameters=entry["parameters"],
                gated=entry["gated"],
                config=config,
                bits=tuple(entry["bits"]),
                size_is_approximate=bool(entry.get("size_is_approximate", True)),
                format=kind_of_source,
                native=native,
                embedding_type=entry.get("embedding_type"),
                plan_type=entry.get("plan_type"),
                hf_architecture=entry.get("hf_architecture"),
                quant_method=entry.get("quant_method"),
            )
        )
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


def source_types(model: CatalogModel) -> str | dict[str, str]:
    """The plan's `source` for a model: an inspected file's own types, else the catalog's
    (blocks in `plan_type` or `source_quant`, the embedding table and output in `embedding_type`)."""
    if model.tensor_types:
        return model.tensor_types
    blocks = model.plan_type or model.source_quant
    if model.embedding_type is None:
        return blocks
    types = {spec.name: blocks for spec in tensor_plan(model.config, 4, None) if spec.role in MATRIX_ROLES}
    types.update({"token_embd.weight": model.embedding_type, "output.weight": model.embedding_type})
    return types


def model_source_summary(model: CatalogModel) -> SourceSummary:
    """tmac_core.plan.source_summary for a model (type mix, what "as in the file" requantizes)."""
    types = source_types(model)
    if isinstance(types, str):
        types = {spec.name: types for spec in tensor_plan(model.config, 4, None)}
    return source_summary(model.config, types)


def variant_plan(model: CatalogModel, bits: int | None) -> list[TensorSpec]:
    """The matrices the runtime will pack for this model at `bits` (None: as in the file; tmac_core.plan)."""
    return tensor_plan(model.config, bits, source_types(model))


def bytes_read_per_token(model: CatalogModel, bits: int | None, position: int) -> int:
    """Memory traffic for one decode step at `position`: every packed matrix except the embedding
    table, which is read one row per token unless it doubles as the output head (tied), plus the
    KV cache so far."""
    tied = model.config.tie_embeddings
    weights = sum(matrix_bytes(spec) for spec in variant_plan(model, bits) if tied or spec.role != "token_embd")
    return weights + kv_cache_bytes(model.config, position)


def predict_decode_tokens_per_s(
    model: CatalogModel,
    bits: int | None,
    bandwidth_bytes_per_s: float,
    *,
    position: int = 256,
    efficiency: float = BANDWIDTH_EFFICIENCY,
) -> float:
    """Decode speed from the bandwidth model: usable bandwidth ÷ bytes read per token."""
    if bandwidth_bytes_per_s <= 0:
        raise ValueError("bandwidth must be positive")
    return bandwidth_bytes_per_s * efficiency / bytes_read_per_token(model, bits, position)


def estimate_variant(
    variant: ModelVariant,
    *,
    bandwidth_bytes_per_s: float = DEFAULT_BANDWIDTH_BYTES_PER_S,
    context: int | None = DEFAULT_CONTEXT,
    free_bytes: int | None = None,
) -> VariantEstimate:
    """context None: the context the engine picks by itself (app.catalog.context) with free_bytes of
    memory free before the model loads (None: the OS does not say)."""
    model, bits = variant.model, variant.bits
    plan = variant_plan(model, bits)
    packed = packed_bytes(plan)
    if context is None:
        free_after_weights = None if free_bytes is None else free_bytes - packed
        context = choose_n_ctx(model.config.n_ctx_train, kv_cache_bytes(model.config, 1), free_after_weights)
    context = min(context, model.config.n_ctx_train)
    kv = kv_cache_bytes(model.config, context)
    n_weights = sum(spec.rows * spec.cols for spec in plan)
    return VariantEstimate(
        packed_bytes=packed,
        kv_cache_bytes=kv,
        ram_bytes=packed + kv + RUNTIME_OVERHEAD_BYTES,
        bytes_per_token=bytes_read_per_token(model, bits, min(256, context)),
        decode_tokens_per_s=predict_decode_tokens_per_s(model, bits, bandwidth_bytes_per_s, position=min(256, context)),
        context=context,
        bits_per_weight=8.0 * packed / max(n_weights, 1),
    )
