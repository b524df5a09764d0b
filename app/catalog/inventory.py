"""The model inventory: which models the Models page shows, in what state, and what each allows.

`merge_inventory` joins the built-in model, the curated catalog, the installed models and the
partial downloads into one list of CardState (catalog order, then imports and Hub files no
longer in the catalog); `card_actions` says which actions a card offers given what is
running (a download, the model the chat uses): download, resume, cancel, discard, use,
delete, and whether it is in use; `superseded_partials` names the partial downloads a
finished download made useless. The page (app.ui.model_manager) only draws these.

Also here: the rule that 2-bit ruins small models (TWO_BIT_MIN_PARAMETERS, two_bit_warning),
shared by the Models page and the chat window. Pure Python: must not import PySide6.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from app.catalog.catalog import CatalogModel, find_model
from app.catalog.errors import CatalogError
from app.catalog.installed import InstalledModel

if TYPE_CHECKING:  # download.py imports huggingface_hub, which only a download needs
    from app.catalog.download import PartialDownload

EMBEDDED_ID = "default"  # the card id, and what "Use" emits as the source
EMBEDDED_CATALOG_ID = "smollm2-135m-instruct"  # same shapes as the embedded file, for estimates
EMBEDDED, CATALOG, LOCAL = "embedded", "catalog", "local"
# Below this the 2-bit preset (~3.1 bits/weight) ruins a model: SmolLM2-135M's perplexity on English text goes
# from 19.3 at 4 bits to ~670 at 2 bits (docs/BENCHMARKS.md), while ~1B-parameter models hold up far better.
TWO_BIT_MIN_PARAMETERS = 1_000_000_000
_IMPORT_ORIGINS = {
    "import-copy": "imported (copied into the models folder)",
    "import-reference": "imported (used where it is)",
}


def format_parameters(n: int) -> str:
    """A parameter count the way model names say it: "135M", "1.2B", "60k" (re-exported by app.ui.units)."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}" if unit == "B" else f"{n / scale:.0f}{unit}"
    return str(n)


def two_bit_warning(parameters: int | None) -> str:
    """Why 2-bit is a poor choice for a model of this size; "" when it is fine or the size is unknown."""
    if not parameters or parameters >= TWO_BIT_MIN_PARAMETERS:
        return ""
    return (
        f"2-bit is for models of about 1B parameters and more: at {format_parameters(parameters)} parameters "
        "this model's answers turn to nonsense. Use 4-bit for this model."
    )


@dataclass
class CardState:
    """One model on the page. Mutable only in `model`: a local file's shapes arrive when it has been read."""

    card_id: str  # "default", a catalog id, or an installed key
    kind: str  # EMBEDDED | CATALOG | LOCAL
    title: str
    subtitle: str  # size, architecture, license and where the file is from
    model: CatalogModel | None  # shapes for the estimates (None until a local file is inspected)
    installed: InstalledModel | None = None
    source: str | None = None  # what "Use" emits: a path or "default"
    download_bytes: int | None = None  # what the download / import occupies on disk
    partial: PartialDownload | None = None  # a resumable download of this catalog model


@dataclass(frozen=True)
class CardActions:
    """What a card offers now. `download` shows the Download button, labelled Resume when `resume`."""

    download: bool
    resume: bool
    cancel: bool
    discard: bool
    use: bool  # also "Measure speed…" and "Compare…": the file is there to run
    delete: bool  # shown for installed models...
    delete_allowed: bool  # ...and enabled unless the chat uses the model or it is downloading
    in_use: bool  # the chat engine has this model loaded


def embedded_state(catalog: list[CatalogModel], path: Path | None) -> CardState:
    """The built-in model; `path` is the embedded file (None or missing: the install is broken)."""
    try:
        model = find_model(catalog, EMBEDDED_CATALOG_ID)
    except CatalogError:
        model = None
    where = str(path) if path else "missing: reinstall the app"
    size = path.stat().st_size if path and path.exists() else None
    return CardState(
        EMBEDDED_ID,
        EMBEDDED,
        "SmolLM2 135M Instruct (built in)",
        f"Always installed, works offline · {where}",
        model,
        None,
        EMBEDDED_ID,
        size,
    )


def catalog_subtitle(model: CatalogModel) -> str:
    subtitle = (
        f"{format_parameters(model.parameters)} parameters · {model.config.arch} · "
        f"{model.config.n_ctx_train:,}-token context · license {model.license} · "
        f"{model.repo_id} ({model.source_quant} source, repacked when loaded)"
    )
    if model.gated:
        subtitle += (
            " · Meta's Llama 3.2 license applies; if Hugging Face asks for it, accept the "
            "license on the model page and paste an access token here"
        )
    return subtitle


def merge_inventory(
    catalog: list[CatalogModel],
    installed: list[InstalledModel],
    partials: dict[tuple[str, str], PartialDownload],
    embedded_path: Path | None,
) -> list[CardState]:
    """Every card in page order: the built-in model, the catalog, then installed files the catalog lacks.

    `partials` maps (repo_id, filename) to a resumable download (app.workers.download_worker.pending_downloads).
    """
    states = [embedded_state(catalog, embedded_path)]
    remaining = {entry.key: entry for entry in installed}
    for model in catalog:
        entry = remaining.pop(f"{model.repo_id}/{model.filename}", None)
        partial = partials.get((model.repo_id, model.filename)) if entry is None else None
        states.append(
            CardState(
                model.id,
                CATALOG,
                model.name,
                catalog_subtitle(model),
                model,
                entry,
                str(entry.path) if entry else None,
                entry.size if entry else model.size_bytes,
                partial,
            )
        )
    for key, entry in remaining.items():  # imports, and Hub files no longer in the catalog
        origin = _IMPORT_ORIGINS.get(entry.source, f"from {entry.repo_id}")
        states.append(
            CardState(key, LOCAL, entry.filename, f"{origin} · {entry.path}", None, entry, str(entry.path), entry.size)
        )
    return states


def superseded_partials(partials: list[PartialDownload], installed: InstalledModel) -> list[PartialDownload]:
    """Partial downloads of an older version of a file that is now installed: nothing will resume them."""
    return [
        p
        for p in partials
        if (p.repo_id, p.filename) == (installed.repo_id, installed.filename) and p.sha256 != installed.sha256
    ]


def card_actions(state: CardState, *, downloading: bool, active_source: str | None) -> CardActions:
    """What `state` allows while its download runs (or not) and the chat uses `active_source`."""
    usable = state.source is not None and (state.kind != EMBEDDED or state.download_bytes is not None)
    partial = state.partial is not None and state.kind == CATALOG and state.installed is None
    in_use = state.source is not None and state.source == active_source
    return CardActions(
        download=state.kind == CATALOG and state.installed is None and not downloading,
        resume=partial,
        cancel=downloading,
        discard=partial and not downloading,
        use=usable,
        delete=state.installed is not None,
        delete_allowed=not in_use and not downloading,
        in_use=in_use,
    )
