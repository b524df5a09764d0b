"""T-MAC Chat's runtime: low-bit LUT kernels and the model runtime built on them.

A library, not an app: no Qt, no printing, no exiting; it raises the typed
errors of tmac_core.errors.
"""
from tmac_core.errors import (  # noqa: F401
    ChatTemplateError, ContextOverflowError, KernelError, ModelFormatError, ModelLoadError,
    TemplateSecurityError, TmacError, TokenizerError, UnsupportedCpuError, UnsupportedModelError,
)

__version__ = "0.1.0"
