"""`python -m app --self-test` (and the installed app's `tmac-chat --self-test`): the whole
app, end to end, in one run, with a JSON verdict.

1. The installation: frozen or not, where the bundle and the runtime were loaded from, the
   machine, the embedded model's file.
2. Every kernel tier this CPU can run against the generic tier on random data: GEMM tables
   and outputs bit for bit, attention and SwiGLU within the tests' tolerances, and the generic
   GEMM against a float64 reference (so a bundle whose kernels are broken for every tier fails).
3. The power reader, read only: which sensor the app would use and one short reading, or the
   reason there is none (no sensor is not a failure; an exception is).
4. Opens the real MainWindow (offscreen when there is no display), starts the engine process
   on the built-in model, types a message into the composer and presses Send, waits for the
   streamed answer, checks it reached the screen and the chat database.

Prints one JSON line, {"ok": true, ...} and exit 0, or {"ok": false, "reason": ..., ...} and
exit 1; `--report FILE` writes the same JSON to a file (a windowed Windows build has no
stdout). Chats and settings go to a temporary folder, so the user's history is never touched;
the repacked-model cache is the normal one, so a second run is quick.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from app.application import make_application, missing_display
from app.paths import HOME_ENV_VAR, app_paths

PROMPT = "Say hello in one short sentence."
MAX_TOKENS = 32
KERNEL_BITS = (1, 2, 3, 4, "ternary")
MAX_NMSE = 1e-3  # generic GEMM against float64, as tests/kernels/test_kernels_vs_generic.py
POWER_SAMPLE_S = 0.5


class SelfTest:
    def __init__(self, window, app, timeout_s: float) -> None:
        from PySide6.QtCore import QTimer

        self.window, self.app = window, app
        self.exit_code: int | None = None
        self.result: dict = {"ok": False, "reason": "the window closed before the answer"}
        self.last_chunk = None
        self.timer = QTimer(singleShot=True, interval=int(timeout_s * 1000))
        self.timer.timeout.connect(
            lambda: self.fail(f"no answer within {timeout_s:.0f} s (engine state: {window.client.state.value})")
        )
        window.client.loaded.connect(self.on_loaded)
        window.client.loadFailed.connect(lambda kind, text: self.fail(f"load failed: {kind}: {text}"))
        window.client.failed.connect(self.on_failed)
        window.client.died.connect(lambda reason: self.fail(f"engine process died: {reason}"))
        window.session.answerChunk.connect(self.on_chunk)
        window.session.answerFinished.connect(self.on_finished)

    def start(self) -> None:
        self.timer.start()
        self.window.settings_store.update(temperature=0.0, max_tokens=MAX_TOKENS, seed=0)
        self.window.start_engine()

    def on_loaded(self, _info) -> None:
        self.window.composer.prompt.setPlainText(PROMPT)
        self.window.composer.send_button.click()
        if not self.window.session.busy:
            self.fail("the composer did not send the message")

    def on_failed(self, request_id: int, kind: str, text: str) -> None:
        self.fail(f"generate failed: {kind}: {text}")

    def on_chunk(self, chunk) -> None:
        self.last_chunk = chunk

    def on_finished(self, message) -> None:
        window, chunk = self.window, self.last_chunk
        shown = window.chat_view.message_widget(message.id)
        stored = window.store.get_message(message.id)
        if chunk is None or chunk.finish_reason not in ("stop", "length"):
            return self.fail(f"the answer ended with {getattr(chunk, 'finish_reason', None)!r}")
        if not stored.content.strip():
            return self.fail("the answer is empty")
        if shown is None or shown.text != stored.content:
            return self.fail("the answer on screen differs from the stored one")
        info = window.client.info
        self.report(
            {
                "ok": True,
                "tokens": chunk.generated_tokens,
                "decode_tok_s": round(chunk.decode_tok_s, 2),
                "prompt_tok_s": round(chunk.prompt_tok_s, 1),
                "ttft_s": round(chunk.ttft_s, 3),
                "tier": info.tier,
                "threads": chunk.threads,
                "bits": info.bits,  # None: as in the file
                "bits_per_weight": round(info.bits_per_weight, 2),
                "answer": stored.content,
                "model": info.name,
                "load_s": round(info.load_s, 2),
                "finish_reason": chunk.finish_reason,
            },
            0,
        )

    def fail(self, reason: str) -> None:
        self.report({"ok": False, "reason": reason}, 1)

    def report(self, result: dict, code: int) -> None:
        if self.exit_code is not None:
            return
        self.exit_code = code
        self.result = result
        self.timer.stop()
        self.window.close()
        self.app.exit(code)


def installation_facts() -> dict[str, Any]:
    """What is running: a PyInstaller bundle or a checkout, and which machine."""
    import tmac_core

    facts: dict[str, Any] = {
        "frozen": bool(getattr(sys, "frozen", False)),
        "bundle_dir": getattr(sys, "_MEIPASS", None),
        "executable": sys.executable,
        "runtime_dir": str(Path(tmac_core.__file__).resolve().parent),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
    }
    from app.hardware import embedded_model_path

    model = embedded_model_path()
    facts["embedded_model"] = str(model) if model else None
    from app.platform_checks import probe_machine, problems_for

    machine = probe_machine()  # the real OS calls behind the start-up dialog (IsWow64Process2, sysctl)
    facts["process_arch"] = machine.process_arch
    facts["emulated_on_arm64"] = machine.emulated_on_arm64
    facts["platform_problems"] = [p.title for p in problems_for(machine)]
    return facts


def check_kernel_tiers(seed: int = 0) -> dict[str, Any]:
    """Every tier this CPU can run against the generic tier, on random data.

    {"ok", "tiers", "active", "results": {tier: "ok" or what differed}, "seconds"}."""
    import numpy as np

    import tmac_core.kernels as K

    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    tiers = [str(t) for t in K.available_tiers()]
    problems: dict[str, list[str]] = {tier: [] for tier in tiers}

    def gemm(packed: Any, x: Any, tier: str) -> tuple[Any, Any]:
        tables = K.activation_tables(x, k_pad=packed.k_pad, act_group=packed.act_group, tier=tier)
        return tables, K.gemm(packed, tables, tier=tier)

    m, k, group_size = 96, 512, 64
    x = rng.standard_normal((3, k)).astype(np.float32)
    x[:, rng.integers(0, k, 4)] *= 30.0  # activation outliers, as real models have
    for bits in KERNEL_BITS:
        ternary = bits == "ternary"
        b = 2 if ternary else int(bits)
        codes = rng.integers(0, 3 if ternary else 1 << b, (m, k), dtype=np.uint8)
        scales = rng.uniform(0.002, 0.05, (m, k // group_size)).astype(np.float32)
        zeros = np.ones_like(scales) if ternary else rng.uniform(0, (1 << b) - 1, scales.shape).astype(np.float32)
        packed = K.pack(codes, scales, zeros, bits=b, group_size=group_size)
        ref_tables, ref = gemm(packed, x, "generic")
        weights = (codes.astype(np.float64) - np.repeat(zeros, group_size, 1)) * np.repeat(scales, group_size, 1)
        want = x.astype(np.float64) @ weights.T
        error = float(((want - ref) ** 2).sum() / max(float((want**2).sum()), 1e-30))
        if not np.isfinite(ref).all() or error > MAX_NMSE:
            problems["generic"].append(f"gemm {bits}-bit: NMSE {error:.3g} against float64")
        for tier in (t for t in tiers if t != "generic"):
            tables, out = gemm(packed, x, tier)
            same_tables = all(
                np.array_equal(getattr(tables, part), getattr(ref_tables, part))
                for part in ("entries", "scales", "sums")
            )
            if not same_tables or not np.array_equal(out, ref):
                problems[tier].append(f"gemm {bits}-bit differs from generic")
    gate = (rng.standard_normal(4099) * 4).astype(np.float32)
    up = rng.standard_normal(4099).astype(np.float32)
    want_swiglu = K.swiglu(gate, up, tier="generic").astype(np.float64)
    block = int(K.ATTN_BLOCK)
    pos, n_kv, head_dim = 3 * block + 9, 3, 64
    q = (rng.standard_normal((5, 9, head_dim)) * 2).astype(np.float32)
    k_cache = K.to_fp16((rng.standard_normal((n_kv, pos + 8, head_dim)) * 3).astype(np.float32))
    v_cache = K.to_fp16(rng.standard_normal((n_kv, pos + 8, head_dim)).astype(np.float32))
    want_attention = K.attention(q, k_cache, v_cache, pos, n_kv, 0.125, tier="generic")
    for tier in tiers:
        if tier == "generic":
            continue
        got = K.swiglu(gate, up, tier=tier).astype(np.float64)
        relative = np.abs(got - want_swiglu) / np.maximum(np.abs(want_swiglu), 1e-30)
        if not (relative <= 5e-7).all():
            problems[tier].append(f"swiglu differs from generic by {float(relative.max()):.3g} (relative)")
        attention = K.attention(q, k_cache, v_cache, pos, n_kv, 0.125, tier=tier)
        limit = 1e-5 * max(1.0, float(np.abs(want_attention).max()))
        if not np.isfinite(attention).all() or float(np.abs(attention - want_attention).max()) > limit:
            problems[tier].append("attention differs from generic")
    return {
        "ok": not any(problems.values()),
        "tiers": tiers,
        "active": str(K.active_tier()),
        "results": {tier: "; ".join(found) or "ok" for tier, found in problems.items()},
        "seconds": round(time.perf_counter() - start, 3),
    }


def probe_power() -> dict[str, Any]:
    """The power reader the performance panel would use, read once over a short interval."""
    from app.power.readers import PowerMeter

    meter = PowerMeter()
    found: dict[str, Any] = {
        "sensor": getattr(meter.sensor, "name", None),
        "source": meter.label,
        "unavailable_reason": meter.unavailable_reason,
    }
    if meter.sensor is not None:
        watts, reason = meter.measure_watts(POWER_SAMPLE_S)
        found["watts"] = None if watts is None else round(watts, 2)
        if reason:
            found["reading_problem"] = reason
    return found


def _probe(name: str, action: Any, failures: list[str]) -> dict[str, Any]:
    """Runs one check; an exception is that check's failure, said in the report, not a crash."""
    try:
        result = dict(action())
    except Exception as error:  # noqa: BLE001 (every failure becomes a line of the JSON report)
        failures.append(f"{name}: {type(error).__name__}: {error}")
        return {"ok": False, "error": f"{type(error).__name__}: {error}"}
    if result.get("ok") is False:
        failures.append(f"{name}: " + "; ".join(f"{t}: {r}" for t, r in result.get("results", {}).items() if r != "ok"))
    return result


