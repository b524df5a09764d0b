"""Model catalog, downloads and installed models. Pure Python: must not import PySide6 or tmac_core."""
