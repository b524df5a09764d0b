"""Typed errors of the runtime. The runtime never prints or exits: it raises these.

Each class has a stable `kind`, a short identifier that crosses process
boundaries (the app's engine protocol) and that callers match on instead of a
class name. A subclass has its own kind; its parents' kinds stay unchanged.

Pure Python: no Qt, no app imports.
"""

from os import PathLike


class TmacError(Exception):
    """Base class of every error the runtime raises on purpose."""

    kind = "runtime"


class KernelError(TmacError):
    """A kernel call was refused (bad shape, unknown or unavailable instruction set)."""

    kind = "kernel"


class UnsupportedCpuError(KernelError):
    """A kernel tier was asked for that this CPU (or its operating system) cannot run."""

    kind = "unsupported_cpu"


class ModelLoadError(TmacError):
    """A model could not be loaded."""

    kind = "model_load"


class ModelFormatError(ModelLoadError):
    """A model file is corrupt, truncated or malformed.

    The message names the file, the field and the byte offset where the problem was found.
    """

    kind = "model_format"

    def __init__(self, path: str | PathLike[str], field: str, offset: int | None, reason: str) -> None:
        self.path = str(path)
        self.field = field
        self.offset = offset
        self.reason = reason
        where = f" at offset {offset}" if offset is not None else ""
        super().__init__(f"{self.path}: {field}{where}: {reason}")


class LoadCancelledError(TmacError):
    """A load was stopped on request (Engine.load's cancel). Nothing it wrote is left in use."""

    kind = "load_cancelled"


class UnsupportedModelError(ModelLoadError):
    """A well-formed model this runtime does not support (architecture, tensor type...)."""

    kind = "unsupported_model"


class TokenizerError(TmacError):
    """The model's vocabulary could not be turned into a working tokenizer."""

    kind = "tokenizer"


class ChatTemplateError(TmacError):
    """The chat template could not be rendered."""

    kind = "chat_template"


class TemplateSecurityError(ChatTemplateError):
    """The chat template tried to do something a sandboxed template may not do."""

    kind = "template_security"


class ContextOverflowError(TmacError):
    """A prompt does not fit in the model's context window."""

    kind = "context_overflow"

    def __init__(self, n_prompt_tokens: int, n_ctx: int, message: str | None = None):
        self.n_prompt_tokens = n_prompt_tokens
        self.n_ctx = n_ctx
        super().__init__(message or (f"prompt is {n_prompt_tokens} tokens but the context holds {n_ctx}"))


class EngineBusyError(TmacError):
    """Engine.stream() was called while another answer from the same engine is running."""

    kind = "engine_busy"


class PerplexityError(TmacError):
    """The text or the settings cannot give a perplexity (too short a text, bad ctx)."""

    kind = "perplexity"
