"""Check a GGUF file the way the runtime will, before the app accepts it, and describe it.

`inspect_gguf(path)` runs the runtime's hardened reader (`GGUFFile.open`, metadata and
tensor index only, nothing is dequantized) and `ModelConfig.from_gguf` (architecture,
hyperparameters, every tensor's shape). On failure it raises the runtime's typed error,
whose message names the file, the field and the byte offset. With app/hardware.py this is
one of the two app modules that reach below tmac_core's public API. Pure Python: must not
import PySide6.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from app.catalog.catalog import CatalogModel


@dataclass(frozen=True)
class ModelFileSummary:
    path: Path
    name: str                 # general.name, or the file name
    arch: str                 # "llama" | "qwen2"
    n_params: int             # elements over all tensors
    file_size: int
    file_type: str            # the most common tensor type ("Q8_0", "Q4_1", ...)
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    context_length: int
    tied_embeddings: bool

    def as_catalog_model(self, model_id: str) -> CatalogModel:
        """The same shapes as a CatalogModel, so the catalog's size, RAM and speed estimates apply."""
        return CatalogModel(
            id=model_id, name=self.name, repo_id="local/local", filename=self.path.name,
            source_quant=self.file_type, size_bytes=self.file_size, license="", parameters=self.n_params,
            architecture=self.arch, context_length=self.context_length, gated=False, dim=self.dim,
            hidden_dim=self.hidden_dim, n_layers=self.n_layers, n_heads=self.n_heads,
            n_kv_heads=self.n_kv_heads, head_dim=self.head_dim, vocab_size=self.vocab_size,
            tied_embeddings=self.tied_embeddings, bits=(4, 2), size_is_approximate=False)


def inspect_gguf(path: str | os.PathLike) -> ModelFileSummary:
    """Validate `path` as a model this runtime can load, and summarise it.

    Raises tmac_core.errors.ModelFormatError (corrupt / truncated / malformed, with field and
    offset), UnsupportedModelError (well-formed but not supported) or ModelLoadError (cannot open).
    """
    from tmac_core.config import ModelConfig
    from tmac_core.loading.gguf import GGUFFile

    path = Path(path)
    with GGUFFile.open(path) as gguf:
        config = ModelConfig.from_gguf(gguf)
        try:
            name = str(gguf.get_str("general.name", "")).strip()
        except Exception:  # noqa: BLE001 - a mistyped name is no reason to refuse the model
            name = ""
        counts: dict[str, int] = {}
        n_params = 0
        for info in gguf.tensors.values():
            n_params += info.n_elements
            counts[info.ggml_type.name] = counts.get(info.ggml_type.name, 0) + info.n_elements
        file_size = gguf.file_size
    return ModelFileSummary(
        path=path, name=name or path.stem, arch=config.arch, n_params=n_params, file_size=file_size,
        file_type=max(counts, key=counts.get) if counts else "?", dim=config.dim,
        hidden_dim=config.hidden_dim, n_layers=config.n_layers, n_heads=config.n_heads,
        n_kv_heads=config.n_kv_heads, head_dim=config.head_dim, vocab_size=config.vocab_size,
        context_length=config.seq_len, tied_embeddings=config.tie_embeddings)
