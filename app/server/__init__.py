"""The app's local OpenAI-compatible server: the window's engine behind tmac_core.server.

    window_backend.py  WindowBackend: the server's requests on the window's EngineClient
    controller.py      LocalServer: starts and stops the server as the settings say

QtCore only (no widgets): app/ui/server_panel.py draws the switch.
"""
