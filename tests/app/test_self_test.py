"""`python -m app --self-test` in a fresh process: exits 0 and prints one JSON report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.app.live_engine import engine_cache_dir  # noqa: F401

pytestmark = pytest.mark.engine

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_self_test(env_changes: dict, timeout_s: int = 240) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, **env_changes}
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    env.pop("QT_QPA_PLATFORM", None)  # the self-test must pick offscreen by itself
    done = subprocess.run(
        [sys.executable, "-m", "app", "--self-test", "--timeout", "180"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, (done.stdout, done.stderr[-2000:])
    return done, json.loads(lines[0])


def test_self_test_answers_and_reports(engine_cache_dir, tmp_path):  # noqa: F811 (fixture imported above)
    home = tmp_path / "home"
    done, report = run_self_test({"TMAC_CACHE_DIR": str(engine_cache_dir), "TMAC_CHAT_HOME": str(home)})
    assert done.returncode == 0, (report, done.stderr[-2000:])
    assert report["ok"] is True
    assert set(report) >= {
        "ok",
        "tokens",
        "decode_tok_s",
        "prompt_tok_s",
        "ttft_s",
        "tier",
        "threads",
        "bits",
        "answer",
    }
    assert report["tokens"] > 0 and report["answer"].strip()
    assert report["decode_tok_s"] > 0 and report["prompt_tok_s"] > 0 and 0 < report["ttft_s"] < 60
    assert report["bits"] is None and report["tier"] in ("generic", "avx2", "avx512", "neon") and report["threads"] >= 1
    assert not home.exists(), "the self-test keeps its chats in a temporary folder, not the user's"


def test_self_test_failure_is_reported_as_json_and_a_nonzero_exit(tmp_path):
    # A kernel tier this machine cannot have makes the engine refuse to load: the report must say so.
    done, report = run_self_test(
        {"TMAC_CACHE_DIR": str(tmp_path / "cache"), "TMAC_KERNELS": "no-such-tier"}, timeout_s=120
    )
    assert done.returncode != 0
    assert report["ok"] is False and report["reason"]
