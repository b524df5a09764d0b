"""T-MAC Chat desktop application package.

Sub-packages `app.chat`, `app.catalog`, `app.power` and the modules `app.paths`
and `app.settings` are the Qt-free zone: they must never import PySide6, so
that they can be tested headless and reused by the engine process.
"""
