"""User settings: one frozen, versioned dataclass, loaded and saved atomically.

`load_settings()` never raises for a bad file: a missing file gives defaults, a
corrupt or unknown one gives defaults plus a human-readable problem (and a copy
of the bad file kept beside it), an older schema is migrated step by step, a
newer one is read for the fields we know. `save_settings()` writes through a
temp file + fsync + os.replace. While the app runs, app.settings_store.SettingsStore holds
the one current AppSettings and changes go through it (checked by `check_changes`).

Which settings belong to a conversation is decided here (CONVERSATION_FIELDS).
Pure Python: must not import PySide6 or tmac_core.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.paths import atomic_write_bytes
from tmac_core.types import MAX_THREADS

SCHEMA_VERSION = 7
ZOOM_MIN, ZOOM_MAX = 0.5, 3.0
MAX_MODEL_OPTIONS = 10_000  # entries of a per-model list setting (a bound on a hand-edited file)


@dataclass(frozen=True)
class AppSettings:
    schema_version: int = SCHEMA_VERSION
    models_dir: str | None = None  # None → app.paths default
    # None: as in the file (each matrix at its own type's bits, exact); 2 or 4: repacked to that width
    default_bits: int | None = None
    model_source: str = "default"  # what the chat loads: "default" (embedded model) or a .gguf path
    n_threads: int | None = None  # None → physical cores − 1 (decided by the worker)
    n_ctx: int | None = None  # None: automatic (the engine sizes it from the model and free memory)
    # The system prompt and sampling below are the defaults a new chat starts from (CONVERSATION_FIELDS).
    system_prompt: str = ""  # "" → the model's chat template supplies its own default (SmolLM2 has one)
    temperature: float = 0.7
    top_p: float = 0.9
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    seed: int | None = None  # None → a fresh random seed per answer
    max_tokens: int = 512
    theme: str = "system"  # "system" | "light" | "dark"
    zoom: float = 1.0  # text size factor (View → Zoom), ZOOM_MIN..ZOOM_MAX
    offline_mode: bool = False  # never touch the network (sets HF_HUB_OFFLINE before import)
    # Hugging Face access token, only where no OS keyring is available (plain text, like `hf auth login`);
    # app.catalog.token_store keeps it in the keyring when there is one and moves an older one there.
    hf_token: str | None = None
    memory_bandwidth: float | None = None  # bytes/s from app.hardware.measure_memory_bandwidth, measured once
    memory_bandwidth_cpu: str | None = None  # the CPU that figure was measured on; another CPU re-measures
    # The local OpenAI-compatible server (app/server): off by default, loopback unless server_lan
    server_enabled: bool = False
    server_port: int = 8080  # 0: any free port (the status line says which)
    server_api_key: str | None = None  # None: no key asked (loopback makes that safe by default)
    server_lan: bool = False  # listen on every interface: other computers on the network may connect
    # Model sources (paths, "default") loaded with exact int8 activations (Engine.load's
    # exact_activations): only models trained with them offer it (act_quant "int8_token")
    exact_activation_models: tuple[str, ...] = ()

    def replace(self, **changes: Any) -> AppSettings:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class SettingsLoadResult:
    settings: AppSettings
    problems: list[str] = field(default_factory=list)  # shown to the user once; empty when all was fine


# A field that fails its check falls back to its default (and is reported), so one
# bad value never discards the others.
_CHECKS: dict[str, Callable[[Any], bool]] = {
    "models_dir": lambda v: v is None or isinstance(v, str),
    "model_source": lambda v: isinstance(v, str) and bool(v),
    "default_bits": lambda v: v is None or (v in (2, 4) and not isinstance(v, bool)),
    "n_threads": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_THREADS),
    "n_ctx": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and 128 <= v <= 1_048_576),
    "system_prompt": lambda v: isinstance(v, str),
    "temperature": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 5.0,
    "top_p": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 < v <= 1.0,
    "top_k": lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 100_000,
    "min_p": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0,
    "seed": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63),
    "repeat_penalty": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0.5 <= v <= 5.0,
    "max_tokens": lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 1_048_576,
    "theme": lambda v: v in ("system", "light", "dark"),
    "zoom": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and ZOOM_MIN <= v <= ZOOM_MAX,
    "offline_mode": lambda v: isinstance(v, bool),
    "hf_token": lambda v: (
        v is None or (isinstance(v, str) and 0 < len(v) <= 512 and v.isprintable() and not any(c.isspace() for c in v))
    ),
    "memory_bandwidth": lambda v: (
        v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and 1e6 <= v <= 1e14)
    ),
    "memory_bandwidth_cpu": lambda v: v is None or isinstance(v, str),
    "server_enabled": lambda v: isinstance(v, bool),
    "server_port": lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 65535,
    "server_api_key": lambda v: (
        v is None or (isinstance(v, str) and 0 < len(v) <= 256 and v.isprintable() and not any(c.isspace() for c in v))
    ),
    "server_lan": lambda v: isinstance(v, bool),
    "exact_activation_models": lambda v: (
        isinstance(v, (list, tuple)) and len(v) <= MAX_MODEL_OPTIONS and all(isinstance(s, str) and s for s in v)
    ),
}
_FLOAT_FIELDS = {"temperature", "top_p", "min_p", "repeat_penalty", "memory_bandwidth", "zoom"}
_TUPLE_FIELDS = {"exact_activation_models"}  # JSON arrays, kept as tuples (AppSettings is frozen)


def _checked(name: str, value: Any) -> Any:
    """A value that passed its check, in the type AppSettings holds."""
    if name in _FLOAT_FIELDS and value is not None:
        return float(value)
    return tuple(value) if name in _TUPLE_FIELDS else value


def _migrate_1_to_2(data: dict[str, Any]) -> dict[str, Any]:
    # Version 1 (the first prototype) called these "threads", "bits" and "dark_mode".
    out = dict(data)
    if "threads" in out:
        out["n_threads"] = out.pop("threads")
    if "bits" in out:
        out["default_bits"] = out.pop("bits")
    if "dark_mode" in out:
        out["theme"] = "dark" if out.pop("dark_mode") else "system"
    return out


def _migrate_2_to_3(data: dict[str, Any]) -> dict[str, Any]:
    # Version 2 saved two fields nothing read: "show_perf_panel" (the panel is always shown) and
    # "default_model_id" (never written; "model_source" says what the chat loads). Dropped quietly.
    return {name: value for name, value in data.items() if name not in ("show_perf_panel", "default_model_id")}


def _migrate_3_to_4(data: dict[str, Any]) -> dict[str, Any]:
    # Version 3 named two fields differently from the runtime: "max_new_tokens" is SamplingParams'
    # max_tokens, and "context_length" the engine's n_ctx (the context the KV cache holds).
    renames = {"max_new_tokens": "max_tokens", "context_length": "n_ctx"}
    return {renames.get(name, name): value for name, value in data.items()}


def _migrate_4_to_5(data: dict[str, Any]) -> dict[str, Any]:
    # Version 4 kept n_ctx always set and read its default, 2048, as "automatic" (the engine chooses);
    # version 5 says automatic with None, so a user who picks 2048 keeps 2048.
    out = dict(data)
    if out.get("n_ctx") == 2048:
        out["n_ctx"] = None
    return out


def _migrate_5_to_6(data: dict[str, Any]) -> dict[str, Any]:
    # Version 6 adds the local server's settings (server_*); a version-5 file has none, so the
    # server starts off, on loopback, without a key.
    return dict(data)


def _migrate_6_to_7(data: dict[str, Any]) -> dict[str, Any]:
    # Version 7 adds exact_activation_models; a version-6 file has none: every model keeps the
    # engine's default (table) activations.
    return dict(data)


# MIGRATIONS[v] turns a version-v dict into a version-(v+1) dict; applied in order.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {
    1: _migrate_1_to_2,
    2: _migrate_2_to_3,
    3: _migrate_3_to_4,
    4: _migrate_4_to_5,
    5: _migrate_5_to_6,
    6: _migrate_6_to_7,
}

# Per conversation, with a global default (the common expectation in chat apps): a chat keeps the system
# prompt and sampling preset it was given, in its own row (app.chat.store: conversations.system_prompt and
# sampling_json, whose keys are these field names). A new chat starts from the values in AppSettings; the
# sampling panel edits the open chat, and "Use as default for new chats" copies them into AppSettings.
# Everything else is global: the model, its bits and context length (they size the one loaded engine),
# threads, theme, folders, token, bandwidth.
SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "min_p", "repeat_penalty", "max_tokens", "seed")
CONVERSATION_FIELDS = ("system_prompt",) + SAMPLING_FIELDS


def _keep_copy_of_bad_file(path: Path) -> str:
    """Copy (not move) the unreadable file aside so the user's data is never lost by a later save."""
    aside = path.with_name(f"{path.name}.bad-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        shutil.copy2(path, aside)
        return f" A copy was kept as {aside.name}."
    except OSError:
        return ""


def check_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """The values to apply for `changes`, checked like a loaded file's; raises ValueError for the first
    unknown field or bad value (so a caller applies all of them or none)."""
    values: dict[str, Any] = {}
    for name, value in changes.items():
        check = _CHECKS.get(name)
        if check is None:
            raise ValueError(f"There is no setting called {name!r}.")
        if not check(value):
            raise ValueError(f"Setting {name!r} cannot be {value!r} (its default is {getattr(AppSettings(), name)!r}).")
        values[name] = _checked(name, value)
    return values


def conversation_sampling(settings: AppSettings) -> dict[str, Any]:
    """The sampling preset of `settings` as a conversation row stores it (sampling_json)."""
    return {name: getattr(settings, name) for name in SAMPLING_FIELDS}


def for_conversation(defaults: AppSettings, system_prompt: str, sampling: dict[str, Any]) -> AppSettings:
    """The settings a chat runs with: `defaults` with the chat's own system prompt and sampling.

    A sampling key the row lacks (rows written before chats kept their sampling hold {}) or whose
    value fails its check takes the default's value; unknown keys are ignored.
    """
    own = {name: value for name, value in sampling.items() if name in SAMPLING_FIELDS and _CHECKS[name](value)}
    return defaults.replace(system_prompt=system_prompt, **check_changes(own))


def settings_from_dict(data: dict[str, Any]) -> SettingsLoadResult:
    """Build AppSettings from a parsed JSON object, migrating and validating field by field."""
    problems: list[str] = []
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        problems.append(f"Settings had an invalid schema_version {version!r}; read as version 1.")
        version = 1
    written_version = version
    if version > SCHEMA_VERSION:
        problems.append(
            f"Settings were written by a newer T-MAC Chat (schema {version}, this app knows {SCHEMA_VERSION}); "
            "fields this version does not know were ignored."
        )
    while version < SCHEMA_VERSION:
        data = MIGRATIONS[version](data)
        version += 1

    defaults = AppSettings()
    values: dict[str, Any] = {}
    for name, check in _CHECKS.items():
        if name not in data:
            continue
        value = data[name]
        if check(value):
            values[name] = _checked(name, value)
        else:
            problems.append(f"Setting {name!r} had an invalid value {value!r}; using {getattr(defaults, name)!r}.")
    unknown = sorted(set(data) - set(_CHECKS) - {"schema_version"})
    if unknown and written_version <= SCHEMA_VERSION:  # newer files were reported above
        problems.append(f"Unknown settings ignored: {', '.join(unknown)}.")
    return SettingsLoadResult(AppSettings(**values), problems)


def load_settings(path: Path) -> SettingsLoadResult:
    """Read settings from `path`. Never raises for file contents; only reports."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return SettingsLoadResult(AppSettings())
    except OSError as error:
        return SettingsLoadResult(AppSettings(), [f"Could not read settings file {path}: {error}. Using defaults."])
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        kept = _keep_copy_of_bad_file(path)
        return SettingsLoadResult(AppSettings(), [f"Settings file {path} is corrupt ({error}); using defaults.{kept}"])
    if not isinstance(data, dict):
        kept = _keep_copy_of_bad_file(path)
        return SettingsLoadResult(
            AppSettings(), [f"Settings file {path} does not hold a JSON object; using defaults.{kept}"]
        )
    return settings_from_dict(data)


def save_settings(settings: AppSettings, path: Path) -> None:
    """Write atomically (temp + fsync + os.replace + directory fsync). Raises OSError on failure,
    in which case the previous file is untouched."""
    data = dataclasses.asdict(settings)
    data["schema_version"] = SCHEMA_VERSION
    payload = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"
    atomic_write_bytes(Path(path), payload)
