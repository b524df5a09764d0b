"""Plain-language sentences for every error kind the user can meet, with the technical text kept as detail.

Errors cross the app with a stable `kind` (tmac_core.errors and app.catalog.errors classes own
theirs; app.workers.protocol and app.workers.download_worker name the rest). `explain(kind,
detail)` turns one into a PlainError: `text`, a sentence for someone who knows nothing of GGUF
files, HTTP or signals, saying what happened and what to do; `detail`, the original technical
message, shown only behind a "Details" expander. An unknown kind still gets a plain sentence
(the generic one), so a new error class never shows internals by default.

Pure Python: must not import PySide6, huggingface_hub or the compiled runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

GENERIC = "Something went wrong. The details below can help if you report it."

# kind -> the sentence. Kinds come from the error classes (tmac_core.errors, app.catalog.errors)
# and the protocol's own failure kinds (app.workers.protocol); "engine_died" is the window's.
SENTENCES: dict[str, str] = {
    # reading and loading a model (tmac_core)
    "model_format": (
        "This file is not a model this app can read: it is damaged, incomplete (an unfinished download?) "
        "or not a GGUF model file."
    ),
    "not_gguf": (
        "This file is not a model this app can read: it is damaged, incomplete (an unfinished download?) "
        "or not a GGUF model file."
    ),
    "unsupported_model": "This model's design is not one this app can run yet. Try a model from the list.",
    "model_load": "The model could not be loaded. Try loading it again, or choose another model.",
    "tokenizer": "The model's word list (tokenizer) could not be read, so it cannot be used.",
    "chat_template": "The model's chat format could not be used. Try another model.",
    "template_security": "The model's chat format asks for something unsafe, so it was not used.",
    "context_overflow": (
        "The conversation is longer than the model can take in. Start a new chat or raise the context length."
    ),
    "engine_busy": "The model is still busy with the previous request. Try again in a moment.",
    "kernel": "This computer's processor could not run the model's calculations.",
    "unsupported_cpu": "This computer's processor lacks features this app needs to run models.",
    "runtime": "The model engine reported a problem.",
    "load_cancelled": "Loading was cancelled. The model you had before is still there; nothing was saved half-done.",
    "perplexity": "The quality measurement could not be completed.",
    # the engine process (app.workers.protocol)
    "out_of_memory": "The computer ran out of memory for this model. Close other programs or choose a smaller model.",
    "os_error": "The computer refused a file or system operation (permissions, a missing file or a full disk).",
    "not_ready": "No model is loaded yet. Wait for it to finish loading, or choose one on the Models page.",
    "restarted": "The engine was restarted before the answer finished.",
    "superseded": "A newer request replaced this one.",
    "invalid_argument": "A setting is out of range. Check the values in the settings panel.",
    "internal": "The app hit an internal error. The details below can help if you report it.",
    "engine_died": (
        "The model engine stopped unexpectedly, most often because the computer ran out of memory. "
        "The window and your chats are fine."
    ),
    # downloads and installed models (app.catalog.errors)
    "catalog": "The list of models that comes with the app could not be read. Reinstalling the app fixes this.",
    "not_found": "The model file was not found on Hugging Face: it may have been moved or removed.",
    "gated": (
        "This model's publisher asks you to accept its license on Hugging Face first, and the app needs "
        "your Hugging Face access token to download it."
    ),
    "offline": (
        "Hugging Face cannot be reached: this computer seems to be offline. Check the internet connection; "
        "the models you have keep working."
    ),
    "interrupted": "The download was interrupted. What arrived is kept, so you can resume it from there.",
    "cancelled": "The download was cancelled. What arrived is kept, so it can be resumed later.",
    "in_progress": "This file is already being downloaded, here or in another T-MAC Chat window.",
    "stalled": (
        "Hugging Face stopped sending data, so the download was paused. What arrived is kept: "
        "resume it when the connection is better."
    ),
    "unsafe_name": (
        "This file's name is not one the app will write (it could be mistaken for another file "
        "or point outside the models folder), so nothing was saved."
    ),
    "unsafe_path": (
        "Something in the models folder is not what the app expects there (a link or a folder where a "
        "file belongs), so the app left it alone. Remove it by hand, then try again."
    ),
    "storage": (
        "The models folder could not be read or written (permissions or a disk problem). "
        "Choose another models folder if it persists."
    ),
    "disk_full": "There is not enough free disk space. Free some space or choose another models folder.",
    "checksum": "The file arrived damaged, so it was deleted. Try the download again.",
    "protocol": "Hugging Face sent an answer the app could not trust, so nothing was saved. Try again later.",
    "not_installed": "This model is no longer installed.",
    "error": GENERIC,
}


# Kinds whose error class writes its whole message for the user, with the figures that matter
# (DiskFullError: GB needed and free) and no technical suffix: that message is the sentence.
OWN_TEXT_KINDS = frozenset({"disk_full"})


@dataclass(frozen=True)
class PlainError:
    kind: str
    text: str  # the sentence the user reads
    detail: str  # the technical message, behind "Details" ("" when there is none)

    def __str__(self) -> str:
        return self.text


def explain(kind: str, detail: str = "", *, subject: str = "") -> PlainError:
    """The plain sentence for `kind`; `subject` (a file or model name) leads it when given."""
    text = detail.strip() if kind in OWN_TEXT_KINDS and detail.strip() else SENTENCES.get(kind, GENERIC)
    if subject:
        text = f"{subject}: {text}"
    return PlainError(kind, text, "" if kind in OWN_TEXT_KINDS else detail.strip())


def error_kind(error: BaseException) -> str:
    """The stable kind of any exception: its class's `kind`, else the protocol's name for common ones."""
    kind = getattr(type(error), "kind", None)
    if isinstance(kind, str):
        return kind
    if isinstance(error, MemoryError):
        return "out_of_memory"
    if isinstance(error, OSError):
        return "os_error"
    if isinstance(error, ValueError):
        return "invalid_argument"
    return "internal"


def explain_error(error: BaseException, *, subject: str = "") -> PlainError:
    return explain(error_kind(error), str(error) or type(error).__name__, subject=subject)
