"""The thread sweep's arithmetic: which thread counts to try, the best trade-off, the saved record.

A sweep generates the same short prompt greedily at each thread count (and at 2 and 4 bits)
and keeps, per run, decode tokens/s, CPU-seconds per token and, where a power sensor works,
joules per token. The best trade-off rule (`best_tradeoff`):

    among the runs within SPEED_FRACTION (90 %) of the fastest decode speed, take the one with
    the lowest cost per token, where cost is joules per token if every such run has an energy
    reading and CPU-seconds per token otherwise; on a tie, fewer threads.

CPU-seconds per token is what the threads burn while decoding, so it stands in for energy when
no sensor is readable. It is the decode CPU (the run's CPU after its first token, Chunk.prompt_cpu_s
splits it there) over the tokens after the first, as the perf panel's figure
(app.chat.records.AnswerStats.decode_cpu_s_per_token): all the CPU over the generated tokens
counted reading the prompt as decoding. Energy has no such split (the sensor is read around the
whole run), so joules per token still spans the prompt. Records are JSON, one file per (model, bits, machine) under
`<data_dir>/measurements/`. Pure Python: must not import PySide6.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from app.paths import atomic_write_bytes

RECORD_VERSION = 1
SPEED_FRACTION = 0.9
MAX_SWEEP_POINTS = 12
MEASUREMENTS_DIR_NAME = "measurements"
SWEEP_PROMPT = "Count from 1 to 100, separated by commas."
SWEEP_TOKENS = 48


@dataclass(frozen=True)
class SweepPoint:
    bits: int
    threads: int
    decode_tok_s: float
    prompt_tok_s: float
    generated_tokens: int
    cpu_s: float  # CPU seconds of the engine process over the run (all threads)
    joules: float | None  # energy over the run, None without a sensor
    # of cpu_s, up to the first generated token (reading the prompt); None in records written before
    # the engine reported it
    prompt_cpu_s: float | None = None

    @property
    def decode_cpu_s(self) -> float | None:
        """CPU seconds after the first generated token; None when the split is not known."""
        return None if self.prompt_cpu_s is None else max(0.0, self.cpu_s - self.prompt_cpu_s)

    @property
    def cpu_s_per_token(self) -> float:
        """Decode CPU-seconds per token after the first (the tokens decode_tok_s counts); an older
        record without the split: all its CPU over the generated tokens."""
        decode = self.decode_cpu_s
        if decode is None:
            return self.cpu_s / self.generated_tokens if self.generated_tokens else math.inf
        return decode / (self.generated_tokens - 1) if self.generated_tokens > 1 else math.inf

    @property
    def joules_per_token(self) -> float | None:
        if self.joules is None or not self.generated_tokens:
            return None
        return self.joules / self.generated_tokens


@dataclass(frozen=True)
class Tradeoff:
    best: SweepPoint
    fastest: SweepPoint
    metric: str  # "joules_per_token" | "cpu_s_per_token"
    rule: str  # the rule in words, for the chart's legend and the record


def point_from_chunk(bits: int, threads: int, chunk: Any, joules: float | None = None) -> SweepPoint:
    """A SweepPoint from a run's final tmac_core.types.Chunk (the one with finish_reason set)."""
    return SweepPoint(
        bits=bits,
        threads=threads,
        decode_tok_s=float(chunk.decode_tok_s),
        prompt_tok_s=float(chunk.prompt_tok_s),
        generated_tokens=int(chunk.generated_tokens),
        cpu_s=float(chunk.cpu_s),
        joules=None if joules is None else float(joules),
        prompt_cpu_s=float(chunk.prompt_cpu_s),
    )


def thread_counts(max_threads: int, limit: int = MAX_SWEEP_POINTS) -> list[int]:
    """1..max_threads when that is at most `limit` runs, else `limit` counts spread evenly from 1 to
    max_threads (both included), so a 64-core machine is swept in a dozen runs, not 64."""
    if max_threads < 1:
        raise ValueError("max_threads must be at least 1")
    if max_threads <= limit:
        return list(range(1, max_threads + 1))
    step = (max_threads - 1) / (limit - 1)
    return sorted({1 + round(i * step) for i in range(limit)})


