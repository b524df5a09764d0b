"""Typed errors of the runtime. The runtime never prints or exits: it raises these.

Pure Python: no Qt, no app imports.
"""


class TmacError(Exception):
    """Base class of every error the runtime raises on purpose."""


class KernelError(TmacError):
    """A kernel call was refused (bad shape, unknown or unavailable instruction set)."""


class UnsupportedCpuError(KernelError):
    """A kernel tier was asked for that this CPU (or its operating system) cannot run."""


class ModelLoadError(TmacError):
    """A model could not be loaded."""


class ModelFormatError(ModelLoadError):
    """A model file is corrupt, truncated or malformed.

    The message names the file, the field and the byte offset where the problem was found.
    """

    def __init__(self, path, field: str, offset: int | None, reason: str):
        self.path = str(path)
        self.field = field
        self.offset = offset
        self.reason = reason
        where = f" at offset {offset}" if offset is not None else ""
        super().__init__(f"{self.path}: {field}{where}: {reason}")


class UnsupportedModelError(ModelLoadError):
    """A well-formed model this runtime does not support (architecture, tensor type...)."""


class TokenizerError(TmacError):
    """The model's vocabulary could not be turned into a working tokenizer."""


class ChatTemplateError(TmacError):
    """The chat template could not be rendered."""


class TemplateSecurityError(ChatTemplateError):
    """The chat template tried to do something a sandboxed template may not do."""


class ContextOverflowError(TmacError):
    """A prompt does not fit in the model's context window."""

    def __init__(self, n_prompt_tokens: int, n_ctx: int, message: str | None = None):
        self.n_prompt_tokens = n_prompt_tokens
        self.n_ctx = n_ctx
        super().__init__(message or (
            f"prompt is {n_prompt_tokens} tokens but the context holds {n_ctx}"))


class EngineBusyError(TmacError):
    """Engine.stream() was called while another answer from the same engine is running."""


class PerplexityError(TmacError):
    """The text or the settings cannot give a perplexity (too short a text, bad ctx)."""
