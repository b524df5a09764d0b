"""The widgets of T-MAC Chat (PySide6). No business logic and no engine here: widgets show what
app.workers signals say, and call app.workers methods for what the user asks."""