def run_self_test(timeout_s: float, report_path: str | os.PathLike[str] | None = None) -> int:
    start = time.perf_counter()
    if missing_display():
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("TMAC_CACHE_DIR", str(app_paths().engine_cache_dir))  # the user's, before the swap
    failures: list[str] = []
    checks = {
        "installation": _probe("installation", installation_facts, failures),
        "kernels": _probe("kernels", check_kernel_tiers, failures),
        "power": _probe("power", probe_power, failures),
    }
    with tempfile.TemporaryDirectory(prefix="tmac-self-test-") as home:
        os.environ[HOME_ENV_VAR] = home
        try:
            chat = _run_in(app_paths().ensure(), timeout_s)
        except Exception as error:  # noqa: BLE001 (a crash while building the window is a failed self-test, said as JSON)
            chat = {"ok": False, "reason": f"{type(error).__name__}: {error}"}
    if not chat.get("ok"):
        failures.insert(0, str(chat.get("reason", "the chat check failed")))
    chat.pop("reason", None)
    report = {
        "ok": not failures,
        **({"reason": "; ".join(failures)} if failures else {}),
        **{key: value for key, value in chat.items() if key != "ok"},
        **checks,
        "self_test_s": round(time.perf_counter() - start, 2),
    }
    text = json.dumps(report, ensure_ascii=False)
    print(text, flush=True)
    if report_path:
        Path(report_path).write_text(text + "\n", encoding="utf-8")
    return 0 if report["ok"] else 1


def _run_in(paths, timeout_s: float) -> dict:
    from app.chat.store import ChatStore
    from app.settings import AppSettings
    from app.settings_store import SettingsStore
    from app.ui.main_window import MainWindow
    from app.ui.theme import apply_theme

    app = make_application()
    apply_theme(app, "system")
    with ChatStore(paths.chat_db_file) as store:
        window = MainWindow(SettingsStore(AppSettings(), paths.settings_file), paths, store)
        window.show()
        test = SelfTest(window, app, timeout_s)
        test.start()
        app.exec()
    return {**test.result, "qt_platform": app.platformName()}
