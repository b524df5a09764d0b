"""`python -m tmac_core serve default` answers the openai client with a streamed completion."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.server.conftest import MODEL_ID

pytestmark = pytest.mark.engine

START_TIMEOUT_S = 120  # the first load repacks the model


def test_serve_default_streams_to_the_openai_client(repacked_dir):
    openai = pytest.importorskip("openai")
    command = [sys.executable, "-m", "tmac_core", "serve", "default", "--port", "0", "--ctx", "512"]
    process = subprocess.Popen(
        [*command, "--cache-dir", str(repacked_dir), "--api-key", "k3y", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline, line = time.monotonic() + START_TIMEOUT_S, ""
        while "serving" not in line and time.monotonic() < deadline and process.poll() is None:
            line = process.stderr.readline()
        assert re.fullmatch(rf"serving {re.escape(MODEL_ID)} at http://127\.0\.0\.1:\d+/v1 \(Ctrl\+C stops\)\n", line)
        record = json.loads(process.stdout.readline())  # --json: one record, written before the line above
        assert set(record) == {"url", "model", "n_ctx", "tier"} and record["model"] == MODEL_ID
        url = record["url"]
        assert url in line
        with openai.OpenAI(base_url=url, api_key="k3y", max_retries=0, timeout=60) as client:
            stream = client.chat.completions.create(
                model=MODEL_ID,
                messages=[{"role": "user", "content": "What is the capital of France?"}],
                temperature=0,
                max_tokens=16,
                stream=True,
            )
            assert "Paris" in "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            with pytest.raises(openai.AuthenticationError):
                openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()
        process.send_signal(signal.SIGINT)  # Ctrl+C: Uvicorn shuts down, the command returns
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stderr.close()
        process.stdout.close()


def test_parallel_above_one_is_refused_clearly():
    done = subprocess.run(
        [sys.executable, "-m", "tmac_core", "serve", "default", "--parallel", "2"], capture_output=True, text=True
    )
    assert done.returncode == 2 and "--parallel" in done.stderr and "Traceback" not in done.stderr
