"""Conversation domain: SQLite history (store), export and context trimming.

Pure Python: must not import PySide6 or tmac_core internals.
"""
