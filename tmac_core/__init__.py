"""T-MAC Chat's runtime: low-bit LUT kernels and the model runtime built on them.

A library, not an app: no Qt, no printing, no exiting; it raises the typed
errors of tmac_core.errors. The public API:

    from tmac_core import Engine, SamplingParams, Chunk, EngineInfo, default_model_path
    from tmac_core import inspect_model, ModelSummary, ModelConfig

Engine, inspect_model and friends are imported on first use, so `import tmac_core.types`
and `tmac_core.plan` (what the GUI process needs) do not load numpy or the compiled kernels.
"""

from typing import TYPE_CHECKING

from tmac_core.errors import (  # noqa: F401
    ChatTemplateError,
    ContextOverflowError,
    EngineBusyError,
    KernelError,
    ModelFormatError,
    ModelLoadError,
    PerplexityError,
    TemplateSecurityError,
    TmacError,
    TokenizerError,
    UnsupportedCpuError,
    UnsupportedModelError,
)
from tmac_core.plan import ModelConfig  # noqa: F401
from tmac_core.types import Chunk, EngineInfo, ModelSummary  # noqa: F401

__version__ = "0.1.0"

if TYPE_CHECKING:  # the lazy names below, as type checkers should see them
    from tmac_core.config import inspect_model as inspect_model
    from tmac_core.engine import Engine as Engine
    from tmac_core.engine import default_model_path as default_model_path
    from tmac_core.sampling import SamplingError as SamplingError
    from tmac_core.sampling import SamplingParams as SamplingParams

_LAZY = {
    "Engine": "tmac_core.engine",
    "default_model_path": "tmac_core.engine",
    "inspect_model": "tmac_core.config",
    "SamplingParams": "tmac_core.sampling",
    "SamplingError": "tmac_core.sampling",
}


def __getattr__(name: str) -> object:  # PEP 562: the names in _LAZY, imported on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tmac_core' has no attribute {name!r}")
