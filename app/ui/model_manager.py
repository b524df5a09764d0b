"""The model manager page: the embedded model, the curated catalog and imported files.

Each model is a card with a visible 4-bit / 2-bit choice and, per bit width, the size on
disk, the RAM it needs (packed weights + KV cache at the context-length setting) and a
decode speed predicted from this machine's memory bandwidth (measured once, cached in
settings; an estimate, and labelled as one). Catalog cards download with progress,
speed, ETA, cancel and resume (also after a restart), and a model counts as installed only
once its sha256 matched. A local GGUF or Hugging Face model folder (safetensors) is imported
from a dialog or by dropping it on the page, after the runtime's own reader accepted it (a
folder's allow-listed files only: never pickles); a model already installed (same size and
sha256, a folder's digest over its files) is not imported twice. Catalog folder models
download their allow-listed files. A native low-bit model (BitNet ternary, EfficientQAT
2-/4-bit) offers its one variant, labelled as such; a catalog model the runtime cannot load
yet (app.catalog.support) says what is missing instead of offering a download. "Use" emits
modelChosen(source, bits) where source is a file or folder path or "default". Each variant
carries a quality hint from the measured perplexities; 2-bit on a model under ~1B parameters
is marked "not recommended" and warns on its card (two_bit_warning),
naming a native low-bit model with a button that shows its card, but is still allowed. Each
card shows the source's type mix and bits per weight per variant, and says before loading
when "as in the file" requantizes some matrices (IQ* types: tmac_core.plan.source_summary).
The top of the page recommends a first download for this computer. A model trained with int8
activations (ModelConfig.act_quant) offers "Exact int8 arithmetic", saved per model source in
settings (exact_activation_models) and passed to Engine.load when it is next loaded.

Cards keep their place (catalog order, then "My models": imports and Hub files the catalog lacks).
Errors show as a plain sentence (app.catalog.messages) with the technical text behind "Details".
A model that failed to load is marked on its card (mark_load_failed); the one loaded has its bit
width checked (set_active_model). downloadsChanged feeds the window's status-bar indicator
(app.ui.download_indicator). "Clear repacked-model cache" deletes the engine's repacked copies
and says how many bytes it freed. The Hugging Face token goes to the OS keyring when there is
one (app.catalog.token_store).

Which cards exist, their state and the actions each allows come from app.catalog.inventory;
this page draws them. Settings it changes (token, models folder, measured bandwidth) go
through the app's one SettingsStore, which the page also follows (models folder, context).
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal, Slot
from PySide6.QtGui import QDesktopServices, QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QApplication,
    QButtonGroup,
    QCheckBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from app import hardware
from app.catalog.catalog import (
    DEFAULT_BANDWIDTH_BYTES_PER_S,
    CatalogModel,
    ModelVariant,
    VariantEstimate,
    bits_label,
    estimate_variant,
    load_catalog,
    model_source_summary,
)
from app.catalog.context import AUTO_CTX_MAX, AUTO_CTX_MIN
from app.catalog.download import discard_partial_download, list_partial_downloads, remove_stale_partials
from app.catalog.errors import CatalogError, DownloadError, ModelFileError
from app.catalog.installed import (
    InstalledModel,
    delete_installed,
    folder_size_and_digest,
    import_local_folder,
    import_local_gguf,
    list_installed,
    sha256_of_file,
)
from app.catalog.inventory import (
    CATALOG,
    EMBEDDED,
    LOCAL,
    CardState,
    card_actions,
    find_duplicate,
    merge_inventory,
    native_alternative,
    quality_hint,
    recommend_download,
    superseded_partials,
    two_bit_recommended,
    two_bit_warning,
)
from app.catalog.messages import PlainError, explain, explain_error
from app.catalog.support import missing_support
from app.catalog.token_store import FALLBACK_NOTE, load_token, migrate_token, save_token, system_keyring
from app.paths import AppPaths
from app.settings import AppSettings
from app.settings_store import SettingsStore
from app.ui.error_notice import ErrorNotice
from app.ui.units import format_bandwidth, format_bytes, format_parameters, format_tok_s, progress_text
from app.workers import download_worker, model_files
from app.workers.download_worker import DownloadJob, pending_downloads
from app.workers.tasks import run_in_background
from tmac_core.plan import FLOAT_TYPES, gptq_label
from tmac_core.types import ModelSummary

HF_MODEL_URL = "https://huggingface.co/{repo_id}"


def _button_id(bits: int | None) -> int:
    """The radio button id of a variant: Qt ids are ints, so "as in the file" (None) is 0."""
    return 0 if bits is None else bits


def source_text(model: CatalogModel) -> str:
    """The source's type mix and what "as in the file" does with it, for a card: "Source: Q4_K 85 %,
    Q6_K 15 %." plus a notice when some matrices (IQ* types) are requantized rather than run exactly."""
    summary = model_source_summary(model)
    total = sum(summary.type_mix.values()) or 1
    mix = ", ".join(f"{gptq_label(t) or t} {100 * n / total:.0f} %" for t, n in summary.type_mix.items())
    text = f"Source: {mix}."
    lossy = [t for t in summary.requantized if t not in FLOAT_TYPES]
    if lossy and summary.quantized:
        text += (
            f" ⚠ As in the file requantizes the {', '.join(lossy)} matrices to 4 bits (a non-linear format the "
            "kernels cannot run exactly): close to, not exactly, the file's weights; the first load takes longer."
        )
    return text


EXACT_ACTIVATIONS_LABEL = "Exact int8 arithmetic (as trained; slower)"


def offers_exact_activations(state: CardState) -> bool:
    """Whether the card offers exact activations: a model the user has (a source to load) that
    was trained with per-token int8 activations (ModelConfig.act_quant, Engine.load's option)."""
    model = state.model
    return state.source is not None and model is not None and model.config.act_quant == "int8_token"