def best_tradeoff(points: Iterable[SweepPoint], speed_fraction: float = SPEED_FRACTION) -> Tradeoff | None:
    """Apply the module's rule to the runs of one bit width; None when there is no usable run."""
    usable = [p for p in points if p.generated_tokens > 0 and p.decode_tok_s > 0]
    if not usable:
        return None
    if len({p.bits for p in usable}) > 1:
        raise ValueError("best_tradeoff compares runs of one bit width at a time")
    fastest = max(usable, key=lambda p: (p.decode_tok_s, -p.threads))
    candidates = [p for p in usable if p.decode_tok_s >= speed_fraction * fastest.decode_tok_s]
    use_joules = all(p.joules_per_token is not None for p in candidates)
    metric = "joules_per_token" if use_joules else "cpu_s_per_token"

    def cost(p: SweepPoint) -> float:
        joules = p.joules_per_token
        return joules if use_joules and joules is not None else p.cpu_s_per_token

    best = min(candidates, key=lambda p: (cost(p), p.threads))
    unit = "joules" if metric == "joules_per_token" else "CPU-seconds"
    rule = f"fewest {unit} per token among thread counts within {speed_fraction:.0%} of the fastest decode speed"
    return Tradeoff(best=best, fastest=fastest, metric=metric, rule=rule)


def model_key_for(source: str) -> str:
    """What a record is filed under: "default" for the embedded model, else the file name."""
    return "default" if source == "default" else Path(source).name


def _slug(text: str, limit: int = 60) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-") or "x"
    return f"{cleaned[:limit]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def record_path(folder: Path, model_key: str, bits: int, machine: str) -> Path:
    """One file per (model, bits, machine); names stay filesystem-safe whatever the CPU string is."""
    return Path(folder) / f"{_slug(model_key)}--{bits}bit--{_slug(machine)}.json"


def make_record(
    *,
    model_key: str,
    model_name: str,
    source: str,
    bits: int,
    machine: str,
    cpu_model: str,
    logical_cores: int,
    tier: str,
    prompt: str,
    max_tokens: int,
    points: list[SweepPoint],
    power_label: str,
    power_unavailable_reason: str | None,
    created_at: float | None = None,
) -> dict[str, Any]:
    """The JSON-ready record of one bit width's sweep, with the chosen trade-off and its rule."""
    own = sorted((p for p in points if p.bits == bits), key=lambda p: p.threads)
    choice = best_tradeoff(own)
    return {
        "record_version": RECORD_VERSION,
        "created_at": time.time() if created_at is None else created_at,
        "model_key": model_key,
        "model_name": model_name,
        "source": source,
        "bits": bits,
        "machine": machine,
        "cpu_model": cpu_model,
        "logical_cores": logical_cores,
        "tier": tier,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "power_sensor": power_label,
        "power_unavailable_reason": power_unavailable_reason,
        "points": [
            dict(asdict(p), cpu_s_per_token=p.cpu_s_per_token, joules_per_token=p.joules_per_token) for p in own
        ],
        "best": None
        if choice is None
        else {
            "threads": choice.best.threads,
            "decode_tok_s": choice.best.decode_tok_s,
            "metric": choice.metric,
            "rule": choice.rule,
            "fastest_threads": choice.fastest.threads,
            "fastest_decode_tok_s": choice.fastest.decode_tok_s,
        },
    }


def save_record(folder: Path, record: dict[str, Any]) -> Path:
    """Write atomically to record_path(...) (replacing an older sweep of the same model/bits/machine)."""
    path = record_path(folder, record["model_key"], record["bits"], record["machine"])
    atomic_write_bytes(path, json.dumps(record, indent=2, sort_keys=True).encode("utf-8") + b"\n")
    return path


def points_from_record(record: dict[str, Any]) -> list[SweepPoint]:
    names = {"bits", "threads", "decode_tok_s", "prompt_tok_s", "generated_tokens", "cpu_s", "joules", "prompt_cpu_s"}
    return [SweepPoint(**{k: v for k, v in p.items() if k in names}) for p in record["points"]]


def load_records(folder: Path, model_key: str | None = None) -> list[dict[str, Any]]:
    """Every readable record (optionally of one model), newest first. Unreadable files are skipped."""
    folder = Path(folder)
    found: list[dict[str, Any]] = []
    if not folder.is_dir():
        return found
    for path in folder.glob("*.json"):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            points_from_record(record)
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if record.get("record_version") != RECORD_VERSION:
            continue
        if model_key is None or record.get("model_key") == model_key:
            found.append(record)
    return sorted(found, key=lambda r: r.get("created_at", 0), reverse=True)
