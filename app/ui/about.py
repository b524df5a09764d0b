"""AboutDialog: this machine as the runtime sees it, the versions, and where the files are.

CPU model, cores, detected instruction sets, the kernel tiers this CPU can run and the one
in use, the memory bandwidth behind the speed estimates, the power sensor (or why there is
none), versions, and the data / models / cache / settings folders. "Copy" puts it all on
the clipboard as plain text for bug reports.
"""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt, QUrl
from PySide6.QtGui import QDesktopServices, QGuiApplication
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QGridLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from app import hardware
from app.paths import AppPaths
from app.power.readers import PowerMeter
from app.settings import AppSettings
from app.settings_store import SettingsStore
from app.ui.units import format_bandwidth, format_gb


def about_facts(settings: AppSettings, paths: AppPaths) -> list[tuple[str, str]]:
    """(label, value) rows, in display order."""
    physical = hardware.physical_cores()
    try:
        tier = hardware.instruction_sets()
        features = ", ".join(tier.features) or "none detected"
        tiers = f"{', '.join(tier.available)} (in use: {tier.active})"
        arch = tier.arch
    except Exception as error:  # noqa: BLE001 - the kernels failed to load: say so instead of crashing About
        features = tiers = f"unavailable ({error})"
        arch = "?"
    memory = hardware.total_memory_bytes()
    bandwidth = (
        f"{format_bandwidth(settings.memory_bandwidth)} (measured on {settings.memory_bandwidth_cpu})"
        if settings.memory_bandwidth
        else "not measured yet (the model manager measures it)"
    )
    meter = PowerMeter()
    power = meter.label if meter.sensor is not None else meter.unavailable_reason
    models_dir = Path(settings.models_dir) if settings.models_dir else paths.models_dir
    embedded = hardware.embedded_model_path()
    rows = [
        ("CPU", hardware.cpu_model_name()),
        ("Architecture", arch),
        ("Cores", f"{hardware.logical_cores()} logical" + (f", {physical} physical" if physical else "")),
        ("Memory", format_gb(memory) if memory else "unknown"),
        ("Instruction sets", features),
        ("Kernel tiers", tiers),
        ("Memory bandwidth", bandwidth),
        ("Power sensor", power or "unavailable"),
    ]
    rows += [(name, version) for name, version in hardware.versions().items()]
    rows += [
        ("Built-in model", str(embedded) if embedded else "missing"),
        ("Data folder", str(paths.data_dir)),
        ("Models folder", str(models_dir)),
        ("Cache folder", str(paths.cache_dir)),
        ("Settings file", str(paths.settings_file)),
    ]
    return rows


class AboutDialog(QDialog):
    def __init__(self, settings_store: SettingsStore, paths: AppPaths, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About T-MAC Chat")
        self.setMinimumWidth(760)
        self.settings_store = settings_store
        self.facts = about_facts(settings_store.current, paths)  # a snapshot: the dialog shows the moment it opened
        layout = QVBoxLayout(self)
        layout.addWidget(
            QLabel(
                "<h2>T-MAC Chat</h2>Chat with language models offline, on the CPU, "
                "through lookup-table low-bit kernels."
            )
        )
        grid = QGridLayout()
        self.value_labels: dict[str, QLabel] = {}
        for row, (name, value) in enumerate(self.facts):
            grid.addWidget(QLabel(f"<b>{html.escape(name)}</b>"), row, 0)
            label = QLabel(html.escape(value))
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            label.setAccessibleName(name)
            grid.addWidget(label, row, 1)
            self.value_labels[name] = label
            if name.endswith("folder"):
                button = QPushButton("Open")
                button.setAccessibleName(f"Open {name.lower()}")
                button.clicked.connect(lambda _=False, path=value: QDesktopServices.openUrl(QUrl.fromLocalFile(path)))
                grid.addWidget(button, row, 2)
        grid.setColumnStretch(1, 1)
        layout.addLayout(grid)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.copy_button = buttons.addButton("Copy", QDialogButtonBox.ButtonRole.ActionRole)
        self.copy_button.clicked.connect(self.copy_to_clipboard)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def as_text(self) -> str:
        return "\n".join(f"{name}: {value}" for name, value in self.facts)

    def copy_to_clipboard(self) -> None:
        QGuiApplication.clipboard().setText(self.as_text())
