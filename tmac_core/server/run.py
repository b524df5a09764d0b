"""Running the server with Uvicorn: in the foreground (the command line) or on a thread (the app, tests).

The listening socket is bound here, before Uvicorn starts, so a port in use is an OSError
the caller can show, and port 0 gives a free port that is known at once.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections.abc import Callable

import uvicorn

from tmac_core.server.app import Server, ServerConfig
from tmac_core.server.backend import Backend

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
CONNECTIONS_BEYOND_QUEUE = 64  # room for the running answer, 429s being sent, /health and /v1/models


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); raises OSError (port in use, no such address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if sys.platform != "win32":  # on Windows SO_REUSEADDR would let two servers share the port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def _uvicorn(server: Server) -> uvicorn.Server:
    config = uvicorn.Config(
        server.asgi(),
        log_level="warning",
        access_log=False,  # paths only, but a busy log helps nobody; prompts are never logged here
        lifespan="off",
        timeout_graceful_shutdown=2,
        # open connections beyond the queue get Uvicorn's 503 instead of piling up
        limit_concurrency=server.config.max_queue + CONNECTIONS_BEYOND_QUEUE,
    )
    return uvicorn.Server(config)


def address(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    return f"http://{shown}:{port}/v1"


def serve_forever(backend: Backend, config: ServerConfig, ready: Callable[[str], None] | None = None) -> None:
    """The command line: serve until Ctrl+C (Uvicorn handles the signal), then close the backend.
    `ready` gets the address once the port is bound (port 0: the one the system chose)."""
    sock = bind(config.host, config.port)
    server = Server(backend, config)
    if ready is not None:
        ready(address(config.host, sock.getsockname()[1]))
    try:
        _uvicorn(server).run(sockets=[sock])
    finally:
        server.close()
        backend.close()
        sock.close()


class ServerThread:
    """The server on its own thread and event loop; stop() ends it (and its open answers)."""

    def __init__(self, backend: Backend, config: ServerConfig) -> None:
        self.config = config
        self._sock = bind(config.host, config.port)
        self.port: int = self._sock.getsockname()[1]
        self.server = Server(backend, config)
        self._uvicorn = _uvicorn(self.server)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="tmac-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._uvicorn.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._uvicorn.started:
            self.stop()
            raise OSError(f"the server did not start on port {self.port}")

    @property
    def url(self) -> str:
        return address(self.config.host, self.port)

    def _run(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            await self._uvicorn.serve(sockets=[self._sock])

        asyncio.run(main())

    def stop(self) -> None:
        """Cancel the queue and the running answer, close the connections, join the thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self.server.close)
            except RuntimeError:  # the loop closed meanwhile
                pass
        self._uvicorn.should_exit = True
        self._thread.join(STOP_TIMEOUT_S)
        if self._thread.is_alive():
            self._uvicorn.force_exit = True
            self._thread.join(STOP_TIMEOUT_S)
        self._sock.close()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()