class ModelCard(QFrame):
    """One model: title, bit choice, per-variant estimates, status, progress, actions."""

    showCard = Signal(str)  # card id of a model this card points to (the native model named by the 2-bit warning)

    def __init__(
        self,
        state: CardState,
        default_bits: int | None,
        parent: QWidget | None = None,
        alternative: CatalogModel | None = None,
    ) -> None:
        super().__init__(parent)
        self.state = state
        self.alternative = alternative  # the native low-bit model the 2-bit warning names
        self.setObjectName(f"card:{state.card_id}")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        layout = QVBoxLayout(self)

        self.title_label = QLabel(f"<b>{state.title}</b>")
        self.subtitle_label = QLabel(state.subtitle)
        self.subtitle_label.setWordWrap(True)
        self.subtitle_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.title_label)
        layout.addWidget(self.subtitle_label)
        self.source_label = QLabel()  # type mix; "as in the file" requantizes some matrices
        self.source_label.setObjectName("source")
        self.source_label.setWordWrap(True)
        layout.addWidget(self.source_label)

        # The variants this model offers (None: as in the file), as radio buttons whose ids are
        # _button_id(bits); a file with no as-in-the-file variant (float weights) shows 4 and 2 only.
        offered = state.model.bits if state.model is not None else (None, 4, 2)
        self.offered_bits: tuple[int | None, ...] = tuple(b for b in (None, 4, 2) if b in offered)
        bits_row = QHBoxLayout()
        bits_row.addWidget(QLabel("Run at:"))
        self.bits_group = QButtonGroup(self)
        self.bits_buttons: dict[int | None, QRadioButton] = {}
        native = state.model.native if state.model is not None else None
        for bits in self.offered_bits:
            button = QRadioButton(bits_label(bits, None, native))
            button.setObjectName(f"bits{_button_id(bits) or 'file'}")
            button.setAccessibleName(
                f"Run {state.title} as in the file" if bits is None else f"Run {state.title} at {bits} bits per weight"
            )
            if len(self.offered_bits) == 1:  # a native model's one variant: stated, not a choice
                button.setToolTip("This model was trained at this width; it has no other variant.")
            self.bits_group.addButton(button, _button_id(bits))
            self.bits_buttons[bits] = button
            bits_row.addWidget(button)
        fallback = None if None in self.offered_bits else 4
        self.bits_buttons[default_bits if default_bits in self.offered_bits else fallback].setChecked(True)
        bits_row.addStretch(1)
        layout.addLayout(bits_row)

        self.estimate_labels: dict[int | None, QLabel] = {}
        self.quality_labels: dict[int | None, QLabel] = {}  # what the bit width does to the answers (measured)
        for bits in self.offered_bits:
            label = QLabel()
            label.setObjectName(f"estimate{_button_id(bits) or 'file'}")
            label.setWordWrap(True)
            self.estimate_labels[bits] = label
            layout.addWidget(label)
            quality = QLabel()
            quality.setObjectName(f"quality{_button_id(bits) or 'file'}")
            quality.setWordWrap(True)
            quality.setIndent(16)
            self.quality_labels[bits] = quality
            layout.addWidget(quality)

        # Shown while 2-bit is selected on a small model; a warning, not a refusal.
        self.bits_warning_label = QLabel()
        self.bits_warning_label.setObjectName("bitsWarning")
        self.bits_warning_label.setAccessibleName("2-bit quality warning")
        self.bits_warning_label.setWordWrap(True)
        self.bits_warning_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # a border, not a text colour, so it reads in the light and the dark theme alike
        self.bits_warning_label.setStyleSheet(
            "QLabel { border: 1px solid #e0a800; border-left: 4px solid #e0a800;"
            " border-radius: 4px; padding: 4px 8px; }"
        )
        layout.addWidget(self.bits_warning_label)
        self.alternative_button = QPushButton()  # "Show <native model>": scrolls to its card
        self.alternative_button.setObjectName("showAlternative")
        self.alternative_button.setVisible(False)
        self.alternative_button.clicked.connect(
            lambda: self.showCard.emit(self.alternative.id) if self.alternative is not None else None
        )
        layout.addWidget(self.alternative_button)
        self.bits_group.idToggled.connect(lambda _id, _on: self.update_bits_warning())
        self.update_bits_warning()
        # models trained with int8 activations only (offers_exact_activations); saved per model
        self.exact_check = QCheckBox(EXACT_ACTIVATIONS_LABEL)
        self.exact_check.setObjectName("exactActivations")
        self.exact_check.setToolTip(
            "Computes each layer's int8 inputs exactly as the model was trained. The default "
            "arithmetic is faster and differs by about 2 % of the scores. Applies the next time "
            "the model is loaded."
        )
        self.exact_check.setVisible(False)
        layout.addWidget(self.exact_check)

        self.status_label = QLabel()
        self.status_label.setObjectName("status")
        self.status_label.setWordWrap(True)
        layout.addWidget(self.status_label)
        self.progress_bar = QProgressBar()
        self.progress_bar.setObjectName("progress")
        self.progress_bar.setRange(0, 1000)
        self.progress_bar.setVisible(False)
        layout.addWidget(self.progress_bar)
        self.showing_load_failure = False  # the message is a load failure, cleared once the model loads
        self.message = ErrorNotice(f"Message about {state.title}")
        self.message_label = self.message.label  # the sentence; the detail is behind "Details"
        self.message_label.setObjectName("message")
        layout.addWidget(self.message)

        self.token_row = QWidget()
        token_layout = QHBoxLayout(self.token_row)
        token_layout.setContentsMargins(0, 0, 0, 0)
        self.token_edit = QLineEdit()
        self.token_edit.setObjectName("token")
        self.token_edit.setEchoMode(QLineEdit.EchoMode.Password)
        self.token_edit.setPlaceholderText("Hugging Face access token (hf_…)")
        self.token_edit.setAccessibleName("Hugging Face access token")
        self.save_token_button = QPushButton("Save token and retry")
        self.save_token_button.setObjectName("saveToken")
        token_layout.addWidget(self.token_edit, 1)
        token_layout.addWidget(self.save_token_button)
        self.token_row.setVisible(False)
        layout.addWidget(self.token_row)
        self.token_note = QLabel()  # where the token will be kept (the keyring, or the fallback)
        self.token_note.setObjectName("tokenNote")
        self.token_note.setWordWrap(True)
        self.token_note.setVisible(False)
        layout.addWidget(self.token_note)

        actions = QHBoxLayout()
        self.download_button = self._button("Download", "download", actions)
        self.cancel_button = self._button("Cancel", "cancel", actions)
        self.discard_button = self._button("Discard partial", "discard", actions)
        self.use_button = self._button("Use", "use", actions)
        self.measure_button = self._button("Measure speed…", "measure", actions)
        self.compare_button = self._button("Compare 2-bit vs 4-bit…", "compare", actions)
        self.delete_button = self._button("Delete…", "delete", actions)
        actions.addStretch(1)
        layout.addLayout(actions)

    def _button(self, text: str, name: str, row: QHBoxLayout) -> QPushButton:
        button = QPushButton(text)
        button.setObjectName(name)
        button.setAccessibleName(f"{text.rstrip('…')} {self.state.title}")
        row.addWidget(button)
        return button

    @property
    def bits(self) -> int | None:
        """The chosen variant: None for as in the file, else 4 or 2."""
        checked = self.bits_group.checkedId()
        return None if checked == _button_id(None) else checked

    def update_bits_warning(self) -> None:
        """Follow the bit choice and what is known of the model (a local file's size arrives later)."""
        model = self.state.model
        alternative = self.alternative if self.alternative is not model else None
        warning = two_bit_warning(model.parameters if model is not None else None, alternative)
        self.bits_warning_label.setText(f"⚠ {warning}" if warning else "")
        self.bits_warning_label.setAccessibleDescription(warning)
        self.bits_warning_label.setVisible(bool(warning) and self.bits == 2)
        self.alternative_button.setVisible(bool(warning) and self.bits == 2 and alternative is not None)
        if alternative is not None:
            self.alternative_button.setText(f"Show {alternative.name}")
        parameters = model.parameters if model is not None else None
        if 2 in self.bits_buttons:
            # heard when the 2-bit button gets focus, before it is chosen
            self.bits_buttons[2].setAccessibleDescription(warning)
            self.bits_buttons[2].setText("2-bit" if two_bit_recommended(parameters) else "2-bit (not recommended)")
        native = model.native if model is not None else None
        # An inspected float file offers 4 and 2 only; a native one (ternary, GPTQ) only its own variant.
        for bits, button in self.bits_buttons.items():
            offered = model is None or bits in model.bits
            button.setVisible(offered)
            self.estimate_labels[bits].setVisible(offered)
            if not offered and button.isChecked() and model is not None:
                self.bits_buttons[model.bits[0]].setChecked(True)
        if None in self.bits_buttons:
            self.bits_buttons[None].setText(bits_label(None, None, native))
        for bits, label in self.quality_labels.items():
            label.setText(quality_hint(bits, parameters, model.source_quant, native) if model is not None else "")
            label.setVisible(model is not None and bits in model.bits)
        self.source_label.setText(source_text(model) if model is not None else "")
        self.source_label.setVisible(model is not None)

    def set_bits(self, bits: int | None) -> None:
        """Check `bits` (the width the engine actually loaded, e.g. after "Load at 4-bit")."""
        if bits in self.bits_buttons and self.bits != bits:
            self.bits_buttons[bits].setChecked(True)

    def show_message(self, text: str) -> None:
        """A sentence the app wrote (already plain): shown as an error, or hidden when empty."""
        self.showing_load_failure = False
        if text:
            self.message.show_error(text)
        else:
            self.message.clear()

    def show_error(self, error: PlainError) -> None:
        self.showing_load_failure = False
        self.message.show_error(error)


