"""The model inventory: which models the Models page shows, in what state, and what each allows.

`merge_inventory` joins the built-in model, the curated catalog, the installed models and the
partial downloads into one list of CardState (catalog order, then imports and Hub files no
longer in the catalog); `card_actions` says which actions a card offers given what is
running (a download, the model the chat uses): download, resume, cancel, discard, use,
delete, and whether it is in use; `superseded_partials` names the partial downloads a
finished download made useless. The page (app.ui.model_manager) only draws these.

Also here: the rule that 2-bit ruins small models (TWO_BIT_MIN_PARAMETERS, two_bit_warning),
shared by the Models page and the chat window, and the native low-bit model it points to
instead (native_alternative: the best model trained at low bits that fits this machine).
Pure Python: must not import PySide6.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from app.catalog.catalog import DEFAULT_CONTEXT, CatalogModel, ModelVariant, estimate_variant
from app.catalog.installed import InstalledModel

if TYPE_CHECKING:  # download.py imports huggingface_hub, which only a download needs
    from app.catalog.download import PartialDownload

EMBEDDED_ID = "default"  # the card id, and what "Use" emits as the source
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


def two_bit_warning(parameters: int | None, alternative: CatalogModel | None = None) -> str:
    """Why 2-bit is a poor choice for a model of this size, and the native low-bit model to take
    instead when there is one; "" when it is fine or the size is unknown."""
    if not parameters or parameters >= TWO_BIT_MIN_PARAMETERS:
        return ""
    warning = (
        f"2-bit is for models of about 1B parameters and more: at {format_parameters(parameters)} parameters "
        "this model's answers turn to nonsense. Use 4-bit for this model"
    )
    if alternative is None:
        return warning + "."
    return (
        f"{warning}, or, for a small fast model at low bits, {alternative.name} ({alternative.format_label}, "
        f"{format_parameters(alternative.parameters)} parameters): it was trained at that width, so it keeps "
        "its quality (Models tab)."
    )


def native_alternative(
    catalog: list[CatalogModel],
    missing_support: Callable[[CatalogModel], str] | None = None,
    *,
    total_ram: int | None = None,
    bandwidth_bytes_per_s: float | None = None,
) -> CatalogModel | None:
    """The native low-bit model to suggest instead of 2-bit on a small model: ternary first, then
    2-bit, among those this runtime loads (`missing_support` says "" for those); of these, the best
    that fits this machine, else the smallest.

    Best: the most parameters at the same trained width. Microsoft's BitNet b1.58 2B-4T (2.4 B
    parameters, 4 T training tokens; its report puts it on par with full-precision models of its
    size) answers better than Falcon3-1B-Instruct-1.58bit (1.7 B). Fits: like recommend_download,
    at most RECOMMEND_RAM_SHARE of the RAM and RECOMMEND_MIN_TOK_S decode, each checked when known.
    """
    order = {"ternary": 0, "2-bit": 1}
    candidates = [
        m for m in catalog if m.native in order and not m.gated and (missing_support is None or not missing_support(m))
    ]
    if not candidates:
        return None
    best_width = min(order[m.native or ""] for m in candidates)
    same_width = [m for m in candidates if order[m.native or ""] == best_width]
    fitting = [m for m in same_width if _fits(m, total_ram, bandwidth_bytes_per_s)]
    if fitting:
        return max(fitting, key=lambda m: m.parameters)
    return min(same_width, key=lambda m: m.parameters)


def _fits(model: CatalogModel, total_ram: int | None, bandwidth_bytes_per_s: float | None) -> bool:
    """Whether `model` as in the file needs at most RECOMMEND_RAM_SHARE of `total_ram` and decodes at
    RECOMMEND_MIN_TOK_S at `bandwidth_bytes_per_s` (an unknown figure does not rule it out)."""
    if total_ram is None and bandwidth_bytes_per_s is None:
        return True
    variant = ModelVariant(model, model.bits[0])
    estimate = (
        estimate_variant(variant)
        if bandwidth_bytes_per_s is None
        else estimate_variant(variant, bandwidth_bytes_per_s=bandwidth_bytes_per_s)
    )
    if total_ram is not None and estimate.ram_bytes > RECOMMEND_RAM_SHARE * total_ram:
        return False
    return bandwidth_bytes_per_s is None or estimate.decode_tokens_per_s >= RECOMMEND_MIN_TOK_S


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
    unavailable: str = ""  # what the runtime lacks to load this catalog model (app.catalog.support); "" if none
    file: Path | None = None  # the file or folder the page reads for shapes (built-in and local cards)


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


def embedded_state(path: Path | None) -> CardState:
    """The built-in model; `path` is the embedded file (None or missing: the install is broken).

    Its shapes and type mix come from reading that file (the page inspects it like an import):
    no catalog entry describes it, the catalog's SmolLM2-135M is a Q8_0 Hub file and the
    embedded one is mostly Q4_1, so borrowing the entry's estimates would misstate both.
    """
    # Where the file sits inside the install is no business of the user's (it is a venv path in a checkout).
    size = path.stat().st_size if path and path.exists() else None
    # Only a broken install names the path, for whoever has to find out why it is gone.
    if size is not None:
        where = "Built into the app · always installed, works offline"
    else:
        where = f"The built-in model file is missing ({path.name if path else 'not found'}): reinstall the app"
    return CardState(
        EMBEDDED_ID,
        EMBEDDED,
        "SmolLM2 135M Instruct (built in)",
        where,
        None,
        None,
        EMBEDDED_ID,
        size,
        file=path if size is not None else None,
    )


def catalog_subtitle(model: CatalogModel) -> str:
    if model.native is not None:
        how = "runs on its own low-bit codes, no requantization"
        source = f"{model.format_label}: {'safetensors folder' if model.is_folder else 'GGUF ' + model.source_quant}"
    else:
        how = "repacked when loaded"
        source = f"{model.source_quant} source"
    subtitle = (
        f"{format_parameters(model.parameters)} parameters · {model.config.arch} · "
        f"{model.config.n_ctx_train:,}-token context · license {model.license} · "
        f"{model.repo_id} ({source}, {how})"
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
    missing_support: Callable[[CatalogModel], str] | None = None,
) -> list[CardState]:
    """Every card in page order: the built-in model, the catalog, then installed files the catalog lacks.

    `partials` maps (repo_id, filename) to a resumable download (app.workers.download_worker.pending_downloads).
    `missing_support(model)` says what the runtime lacks to load a catalog model (app.catalog.support).
    """
    states = [embedded_state(embedded_path)]
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
                missing_support(model) if missing_support is not None else "",
            )
        )
    # Imports and Hub files no longer in the catalog ("My models"), sorted by key so that a card keeps
    # its place whatever order the folder listing gives and whatever state the others are in.
    for key, entry in sorted(remaining.items()):
        origin = _IMPORT_ORIGINS.get(entry.source, f"from {entry.repo_id}")
        states.append(
            CardState(
                key,
                LOCAL,
                entry.filename,
                f"{origin} · {entry.path}",
                None,
                entry,
                str(entry.path),
                entry.size,
                file=entry.path,
            )
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
    available = not state.unavailable  # a model the runtime cannot load is neither downloaded nor loaded
    return CardActions(
        download=state.kind == CATALOG and state.installed is None and not downloading and available,
        resume=partial and available,
        cancel=downloading,
        discard=partial and not downloading,
        use=usable and available,
        delete=state.installed is not None,
        delete_allowed=not in_use and not downloading,
        in_use=in_use,
    )


# ---- quality of each bit width -------------------------------------------------------------------

# Measured, docs/BENCHMARKS.md "Quality: SmolLM2-135M perplexity" (Alice ch. I–II, ctx 512; lower is better).
# The only model measured so far; hints for other sizes say what was not measured rather than guess.
MEASURED_MODEL = "SmolLM2-135M"
PERPLEXITY_FLOAT = 19.302
PERPLEXITY_4BIT = 19.344
PERPLEXITY_2BIT = 127.981


def two_bit_recommended(parameters: int | None) -> bool:
    """False when 2-bit is known to ruin a model this size; True when it is large enough or unknown."""
    return not parameters or parameters >= TWO_BIT_MIN_PARAMETERS


def quality_hint(
    bits: int | None, parameters: int | None, source_quant: str | None = None, native: str | None = None
) -> str:
    """One line on what `bits` does to answer quality, from the measured figures above."""
    if bits is None and native is not None:
        return (
            f"Native {native}: the model was trained at this width and runs on its own codes, exactly; "
            "it has no other variant (requantizing it would only lose quality)"
        )
    if bits is None:
        kind = f"the file's own {source_quant} weights" if source_quant else "the file's own weights"
        return (
            f"As in the file: {kind}, run exactly (no requantization), so answers match other apps "
            "on the same file; 4-bit and 2-bit are smaller and faster"
        )
    if bits == 4:
        change = (PERPLEXITY_4BIT - PERPLEXITY_FLOAT) / PERPLEXITY_FLOAT
        return f"4-bit: close to the original (perplexity {change:+.2%} vs unquantized, measured on {MEASURED_MODEL})"
    if not two_bit_recommended(parameters):
        return (
            f"2-bit: much worse below ~1B parameters: {MEASURED_MODEL}'s perplexity goes from "
            f"{PERPLEXITY_4BIT:.1f} at 4-bit to {PERPLEXITY_2BIT:.0f} (answers turn to nonsense); not recommended"
        )
    return (
        "2-bit: smaller and faster; its quality loss for a model this size is not measured yet. "
        "Compare 2-bit vs 4-bit… shows both answers side by side"
    )


# ---- the recommended first download --------------------------------------------------------------

RECOMMEND_RAM_SHARE = 0.5  # leave half the RAM to the system and the user's other programs
RECOMMEND_MIN_TOK_S = 8.0  # about reading speed: below this an answer feels slow to arrive


@dataclass(frozen=True)
class Recommendation:
    model: CatalogModel
    bits: int
    ram_bytes: int
    decode_tokens_per_s: float
    fits: bool  # False: nothing meets both bars, this is the smallest model


def recommend_download(
    catalog: list[CatalogModel],
    *,
    total_ram: int | None,
    bandwidth_bytes_per_s: float,
    context: int | None = DEFAULT_CONTEXT,
    free_bytes: int | None = None,
) -> Recommendation | None:
    """The largest catalog model that, at 4-bit, needs at most half the RAM and decodes at reading speed.

    Gated models (a license to accept and a token to paste) are not a first download. 4-bit, because
    its quality is measured to match the original; 2-bit is the user's choice after. None: empty catalog.
    """
    candidates = [m for m in catalog if not m.gated and 4 in m.bits]
    if not candidates:
        return None
    scored = []
    for model in candidates:
        estimate = estimate_variant(
            ModelVariant(model, 4), bandwidth_bytes_per_s=bandwidth_bytes_per_s, context=context, free_bytes=free_bytes
        )
        fits = (total_ram is None or estimate.ram_bytes <= RECOMMEND_RAM_SHARE * total_ram) and (
            estimate.decode_tokens_per_s >= RECOMMEND_MIN_TOK_S
        )
        scored.append((model, estimate, fits))
    fitting = [s for s in scored if s[2]]
    if fitting:
        model, estimate, fits = max(fitting, key=lambda s: (s[0].parameters, s[1].decode_tokens_per_s))
    else:
        model, estimate, fits = min(scored, key=lambda s: s[0].parameters)
    return Recommendation(model, 4, estimate.ram_bytes, estimate.decode_tokens_per_s, fits)


# ---- switching models safely ---------------------------------------------------------------------


@dataclass
class ModelSwitch:
    """Which model to keep when a new one fails to load; which one may be saved as the default.

    The window asks `request(source, bits)` before each load. `loaded()` says the load finished:
    that model is now the last good one and the one to save. `failed()` says it did not: the
    load to fall back to (the last good model, else the built-in one at 4-bit; None when even
    that was what failed, so there is no loop).
    """

    # (source, bits); bits None: as in the file
    last_good: tuple[str, int | None] | None = None
    pending: tuple[str, int | None] | None = None
    failed_choice: tuple[str, int | None] | None = None  # the last choice that failed (its card is marked)

    def request(self, source: str, bits: int | None) -> tuple[str, int | None]:
        self.pending = (source, bits)
        return self.pending

    def loaded(self) -> tuple[str, int | None] | None:
        """The model that just loaded (to save as the default), or None if nothing was pending."""
        done, self.pending = self.pending, None
        if done is not None:
            self.last_good = done
            if self.failed_choice == done:
                self.failed_choice = None
        return done

    def failed(self) -> tuple[str, int | None] | None:
        """The load to fall back to after the pending one failed, or None."""
        failed, self.pending = self.pending, None
        if failed is None:
            return None
        self.failed_choice = failed
        for fallback in (self.last_good, (EMBEDDED_ID, 4)):
            if fallback is not None and fallback != failed and not (failed[0] == EMBEDDED_ID == fallback[0]):
                return fallback
        return None


# ---- duplicate imports ---------------------------------------------------------------------------


def find_duplicate(installed: list[InstalledModel], size: int, sha256_of: Callable[[], str]) -> InstalledModel | None:
    """The installed model with the same content as a file of `size` bytes, if any.

    Only a model of exactly that size can match, so `sha256_of()` (a full read of the file) runs
    only when one does; a multi-GB import of a new model is not read twice.
    """
    same_size = [m for m in installed if m.size == size]
    if not same_size:
        return None
    digest = sha256_of()
    return next((m for m in same_size if m.sha256 == digest), None)
