"""Background work for the GUI: the engine process and the chat controller.

QtCore only (never QtWidgets). engine_host runs in the child process and imports
no Qt at all.
"""
