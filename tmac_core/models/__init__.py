"""Model architectures: one file each in this package, registered in one explicit
dict (PyInstaller cannot see dynamic imports). An architecture file holds an
`Architecture` (tmac_core.plan): the flags its ModelConfig carries, which the plan,
the loader and the forward pass switch on. Adding one is one file, one line in
ARCHITECTURES, one test (CONTRIBUTING.md).

Standard library only at import, like tmac_core.plan: the app reads the registry to
build a ModelConfig from its catalog. The loader (numpy, the compiled runtime) is
imported by `get_architecture`, when a model is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from tmac_core.errors import UnsupportedModelError
from tmac_core.models import bitnet, llama, qwen2
from tmac_core.plan import Architecture, ModelConfig

if TYPE_CHECKING:  # annotations only: numpy and the compiled runtime load with the loader
    from tmac_core.loading.cache import CacheWriter
    from tmac_core.loading.gguf import GGUFFile
    from tmac_core.models._llama import LlamaRuntime
    from tmac_core.models.loader import Weights

# GGUF `general.architecture` (ModelConfig.arch) → the architecture we run it as
ARCHITECTURES = {
    "llama": llama.ARCH,  # Llama 2/3/3.2, SmolLM2, TinyLlama
    "mistral": llama.ARCH,  # older llama.cpp converts Mistral under its own key prefix, Llama's tensors
    "qwen2": qwen2.ARCH,
    "bitnet-b1.58": bitnet.B158,  # microsoft/bitnet-b1.58-2B-4T (bitnet.cpp's GGUF)
    "bitnet-25": bitnet.B158,  # the same model's first GGUF upload (April 2025)
    "bitnet": bitnet.ONEBITLLM,  # llama.cpp's converter for 1bitLLM/bitnet_b1_58-*
    # BitNet-packed Llama folders (Falcon3-1.58bit, Falcon-E): no GGUF file uses this name
    "llama-bitnet": bitnet.LLAMA_BITNET,
}


def architecture(name: str) -> Architecture:
    """The registered architecture for a GGUF `general.architecture` (or ModelConfig.arch)."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise UnsupportedModelError(
            f"unsupported architecture {name!r} (supported: {', '.join(sorted(ARCHITECTURES))})"
        ) from None


class ArchitectureLoader(Protocol):
    """What `get_architecture` returns: a module (models/loader.py) with these functions."""

    def load_weights(
        self, gguf: GGUFFile, cfg: ModelConfig, bits: int | None, progress: Callable[[float], None] | None = None
    ) -> Weights: ...

    def work_bytes(self, gguf: GGUFFile, cfg: ModelConfig, bits: int | None) -> int: ...

    def write_weights(
        self,
        gguf: GGUFFile,
        cfg: ModelConfig,
        bits: int | None,
        writer: CacheWriter,
        done: Callable[[int], None] | None = None,
    ) -> None: ...

    def build_runtime(
        self, cfg: ModelConfig, weights: Weights, n_ctx: int, max_batch: int = 32, exact_activations: bool = False
    ) -> LlamaRuntime: ...


def get_architecture(arch: str) -> ArchitectureLoader:
    """The loader for a ModelConfig.arch: `load_weights(gguf, cfg, bits, progress)` and
    `build_runtime(cfg, weights, n_ctx, max_batch)`. Every registered architecture runs
    on the one Llama-family graph, switched by the ModelConfig's flags."""
    architecture(arch)
    from tmac_core.models import loader

    return loader
