"""Import boundaries, checked in fresh interpreters: the runtime and the Qt-free app layers never load PySide6;
what the app reads about models (tmac_core.plan, tmac_core.types, the architecture registry) loads neither
numpy nor the compiled runtime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def modules_loaded_by(statement: str) -> set[str]:
    probe = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


@pytest.mark.parametrize(
    "statement",
    [
        "import tmac_core, tmac_core.engine",
        "import app.chat, app.chat.store, app.chat.export, app.chat.trim, app.catalog, app.settings, app.paths",
        "import app.workers.engine_host",
    ],
)
def test_no_qt_below_the_ui(statement):
    loaded = modules_loaded_by(statement)
    assert not {name for name in loaded if name.split(".")[0] in ("PySide6", "shiboken6")}


def test_the_probe_can_see_qt_when_it_is_imported():
    # Guards the test above: if the probe could not see PySide6 at all, it would pass for nothing.
    assert "PySide6.QtCore" in modules_loaded_by("import app.workers.engine_client")


def test_the_gui_side_does_not_load_the_kernels():
    loaded = modules_loaded_by("import app.ui.main_window")
    assert "tmac_core.kernels._kernels" not in loaded and "tmac_core.engine" not in loaded


HEAVY = (
    "numpy",
    "tmac_core.kernels",
    "tmac_core.kernels._kernels",
    "tmac_core.models._llama",
    "tmac_core.models.loader",
    "tmac_core.loading.gguf",
    "tmac_core.engine",
)


@pytest.mark.parametrize(
    "statement",
    [
        "import tmac_core.plan, tmac_core.types",
        "import tmac_core, tmac_core.models, tmac_core.filehash",
        "import app.catalog.catalog, app.catalog.installed",
    ],
)
def test_the_model_plan_loads_neither_numpy_nor_the_runtime(statement):
    loaded = modules_loaded_by(statement)
    assert not loaded & set(HEAVY)


def test_the_probe_can_see_numpy_when_the_runtime_is_imported():
    # Guards the test above, as for Qt.
    assert set(HEAVY) <= modules_loaded_by("import tmac_core.engine, tmac_core.models.loader")
