"""CompareRunner: one prompt answered by the 4-bit and the 2-bit variant, one after the other.

Each variant gets its own EngineClient process, started only after the previous one has
been shut down, so the two never compete for cores or memory bandwidth and their speeds
are comparable. Greedy decoding (temperature 0), so differences come from the weights,
not from sampling. QtCore only.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app.workers.engine_client import EngineClient

COMPARE_TOKENS = 128
COMPARE_CONTEXT = 1024


class CompareRunner(QObject):
    status = Signal(str)
    variantStarted = Signal(int)  # bits
    loaded = Signal(int, object)  # bits, tmac_core.types.EngineInfo
    text = Signal(int, str)  # bits, new text
    variantFinished = Signal(int, object)  # bits, final tmac_core.types.Chunk
    failed = Signal(int, str)  # bits, message for the user
    finished = Signal(bool)  # True when every variant answered

    def __init__(
        self,
        source: str,
        prompt: str,
        *,
        bits_order: tuple[int, ...] = (4, 2),
        max_tokens: int = COMPARE_TOKENS,
        n_ctx: int = COMPARE_CONTEXT,
        n_threads: int | None = None,
        cache_dir: Path | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        self.source, self.prompt, self.bits_order = source, prompt, tuple(bits_order)
        self.max_tokens, self.n_ctx, self.n_threads, self.cache_dir = max_tokens, n_ctx, n_threads, cache_dir
        self.infos: dict[int, object] = {}
        self.finals: dict[int, object] = {}
        self.answers: dict[int, str] = {}
        self.running = False
        self._pending: list[int] = []
        self._bits = 0
        self._client: EngineClient | None = None
        self._request: int | None = None

    def start(self) -> None:
        if self.running:
            return
        self.running = True
        self.infos, self.finals, self.answers = {}, {}, {}
        self._pending = list(self.bits_order)
        self._next()

    def cancel(self) -> None:
        if self.running:
            self.running = False
            self._close_client()
            self.status.emit("Comparison cancelled.")
            self.finished.emit(False)

    def shutdown(self) -> None:
        self.running = False
        self._close_client()

    def _close_client(self) -> None:
        client, self._client, self._request = self._client, None, None
        if client is not None:
            client.stop()
            client.shutdown()
            client.deleteLater()

    def _next(self) -> None:
        self._close_client()  # the previous variant's process is gone before the next starts
        if not self._pending:
            self.running = False
            self.status.emit("Done.")
            self.finished.emit(True)
            return
        self._bits = bits = self._pending.pop(0)
        self.answers[bits] = ""
        client = EngineClient(self, cache_dir=self.cache_dir)
        self._client = client
        client.loadProgress.connect(
            lambda fraction, stage: self.status.emit(f"Loading the {bits}-bit model: {stage} ({fraction:.0%})")
        )
        client.loaded.connect(lambda info: self._on_loaded(client, bits, info))
        client.chunk.connect(lambda request_id, chunk: self._on_chunk(client, bits, request_id, chunk))
        client.loadFailed.connect(lambda kind, message: self._fail(client, bits, message))
        client.failed.connect(lambda request_id, kind, message: self._on_failed(client, bits, request_id, message))
        client.died.connect(lambda reason: self._fail(client, bits, f"The engine stopped: {reason}."))
        self.variantStarted.emit(bits)
        self.status.emit(f"Loading the {bits}-bit model…")
        client.load(self.source, bits, n_ctx=self.n_ctx, n_threads=self.n_threads)

    def _on_loaded(self, client: EngineClient, bits: int, info) -> None:
        if client is not self._client:
            return
        from tmac_core import SamplingParams

        self.infos[bits] = info
        self.loaded.emit(bits, info)
        self.status.emit(f"{bits}-bit: answering…")
        params = SamplingParams(
            temperature=0.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0, max_tokens=self.max_tokens, seed=0
        )
        self._request = client.generate([{"role": "user", "content": self.prompt}], params)

    def _on_chunk(self, client: EngineClient, bits: int, request_id: int, chunk) -> None:
        if client is not self._client or request_id != self._request:
            return
        if chunk.text:
            self.answers[bits] += chunk.text
            self.text.emit(bits, chunk.text)
        if chunk.finish_reason is not None:
            self.finals[bits] = chunk
            self.variantFinished.emit(bits, chunk)
            self._next()

    def _on_failed(self, client: EngineClient, bits: int, request_id: int, message: str) -> None:
        if client is self._client and request_id == self._request:
            self._fail(client, bits, message)

    def _fail(self, client: EngineClient, bits: int, message: str) -> None:
        if client is not self._client or not self.running:
            return
        self.running = False
        self._close_client()
        self.status.emit(f"{bits}-bit failed: {message}")
        self.failed.emit(bits, message)
        self.finished.emit(False)
