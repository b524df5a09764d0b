"""CPU-time and power readers for the performance panel. Pure Python: must not import PySide6 or tmac_core."""
