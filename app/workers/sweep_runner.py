"""SweepRunner: the "measure" run behind MeasureDialog, on its own engine process.

For each bit width it loads the model in a fresh EngineClient process, generates a few
warm-up tokens (page faults, caches and the prompt's KV entries are then out of the way),
and then, for each thread count, sets the threads and generates the same fixed prompt
greedily (temperature 0, `max_tokens` tokens). Each run's final Chunk gives decode tok/s
and the engine's CPU-seconds; app.power's PowerMeter gives joules where a sensor works.
When a bit width is done its record (app.perf.sweep) is saved as JSON. QtCore only.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal

from app import hardware
from app.perf.sweep import (
    SWEEP_PROMPT,
    SWEEP_TOKENS,
    SweepPoint,
    make_record,
    model_key_for,
    point_from_chunk,
    save_record,
)
from app.power.readers import PowerMeter, PowerReading
from app.workers.engine_client import EngineClient

WARMUP_TOKENS = 8
SWEEP_CONTEXT = 512


class SweepRunner(QObject):
    status = Signal(str)  # a sentence about what is happening
    pointMeasured = Signal(object)  # app.perf.sweep.SweepPoint
    recordSaved = Signal(int, object, str)  # bits, record dict, JSON path
    finished = Signal(bool)  # True: every run done; False: failed or cancelled
    failed = Signal(str)  # message for the user (then finished(False))

    def __init__(
        self,
        source: str,
        *,
        bits_list: list[int],
        threads: list[int],
        measurements_dir: Path,
        max_tokens: int = SWEEP_TOKENS,
        prompt: str = SWEEP_PROMPT,
        n_ctx: int = SWEEP_CONTEXT,
        cache_dir: Path | None = None,
        power_meter: PowerMeter | None = None,
        parent: QObject | None = None,
    ) -> None:
        super().__init__(parent)
        if not bits_list or not threads:
            raise ValueError("a sweep needs at least one bit width and one thread count")
        self.source, self.bits_list, self.threads = source, list(bits_list), list(threads)
        self.measurements_dir, self.max_tokens, self.prompt, self.n_ctx = measurements_dir, max_tokens, prompt, n_ctx
        self.power = power_meter if power_meter is not None else PowerMeter()
        self.points: list[SweepPoint] = []
        self.records: dict[int, dict] = {}
        self.running = False
        self._client = EngineClient(self, cache_dir=cache_dir)
        self._client.loaded.connect(self._on_loaded)
        self._client.loadProgress.connect(self._on_load_progress)
        self._client.chunk.connect(self._on_chunk)
        self._client.loadFailed.connect(lambda kind, message: self._fail(message))
        self._client.failed.connect(self._on_failed)
        self._client.died.connect(lambda reason: self._fail(f"The engine stopped: {reason}."))
        self._pending_bits: list[int] = []
        self._pending_threads: list[int] = []
        self._bits = 0
        self._threads = 0
        self._request: int | None = None
        self._warming_up = False
        self._power_start: PowerReading | None = None
        self._info = None

    # ---- control -----------------------------------------------------------------------------

    def start(self) -> None:
        if self.running:
            return
        self.running = True
        self.points, self.records = [], {}
        self._pending_bits = list(self.bits_list)
        self._next_bits()

    def cancel(self) -> None:
        if not self.running:
            return
        self.running = False
        self._request = None
        self._client.stop()
        self._client.shutdown()
        self.status.emit("Measurement cancelled.")
        self.finished.emit(False)

    def shutdown(self) -> None:
        """Stop the engine process whatever state the sweep is in (dialog closed)."""
        self.running = False
        self._request = None
        self._client.shutdown()

    # ---- the sequence ------------------------------------------------------------------------

    def _next_bits(self) -> None:
        if not self._pending_bits:
            self.running = False
            self._client.shutdown()
            self.status.emit("Done.")
            self.finished.emit(True)
            return
        self._bits = self._pending_bits.pop(0)
        self._pending_threads = list(self.threads)
        self.status.emit(f"Loading the {self._bits}-bit model…")
        self._client.load(self.source, self._bits, n_ctx=self.n_ctx, n_threads=max(self.threads))

    def _on_load_progress(self, fraction: float, stage: str) -> None:
        if self.running:
            self.status.emit(f"Loading the {self._bits}-bit model: {stage} ({fraction:.0%})")

    def _on_loaded(self, info) -> None:
        if not self.running:
            return
        self._info = info
        self._warming_up = True
        self.status.emit(f"{self._bits}-bit: warming up…")
        self._client.set_threads(max(self.threads))
        self._request = self._client.generate(self._messages(), self._params(WARMUP_TOKENS))

    def _next_run(self) -> None:
        if not self._pending_threads:
            self._save_record()
            self._next_bits()
            return
        self._threads = self._pending_threads.pop(0)
        self.status.emit(
            f"{self._bits}-bit: generating {self.max_tokens} tokens with {self._threads} "
            f"thread{'s' if self._threads > 1 else ''}…"
        )
        self._client.set_threads(self._threads)
        self._power_start = self.power.read()
        self._request = self._client.generate(self._messages(), self._params(self.max_tokens))

    def _on_chunk(self, request_id: int, chunk) -> None:
        if not self.running or request_id != self._request or chunk.finish_reason is None:
            return
        self._request = None
        if self._warming_up:
            self._warming_up = False
            self._next_run()
            return
        joules = self.power.joules_between(self._power_start, self.power.read())
        point = point_from_chunk(self._bits, chunk.threads or self._threads, chunk, joules)
        self.points.append(point)
        self.pointMeasured.emit(point)
        self._next_run()

    def _save_record(self) -> None:
        info = self._info
        record = make_record(
            model_key=model_key_for(self.source),
            model_name=getattr(info, "name", self.source),
            source=self.source,
            bits=self._bits,
            machine=hardware.machine_label(),
            cpu_model=hardware.cpu_model_name(),
            logical_cores=hardware.logical_cores(),
            tier=getattr(info, "tier", "?"),
            prompt=self.prompt,
            max_tokens=self.max_tokens,
            points=self.points,
            power_label=self.power.label,
            power_unavailable_reason=self.power.unavailable_reason,
        )
        try:
            path = save_record(self.measurements_dir, record)
        except OSError as error:
            self.status.emit(f"Could not save the results: {error}")
            return
        self.records[self._bits] = record
        self.recordSaved.emit(self._bits, record, str(path))

    # ---- failures ----------------------------------------------------------------------------

    def _on_failed(self, request_id: int, kind: str, message: str) -> None:
        if self.running and request_id == self._request:
            self._fail(message)

    def _fail(self, message: str) -> None:
        if not self.running:
            return
        self.running = False
        self._request = None
        self._client.shutdown()
        self.status.emit(f"Measurement failed: {message}")
        self.failed.emit(message)
        self.finished.emit(False)

    # ---- helpers -----------------------------------------------------------------------------

    def _messages(self) -> list[dict]:
        return [{"role": "user", "content": self.prompt}]

    def _params(self, max_tokens: int):
        from tmac_core import SamplingParams

        return SamplingParams(
            temperature=0.0, top_k=0, top_p=1.0, min_p=0.0, repeat_penalty=1.0, max_tokens=max_tokens, seed=0
        )