class FillingColumnLayout(QVBoxLayout):
    """The Models page's column. It sits in a scroll area (main_window.py) for the width only: with
    word-wrapped labels a layout reports its preferred height for a width, and a scroll area takes
    that as the page's least height, so the page came out a few pixels taller than the window at
    900×600 and the page scrolled around the card list's own scroll bar. Reporting the least height
    instead lets the card list give up its height and scroll by itself; the page scrolls only when
    even that does not fit."""

    def heightForWidth(self, width: int) -> int:  # noqa: N802 (Qt's name)
        # QLayoutItem.minimumHeightForWidth calls back into this method, so the sum is made here:
        # each shown row at its height for the width (wrapped text) or its least height (the list).
        margins = self.contentsMargins()
        inner = width - margins.left() - margins.right()
        heights = []
        for index in range(self.count()):
            item = self.itemAt(index)
            if item is None or item.isEmpty():
                continue
            least = item.minimumSize().height()
            heights.append(max(least, item.heightForWidth(inner)) if item.hasHeightForWidth() else least)
        gaps = max(0, len(heights) - 1) * max(0, self.spacing())
        return margins.top() + margins.bottom() + sum(heights) + gaps


class ModelManagerPage(QWidget):
    modelChosen = Signal(str, object)  # source (a .gguf path or "default"), bits (None: as in the file, 2, 4)
    downloadsChanged = Signal(int, object, object)  # running downloads, bytes done, bytes total (all of them)

    _importProgress = Signal(object, object)  # bytes copied, total (from the import thread)

    def __init__(self, settings_store: SettingsStore, paths: AppPaths, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings_store, self.paths = settings_store, paths
        self.setAcceptDrops(True)
        self.download_retries = 3  # in-call resumes after a dropped connection
        self.active_source: str | None = None
        self.active_bits: int | None = None
        self._keyring = system_keyring()
        try:
            self.catalog: list[CatalogModel] = load_catalog()
            catalog_problem = ""
        except CatalogError as error:  # a packaging bug: say so, still show local models
            self.catalog, catalog_problem = [], f"The model catalog could not be read: {error}"
        self.cards: dict[str, ModelCard] = {}
        self._jobs: dict[str, DownloadJob] = {}
        self._job_progress: dict[str, tuple[int, int]] = {}  # card id → (bytes done, total)
        self._load_failures: dict[str, PlainError] = {}  # source → why it did not load (shown on its card)
        self._summaries: dict[tuple[str, int, float], object] = {}  # (path, size, mtime) → summary | error | None
        self._bandwidth: float | None = None
        self._bandwidth_measuring = False
        self._total_ram = hardware.total_memory_bytes()
        # what the runtime lacks per catalog model, and the native model the 2-bit warning names
        self._missing = {model.id: missing_support(model) for model in self.catalog}
        settings = self.settings  # the measured bandwidth, when it was measured on this CPU
        bandwidth = settings.memory_bandwidth if settings.memory_bandwidth_cpu == hardware.cpu_model_name() else None
        self.alternative = native_alternative(
            self.catalog,
            lambda m: self._missing.get(m.id, ""),
            total_ram=self._total_ram,
            bandwidth_bytes_per_s=bandwidth,
        )
        self._build(catalog_problem)
        self._importProgress.connect(self._on_import_progress, Qt.ConnectionType.QueuedConnection)
        self._load_bandwidth()
        models_dir = self.models_dir
        run_in_background(lambda: remove_stale_partials(models_dir), context=self)
        application = QApplication.instance()
        if application is not None:
            application.aboutToQuit.connect(self.shutdown)  # keep partial downloads resumable
        self._migrate_token()
        unsubscribe = settings_store.subscribe(self._on_settings_changed)
        self.destroyed.connect(lambda *_: unsubscribe())
        self.refresh()

    # ---- layout ------------------------------------------------------------------------------

    def _build(self, catalog_problem: str) -> None:
        outer = FillingColumnLayout(self)
        header = QLabel("<h2>Models</h2>")
        outer.addWidget(header)
        self.recommendation_label = QLabel()
        self.recommendation_label.setObjectName("recommendation")
        self.recommendation_label.setAccessibleName("Recommended first download")
        self.recommendation_label.setWordWrap(True)
        self.recommendation_label.setStyleSheet(
            "QLabel { border: 1px solid #2e86de; border-left: 4px solid #2e86de;"
            " border-radius: 4px; padding: 4px 8px; }"
        )
        outer.addWidget(self.recommendation_label)

        folder_row = QHBoxLayout()
        self.folder_label = QLabel()
        self.folder_label.setObjectName("modelsFolder")
        self.folder_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        folder_row.addWidget(self.folder_label, 1)
        self.folder_button = QPushButton("Change folder…")
        self.folder_button.setObjectName("changeFolder")
        self.folder_button.clicked.connect(self._choose_folder)
        folder_row.addWidget(self.folder_button)
        self.open_folder_button = QPushButton("Open folder")
        self.open_folder_button.clicked.connect(
            lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(self.models_dir)))
        )
        folder_row.addWidget(self.open_folder_button)
        self.clear_cache_button = QPushButton("Clear repacked-model cache")
        self.clear_cache_button.setObjectName("clearCache")
        self.clear_cache_button.setToolTip(
            "Delete the 4-bit and 2-bit copies the engine made of your models. They are rebuilt, "
            "which takes a while, the next time each model loads. Your model files are not touched."
        )
        self.clear_cache_button.clicked.connect(self.clear_repacked_cache)
        folder_row.addWidget(self.clear_cache_button)
        outer.addLayout(folder_row)

        import_row = QHBoxLayout()
        self.import_button = QPushButton("Import GGUF file…")
        self.import_button.setObjectName("import")
        self.import_button.clicked.connect(self._choose_import)
        import_row.addWidget(self.import_button)
        self.import_folder_button = QPushButton("Import model folder…")
        self.import_folder_button.setObjectName("importFolder")
        self.import_folder_button.setToolTip(
            "A Hugging Face model folder: config.json, *.safetensors and tokenizer files. "
            "Only those are copied; .bin/.pt pickles never are."
        )
        self.import_folder_button.clicked.connect(self._choose_import_folder)
        import_row.addWidget(self.import_folder_button)
        self.copy_check = QCheckBox("Copy into the models folder")
        self.copy_check.setChecked(True)
        self.copy_check.setToolTip("Unchecked: the file stays where it is and is used from there.")
        import_row.addWidget(self.copy_check)
        import_row.addWidget(QLabel("…or drop a .gguf file or a model folder on this page."))
        import_row.addStretch(1)
        outer.addLayout(import_row)

        self.notice = ErrorNotice("Notice")
        self.notice_label = self.notice.label  # the sentence; the detail is behind "Details"
        self.notice_label.setObjectName("notice")
        if catalog_problem:
            self.notice.show_error(explain("catalog", catalog_problem))
        outer.addWidget(self.notice)
        self.import_progress = QProgressBar()
        self.import_progress.setRange(0, 1000)
        self.import_progress.setVisible(False)
        outer.addWidget(self.import_progress)

        bandwidth_row = QHBoxLayout()
        self.bandwidth_label = QLabel()
        self.bandwidth_label.setObjectName("bandwidth")
        self.bandwidth_label.setWordWrap(True)
        bandwidth_row.addWidget(self.bandwidth_label, 1)
        self.remeasure_button = QPushButton("Measure again")
        self.remeasure_button.clicked.connect(lambda: self._measure_bandwidth(force=True))
        bandwidth_row.addWidget(self.remeasure_button)
        outer.addLayout(bandwidth_row)

        scroll = QScrollArea()
        self.cards_scroll = scroll
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        container = QWidget()
        self.cards_layout = QVBoxLayout(container)
        # Heads the imports and the Hub files the catalog lacks, after every catalog card.
        self.my_models_label = QLabel("<h3>My models</h3>")
        self.my_models_label.setObjectName("myModels")
        self.my_models_label.setVisible(False)
        self.cards_layout.addWidget(self.my_models_label)
        self.cards_layout.addStretch(1)
        scroll.setWidget(container)
        outer.addWidget(scroll, 1)

    def _notice(self, text: str) -> None:
        """A note the app wrote (progress, success); errors go through _notice_error."""
        if text:
            self.notice.show_info(text)
        else:
            self.notice.clear()

    def _notice_error(self, error: PlainError) -> None:
        self.notice.show_error(error)

    # ---- settings ----------------------------------------------------------------------------

    @property
    def settings(self) -> AppSettings:
        return self.settings_store.current

    @property
    def models_dir(self) -> Path:
        return Path(self.settings.models_dir) if self.settings.models_dir else self.paths.models_dir

    def _on_settings_changed(self, _settings: AppSettings, changed: frozenset[str]) -> None:
        if "models_dir" in changed:
            self.refresh()
        elif "n_ctx" in changed:
            self._update_estimates()  # the RAM estimates include the KV cache at this context

    def _save(self, **changes) -> None:
        self.settings_store.update(**changes)

    def set_active_model(self, source: str | None, bits: int | None) -> None:
        """The model the chat engine has loaded (at `bits`): it cannot be deleted while in use, its
        card shows the bit width really loaded, and any earlier load failure of it is forgotten."""
        self.active_source, self.active_bits = source, bits
        if source is not None:
            self._load_failures.pop(source, None)
        self.refresh()

    def mark_load_failed(self, source: str, kind: str, detail: str) -> None:
        """Say on the card of `source` that it could not be loaded, in plain words (detail behind Details)."""
        self._load_failures[source] = explain(kind, detail, subject="This model could not be loaded")
        self.refresh()

    def _migrate_token(self) -> None:
        try:
            migrate_token(self.settings_store, self._keyring)
        except (OSError, ValueError) as error:  # the settings file could not be written: keep it as it is
            self._notice_error(explain_error(error))

    # ---- the cards ---------------------------------------------------------------------------

    def card(self, card_id: str) -> ModelCard:
        return self.cards[card_id]

    def refresh(self) -> None:
        """Re-read installed models and partial downloads from disk and update every card."""
        folder = self.models_dir
        self.folder_label.setText(f"Models folder: {folder}")
        try:
            installed, partials = list_installed(folder), pending_downloads(folder)
        except OSError as error:
            installed, partials = [], {}
            self._notice(f"Cannot read the models folder {folder}: {error}")
        states = merge_inventory(
            self.catalog, installed, partials, hardware.embedded_model_path(), lambda m: self._missing.get(m.id, "")
        )
        wanted = {s.card_id for s in states}
        for card_id in [c for c in self.cards if c not in wanted]:
            if card_id not in self._jobs:
                self.cards.pop(card_id).deleteLater()
        # The layout is [catalog cards…, "My models", local cards…, stretch]. A card is moved only when
        # its index differs, so nothing shifts under the pointer when states change.
        order: list[QWidget] = []
        for state in states:
            if state.kind == LOCAL and self.my_models_label not in order:
                order.append(self.my_models_label)
            card = self.cards.get(state.card_id)
            if card is None:
                card = self._make_card(state)
                self.cards[state.card_id] = card
            card.state = state
            order.append(card)
        self.my_models_label.setVisible(self.my_models_label in order)
        if self.my_models_label not in order:
            order.append(self.my_models_label)
        order += [c for c in self.cards.values() if c not in order]  # gone from disk but still downloading
        for index, widget in enumerate(order):
            if self.cards_layout.indexOf(widget) != index:
                self.cards_layout.removeWidget(widget)
                self.cards_layout.insertWidget(index, widget)
        for state in states:
            card = self.cards[state.card_id]
            self._update_card(card)
            if state.kind in (LOCAL, EMBEDDED):
                self._inspect_local(card)
        self._update_estimates()

    def _make_card(self, state: CardState) -> ModelCard:
        card = ModelCard(state, self.settings.default_bits, alternative=self.alternative)
        card_id = state.card_id
        card.showCard.connect(self.show_card)
        card.bits_group.idToggled.connect(lambda _id, _on: self._update_estimates())
        card.download_button.clicked.connect(lambda: self.start_download(card_id))
        card.cancel_button.clicked.connect(lambda: self.cancel_download(card_id))
        card.discard_button.clicked.connect(lambda: self._discard_partial(card_id))
        card.use_button.clicked.connect(lambda: self._use(card_id))
        card.delete_button.clicked.connect(lambda: self._confirm_delete(card_id))
        card.measure_button.clicked.connect(lambda: self._open_measure(card_id))
        card.compare_button.clicked.connect(lambda: self._open_compare(card_id))
        card.save_token_button.clicked.connect(lambda: self._save_token_and_retry(card_id))
        card.token_edit.returnPressed.connect(lambda: self._save_token_and_retry(card_id))
        card.exact_check.toggled.connect(lambda on: self._set_exact_activations(card_id, on))
        return card

    def _set_exact_activations(self, card_id: str, on: bool) -> None:
        """Save the card's exact-activations choice under its source (read when the model loads)."""
        source = self.cards[card_id].state.source if card_id in self.cards else None
        if source is None:
            return
        chosen = self.settings.exact_activation_models
        wanted = tuple(s for s in chosen if s != source) + ((source,) if on else ())
        if wanted == chosen:
            return
        try:
            self._save(exact_activation_models=wanted)
        except (OSError, ValueError) as error:
            self._notice(f"Could not save settings: {error}")

    def _update_card(self, card: ModelCard) -> None:
        state = card.state
        job = self._jobs.get(state.card_id)
        downloading = job is not None and job.running
        actions = card_actions(state, downloading=downloading, active_source=self.active_source)
        card.download_button.setVisible(actions.download)
        card.download_button.setText("Resume" if actions.resume else "Download")
        card.cancel_button.setVisible(actions.cancel)
        card.discard_button.setVisible(actions.discard)
        card.progress_bar.setVisible(downloading or actions.resume)
        card.use_button.setVisible(actions.use)
        card.measure_button.setVisible(actions.use)
        # 2-bit vs 4-bit needs both; a native model has only its own variant
        both = state.model is None or {2, 4} <= set(state.model.bits)
        card.compare_button.setVisible(actions.use and both)
        card.delete_button.setVisible(actions.delete)
        card.delete_button.setEnabled(actions.delete_allowed)
        card.exact_check.setVisible(offers_exact_activations(state))
        checked = state.source is not None and state.source in self.settings.exact_activation_models
        if card.exact_check.isChecked() != checked:
            card.exact_check.blockSignals(True)  # showing the saved choice is not a new choice
            card.exact_check.setChecked(checked)
            card.exact_check.blockSignals(False)
        in_use = actions.in_use
        card.delete_button.setToolTip("The chat is using this model; choose another one first." if in_use else "")
        if in_use:  # the active model's card shows the variant it runs at (None: as in the file)
            card.set_bits(self.active_bits)
        failure = self._load_failures.get(state.source) if state.source is not None else None
        if failure is not None:
            card.show_error(failure)
            card.showing_load_failure = True
        elif card.showing_load_failure:
            card.show_message("")
        if downloading:
            return  # the job's signals own the status line meanwhile
        if state.installed is not None:
            sha = state.installed.sha256
            card.status_label.setText(
                f"Installed · {format_bytes(state.installed.size)} · sha256 {sha[:12]}… verified"
                + (" · in use" if in_use else "")
            )
        elif state.kind == EMBEDDED:
            card.status_label.setText(
                ("Installed" + (" · in use" if in_use else ""))
                if actions.use
                else "The built-in model file is missing."
            )
        elif actions.resume and state.partial is not None:
            partial = state.partial
            fraction = partial.bytes_done / max(partial.size, 1)
            card.progress_bar.setValue(int(1000 * fraction))
            card.status_label.setText(
                f"Paused at {fraction:.0%} ({format_bytes(partial.bytes_done)} of "
                f"{format_bytes(partial.size)}); Resume continues where it stopped."
            )
        elif state.kind == CATALOG and state.unavailable:
            card.status_label.setText(
                f"Not available yet: {state.unavailable}, so it is not offered for download "
                f"(≈ {format_bytes(state.download_bytes)} when it is)."
            )
        elif state.kind == CATALOG:
            model = state.model
            serves = (
                "its files are the model's only variant"
                if model is not None and len(model.bits) == 1
                else "one download serves every variant"
            )
            what = "model folder: config, tokenizer and safetensors only" if model and model.is_folder else "download"
            card.status_label.setText(f"Not downloaded · {format_bytes(state.download_bytes)} {what} ({serves})")

    # ---- estimates ---------------------------------------------------------------------------

    def _load_bandwidth(self) -> None:
        cpu = hardware.cpu_model_name()
        if self.settings.memory_bandwidth and self.settings.memory_bandwidth_cpu == cpu:
            self._bandwidth = self.settings.memory_bandwidth
        else:
            self._measure_bandwidth()

    def _measure_bandwidth(self, force: bool = False) -> None:
        if self._bandwidth_measuring:
            return
        self._bandwidth_measuring = True
        self.remeasure_button.setEnabled(False)
        self.bandwidth_label.setText("Measuring this computer's memory bandwidth for the speed estimates…")

        def done(bandwidth: float) -> None:
            self._bandwidth_measuring = False
            self.remeasure_button.setEnabled(True)
            self._bandwidth = bandwidth
            try:
                self._save(memory_bandwidth=float(bandwidth), memory_bandwidth_cpu=hardware.cpu_model_name())
            except OSError as error:
                self._notice(f"Could not save settings: {error}")
            self._update_estimates()

        def failed(error: BaseException) -> None:
            self._bandwidth_measuring = False
            self.remeasure_button.setEnabled(True)
            self.bandwidth_label.setText(
                f"Could not measure memory bandwidth ({error}); speed estimates assume "
                f"{format_bandwidth(DEFAULT_BANDWIDTH_BYTES_PER_S, digits=0)}."
            )

        run_in_background(hardware.measure_memory_bandwidth, done, failed, context=self)

    def _update_recommendation(self) -> None:
        bandwidth = self._bandwidth or DEFAULT_BANDWIDTH_BYTES_PER_S
        pick = recommend_download(
            self.catalog,
            total_ram=self._total_ram,
            bandwidth_bytes_per_s=bandwidth,
            context=self.settings.n_ctx,  # None: the automatic context, as on the cards
            free_bytes=hardware.available_memory_bytes(),
        )
        if pick is None:
            self.recommendation_label.setVisible(False)
            return
        card = self.cards.get(pick.model.id)
        installed = card is not None and card.state.installed is not None
        speed = f"≈ {format_tok_s(pick.decode_tokens_per_s, digits=0)} (estimate)" if self._bandwidth else ""
        ram = f"needs ≈ {format_bytes(pick.ram_bytes)}" + (
            f" of this computer's {format_bytes(self._total_ram)} RAM" if self._total_ram else " RAM"
        )
        why = (
            "the largest model that leaves half the memory free and answers at least at reading speed"
            if pick.fits
            else "the smallest model: this computer is short of memory or speed for the others"
        )
        status = " · installed" if installed else f" · {format_bytes(pick.model.size_bytes)} download"
        self.recommendation_label.setText(
            f"<b>Recommended for this computer: {pick.model.name}, {pick.bits}-bit</b> ({why}) · "
            + " · ".join(part for part in (ram, speed) if part)
            + status
        )
        self.recommendation_label.setVisible(True)

    def _update_estimates(self) -> None:
        self._update_recommendation()
        bandwidth = self._bandwidth
        if bandwidth is not None:
            self.bandwidth_label.setText(
                f"Speeds are estimates: bytes read per token ÷ this computer's measured memory bandwidth "
                f"({format_bandwidth(bandwidth)}, multi-threaded copy), at about 70 % efficiency. RAM includes the "
                f"KV cache for {self._context_phrase()}. Measure speed… gives real figures."
            )
        free = hardware.available_memory_bytes()
        for card in self.cards.values():
            model = card.state.model
            card.update_bits_warning()
            for bits, label in card.estimate_labels.items():
                if model is None:
                    label.setText(f"{bits_label(bits)}: checking the file…")
                    continue
                estimate = estimate_variant(
                    ModelVariant(model, bits),
                    context=self.settings.n_ctx,  # None: the context the engine will pick, as it will
                    free_bytes=free,
                    bandwidth_bytes_per_s=bandwidth or DEFAULT_BANDWIDTH_BYTES_PER_S,
                )
                text = self._estimate_text(card.state, bits, estimate, bandwidth is not None)
                label.setText(f"<b>{text}</b>" if bits == card.bits else text)

    def _context_phrase(self) -> str:
        if self.settings.n_ctx:
            return f"a {self.settings.n_ctx:,}-token context (Settings)"
        return (
            "the context each model gets automatically: the most of its own that a quarter of the free "
            f"memory holds, {AUTO_CTX_MIN:,} to {AUTO_CTX_MAX:,} tokens, shown on each line"
        )

    def _estimate_text(self, state: CardState, bits: int | None, e: VariantEstimate, measured: bool) -> str:
        disk = f"{format_bytes(state.download_bytes)} file + {format_bytes(e.packed_bytes)} repacked cache"
        ram = f"needs ≈ {format_bytes(e.ram_bytes)} RAM ({e.context:,}-token context)"
        if self._total_ram and e.ram_bytes > 0.8 * self._total_ram:
            ram += f" <span style='color:#c0392b'>(this computer has {format_bytes(self._total_ram)})</span>"
        speed = f"≈ {format_tok_s(e.decode_tokens_per_s, digits=0)} (estimate)" if measured else "speed: measuring…"
        model = state.model
        label = bits_label(bits, model.source_quant if model is not None else None, model.native if model else None)
        bpw = f"{e.bits_per_weight:.1f} bits/weight"
        return f"{label}: {bpw} · {disk} · {ram} · {speed}"

    def _inspect_local(self, card: ModelCard) -> None:
        """Read the card's file (an import, or the built-in model) for its shapes and type mix, in the background."""
        if card.state.file is None:
            return
        path = card.state.file
        try:
            stat = path.stat()
        except OSError as error:
            card.show_error(explain_error(error, subject="The file cannot be read"))
            return
        key = (str(path), stat.st_size, stat.st_mtime)
        if key in self._summaries:
            self._apply_summary(card, self._summaries[key])
            return
        self._summaries[key] = None  # in flight

        def done(summary: object) -> None:
            self._summaries[key] = summary
            if self.cards.get(card.state.card_id) is card:
                self._apply_summary(card, summary)
                self._update_estimates()

        def failed(error: BaseException) -> None:
            self._summaries[key] = error
            if self.cards.get(card.state.card_id) is card:
                self._apply_summary(card, error)

        run_in_background(lambda: model_files.inspect_model(path), done, failed, context=card)

    def _apply_summary(self, card: ModelCard, summary: object) -> None:
        if summary is None:
            return
        if isinstance(summary, BaseException):
            card.show_error(explain_error(summary))
            card.use_button.setEnabled(False)
            return
        assert isinstance(summary, ModelSummary)
        card.state.model = CatalogModel.from_summary(summary, card.state.card_id)
        card.use_button.setEnabled(True)
        if card.state.kind == EMBEDDED:  # keeps its own title; where its file sits is not the user's business
            self._update_card(card)
            card.subtitle_label.setText(
                f"{card.state.subtitle} · {format_parameters(summary.n_params)} parameters · {summary.arch} · "
                f"{summary.config.n_ctx_train:,}-token context"
            )
            return
        filename = card.state.installed.filename if card.state.installed is not None else Path(summary.path).name
        card.title_label.setText(f"<b>{summary.name}</b> — {filename}")
        self._update_card(card)  # what it offers now that its variants are known (Compare needs 4 and 2)
        card.subtitle_label.setText(
            f"{format_parameters(summary.n_params)} parameters · {summary.arch} · "
            f"{summary.config.n_ctx_train:,}-token context · {summary.file_type} source · "
            f"{card.state.subtitle}"
        )

    # ---- downloads ---------------------------------------------------------------------------

    def start_download(self, card_id: str) -> None:
        card = self.cards[card_id]
        model = card.state.model
        if model is None or (card_id in self._jobs and self._jobs[card_id].running):
            return
        card.show_message("")
        card.token_row.setVisible(False)
        if self.settings.offline_mode:
            card.show_message("Offline mode is on (Settings), so nothing is downloaded. Switch it off to download.")
            return
        job = DownloadJob(
            model.repo_id,
            model.filename,
            self.models_dir,
            token=load_token(self.settings, self._keyring),
            expected_size=model.size_bytes,
            retries=self.download_retries,
            folder=model.is_folder,
            parent=self,
        )
        self._jobs[card_id] = job
        job.progress.connect(lambda done, total, speed, eta: self._on_progress(card_id, done, total, speed, eta))
        job.finished.connect(lambda entry: self._on_finished(card_id, entry))
        job.failed.connect(lambda kind, text: self._on_failed(card_id, kind, text))
        job.cancelled.connect(lambda done, total: self._on_cancelled(card_id, done, total))
        card.status_label.setText("Asking Hugging Face for the file…")
        self._job_progress[card_id] = (0, model.size_bytes)
        job.start()
        self._update_card(card)
        self._emit_downloads()

    def _emit_downloads(self) -> None:
        """The totals over every running download, for the window's status-bar indicator."""
        running = [card_id for card_id, job in self._jobs.items() if job.running]
        done = sum(self._job_progress.get(card_id, (0, 0))[0] for card_id in running)
        total = sum(self._job_progress.get(card_id, (0, 0))[1] for card_id in running)
        self.downloadsChanged.emit(len(running), done, total)

    def cancel_download(self, card_id: str) -> None:
        job = self._jobs.get(card_id)
        if job is not None:
            job.cancel()
            self.cards[card_id].status_label.setText("Cancelling…")

    def _on_progress(self, card_id: str, done: int, total: int, speed: float, eta: float | None) -> None:
        card = self.cards[card_id]
        card.progress_bar.setVisible(True)
        card.progress_bar.setValue(int(1000 * done / max(total, 1)))
        verifying = " · verifying sha256…" if done >= total else ""
        card.status_label.setText("Downloading: " + progress_text(done, total, speed, eta) + verifying)
        self._job_progress[card_id] = (done, total)
        self._emit_downloads()

    def _job_ended(self, card_id: str) -> None:
        job = self._jobs.pop(card_id, None)
        self._job_progress.pop(card_id, None)
        if job is not None:
            job.deleteLater()
        self._emit_downloads()

    def _on_finished(self, card_id: str, entry: InstalledModel) -> None:
        self._job_ended(card_id)
        try:
            for stale in superseded_partials(list_partial_downloads(self.models_dir), entry):
                discard_partial_download(self.models_dir, stale.sha256)
        except (
            ModelFileError,
            DownloadError,
        ) as error:  # a leftover we may not touch (a link, another window's download)
            self.cards[card_id].show_error(explain_error(error, subject="Could not remove an old partial download"))
        self.refresh()

    def _on_cancelled(self, card_id: str, done: int, total: int) -> None:
        self._job_ended(card_id)
        self.refresh()

    def _on_failed(self, card_id: str, kind: str, text: str) -> None:
        self._job_ended(card_id)
        self.refresh()
        card = self.cards[card_id]
        error = explain(kind, text)
        model = card.state.model
        if kind == download_worker.GATED and model is not None:
            # The license is accepted on the model page: a link the user can click, then a token pasted here.
            url = HF_MODEL_URL.format(repo_id=html.escape(model.repo_id))
            card.message.show_html(
                "error",
                f"{html.escape(error.text)} Open <a href='{url}'>the model page on Hugging Face</a>, accept the "
                "license, then paste an access token below.",
                error.detail,
            )
            card.showing_load_failure = False
            card.token_row.setVisible(True)
            keyring_note = "It is kept in this computer's password store (keyring)."
            card.token_note.setText(keyring_note if self._keyring is not None else FALLBACK_NOTE)
            card.token_note.setVisible(True)
            card.token_edit.setFocus()
        else:
            card.show_error(error)

    def _save_token_and_retry(self, card_id: str) -> None:
        token = self.cards[card_id].token_edit.text().strip()
        if not token:
            self.cards[card_id].show_message(
                "Paste a Hugging Face access token first (huggingface.co → Settings → Access Tokens, type “read”)."
            )
            return
        try:
            save_token(token, self.settings_store, self._keyring)
        except (OSError, ValueError) as error:
            self.cards[card_id].show_error(explain_error(error, subject="The token could not be saved"))
            return
        self.cards[card_id].token_edit.clear()
        self.cards[card_id].token_note.setVisible(False)
        self.start_download(card_id)

    def _discard_partial(self, card_id: str) -> None:
        model = self.cards[card_id].state.model
        if model is None:
            return
        partial = pending_downloads(self.models_dir).get((model.repo_id, model.filename))
        if partial is not None:
            try:
                discard_partial_download(self.models_dir, partial.sha256)
            except (ModelFileError, DownloadError) as error:
                self.cards[card_id].show_error(explain_error(error, subject="Could not discard the download"))
                return
        self.refresh()

    def shutdown(self, wait_s: float = 2.0) -> None:
        """Cancel running downloads (their bytes are kept for resuming) at application exit."""
        for job in list(self._jobs.values()):
            job.cancel()
        for job in list(self._jobs.values()):
            job.wait(wait_s)

    # ---- use, delete, measure, compare -------------------------------------------------------

    def _use(self, card_id: str) -> None:
        card = self.cards[card_id]
        if card.state.source is not None:
            self.modelChosen.emit(card.state.source, card.bits)

    def _confirm_delete(self, card_id: str) -> None:
        card = self.cards[card_id]
        entry = card.state.installed
        if entry is None:
            return
        own_file = entry.source != "import-reference"
        box = QMessageBox(
            QMessageBox.Icon.Warning,
            "Delete model",
            f"Delete {entry.filename} ({format_bytes(entry.size)})?"
            + ("" if own_file else "\nThe original file is yours and stays where it is; only the entry is removed."),
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel,
            self,
        )
        box.setObjectName("confirmDelete")
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.finished.connect(
            lambda result: self._delete(card_id, entry.key) if result == QMessageBox.StandardButton.Yes else None
        )
        box.finished.connect(box.deleteLater)
        box.open()

    def _delete(self, card_id: str, key: str) -> None:
        try:
            delete_installed(self.models_dir, key)
        except (OSError, KeyError, ModelFileError) as error:
            self.cards[card_id].show_error(explain_error(error, subject="Could not delete"))
            return
        self.refresh()

    def _open_measure(self, card_id: str) -> None:
        from app.ui.measure import MeasureDialog

        card = self.cards[card_id]
        if card.state.source is None:
            return
        dialog = MeasureDialog(self.settings_store, self.paths, card.state.source, card.bits, parent=self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()

    def _open_compare(self, card_id: str) -> None:
        from app.ui.compare import CompareDialog

        source = self.cards[card_id].state.source
        if source is None:
            return
        dialog = CompareDialog(self.settings_store, self.paths, source, parent=self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.open()

    # ---- models folder -----------------------------------------------------------------------

    def _choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose the models folder", str(self.models_dir))
        if folder:
            self.set_models_dir(folder)

    def set_models_dir(self, folder: str | None) -> bool:
        """Switch to another models folder (None: the default). Refused while a download runs."""
        if any(job.running for job in self._jobs.values()):
            self._notice("Wait for the downloads to finish (or cancel them) before changing folders.")
            return False
        if folder is not None:
            path = Path(folder).expanduser()
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                self._notice(f"Cannot use {path} as the models folder: {error}")
                return False
            if not os.access(path, os.W_OK):
                self._notice(f"Cannot use {path} as the models folder: it is not writable.")
                return False
            folder = str(path.resolve())
        try:
            self._save(models_dir=folder)
        except OSError as error:
            self._notice(f"Could not save settings: {error}")
            return False
        self._notice(f"Models folder: {self.models_dir}. Models in the previous folder stay there.")
        self.refresh()
        return True

    # ---- import ------------------------------------------------------------------------------

    def show_card(self, card_id: str) -> None:
        """Bring a card into view and focus it (the 2-bit warning's "Show <native model>")."""
        card = self.cards.get(card_id)
        if card is None:
            return
        self.cards_scroll.ensureWidgetVisible(card)
        card.setFocus(Qt.FocusReason.OtherFocusReason)
        next(iter(card.bits_buttons.values())).setFocus(Qt.FocusReason.OtherFocusReason)

    def _choose_import_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Import model folder (safetensors)", str(Path.home()))
        if folder:
            self.import_files([folder])

    def _choose_import(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(
            self, "Import GGUF model", str(Path.home()), "GGUF models (*.gguf);;All files (*)"
        )
        if files:
            self.import_files(files)

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:
        if any(url.isLocalFile() for url in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event: QDropEvent) -> None:
        files = [url.toLocalFile() for url in event.mimeData().urls() if url.isLocalFile()]
        if files:
            event.acceptProposedAction()
            self.import_files(files)

    def import_files(self, files: list[str]) -> None:
        """Check each file with the runtime's reader, then copy (or reference) it into the models folder."""
        for file in files:
            self._import_one(Path(file))

    def _import_one(self, source: Path) -> None:
        models_dir, copy = self.models_dir, self.copy_check.isChecked()
        self._notice(f"Checking {source.name}…")
        self.import_button.setEnabled(False)

        def work() -> tuple[ModelSummary, InstalledModel, bool]:
            summary = model_files.inspect_model(source)
            # The same content already installed (a download, or an earlier import): say so, copy nothing.
            if source.is_dir():
                size, digest = folder_size_and_digest(source)
                duplicate = find_duplicate(list_installed(models_dir), size, lambda: digest)
            else:
                duplicate = find_duplicate(
                    list_installed(models_dir), source.stat().st_size, lambda: sha256_of_file(source)
                )
            if duplicate is not None:
                return summary, duplicate, True
            importer = import_local_folder if source.is_dir() else import_local_gguf
            entry = importer(models_dir, source, copy=copy, progress=self._importProgress.emit, summary=summary)
            return summary, entry, False

        def done(result: tuple[ModelSummary, InstalledModel, bool]) -> None:
            summary, entry, duplicate = result
            self.import_button.setEnabled(True)
            self.import_progress.setVisible(False)
            if duplicate:
                self._notice(
                    f"{source.name} is already installed as {entry.filename} (the same file, sha256 "
                    f"{entry.sha256[:12]}…): nothing was imported."
                )
                return
            self._notice(
                f"Imported {source.name}: {summary.name}, {summary.arch}, "
                f"{format_parameters(summary.n_params)} parameters."
            )
            self.refresh()

        def failed(error: BaseException) -> None:
            self.import_button.setEnabled(True)
            self.import_progress.setVisible(False)
            self._notice_error(explain_error(error, subject=f"Could not import {source.name}"))

        run_in_background(work, done, failed, context=self)

    # ---- the repacked-model cache -------------------------------------------------------------

    def clear_repacked_cache(self) -> None:
        """Delete the engine's repacked copies (in the background) and say how many bytes that freed."""
        folder = self.paths.engine_cache_dir
        self.clear_cache_button.setEnabled(False)
        self._notice("Clearing the repacked-model cache…")

        def done(freed: int) -> None:
            self.clear_cache_button.setEnabled(True)
            self._notice(
                f"Cleared the repacked-model cache: {format_bytes(freed)} freed. Each model is repacked "
                "the next time it loads (the model in use keeps running)."
                if freed
                else "The repacked-model cache was already empty."
            )

        def failed(error: BaseException) -> None:
            self.clear_cache_button.setEnabled(True)
            self._notice_error(explain_error(error, subject="The cache could not be cleared"))

        run_in_background(lambda: model_files.clear_repacked_cache(folder), done, failed, context=self)

    @Slot(object, object)
    def _on_import_progress(self, done: int, total: int) -> None:
        self.import_progress.setVisible(done < total)
        self.import_progress.setValue(int(1000 * done / max(total, 1)))
        self._notice(f"Copying: {format_bytes(done)} of {format_bytes(total)}")
