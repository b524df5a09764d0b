"""The runtime calls the Models page makes on model files, kept out of the widgets.

The widgets reach the runtime only through its plain-data types (the import contract in
pyproject.toml); these run in a background thread (app.workers.tasks) and return plain data.
"""

from __future__ import annotations

from pathlib import Path

from tmac_core.types import ModelSummary


def inspect_model(path: Path) -> ModelSummary:
    """The runtime's reader on `path` (header and shapes only; raises its typed ModelFormatError)."""
    from tmac_core import inspect_model as inspect

    return inspect(path)


def clear_repacked_cache(folder: Path | None) -> int:
    """Delete the repacked-model cache files in `folder` (None: the runtime's default); bytes freed."""
    from tmac_core.loading.cache import clear_cache

    return clear_cache(folder)
