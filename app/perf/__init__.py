"""Performance measurements: the pure arithmetic behind the thread sweep. Must not import PySide6."""
