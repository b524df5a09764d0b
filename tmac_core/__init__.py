"""T-MAC Chat's runtime: low-bit LUT kernels and the model runtime built on them.

A library, not an app: no Qt, no printing, no exiting; it raises the typed
errors of tmac_core.errors. The public API:

    from tmac_core import Engine, SamplingParams, Chunk, EngineInfo, default_model_path

Engine and friends are imported on first use, so `import tmac_core.types`
(what the GUI process needs) does not load numpy or the compiled kernels.
"""
from tmac_core.errors import (  # noqa: F401
    ChatTemplateError, ContextOverflowError, EngineBusyError, KernelError, ModelFormatError, ModelLoadError,
    PerplexityError, TemplateSecurityError, TmacError, TokenizerError, UnsupportedCpuError, UnsupportedModelError,
)
from tmac_core.types import Chunk, EngineInfo  # noqa: F401

__version__ = "0.1.0"

_LAZY = {"Engine": "tmac_core.engine",
         "default_model_path": "tmac_core.engine", "SamplingParams": "tmac_core.sampling",
         "SamplingError": "tmac_core.sampling"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tmac_core' has no attribute {name!r}")
