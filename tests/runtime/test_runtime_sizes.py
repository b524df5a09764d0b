"""LlamaRuntime sizes every buffer in 64-bit Python integers and checks each against what
its C loops can index, and checks the RoPE table against n_ctx x head_dim/2 before use:
a model (or a cache file) whose sizes would overflow is refused with a typed error,
never run into a crash. The runtime is built in a child process, so a crash fails
the test instead of killing pytest."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.runtime.model_mutations import write_tiny_synth

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

WORKER = textwrap.dedent(
    """
    import dataclasses, json, sys
    import numpy as np
    from tmac_core.config import config_from_gguf
    from tmac_core.errors import TmacError
    from tmac_core.loading.gguf import GGUFFile
    from tmac_core.models import loader

    cases = json.loads(sys.argv[2])
    with GGUFFile.open(sys.argv[1]) as f:
        cfg = config_from_gguf(f)
        weights = loader.load_weights(f, cfg, 4)
    for case in cases:
        w = dict(weights)
        if "inv_freq" in case:
            w["rope.inv_freq"] = np.asarray(weights["rope.inv_freq"])[: case["inv_freq"]]
        if "nan_freq" in case:
            w["rope.inv_freq"] = np.full_like(weights["rope.inv_freq"], np.nan)
        c = dataclasses.replace(cfg, **case.get("cfg", {}))
        try:
            rt = loader.build_runtime(c, w, case.get("n_ctx", 64), max_batch=case.get("max_batch", 32))
            last = case.get("n_ctx", 64) - 1
            rt.forward([1], last)  # the last RoPE row
            result = "ok"
        except (TmacError, ValueError) as error:
            result = type(error).__name__ + ": " + str(error)
        print(json.dumps(result), flush=True)
    """
)

CASES = [
    ({"inv_freq": 2, "n_ctx": 4096}, "ModelLoadError: rope.inv_freq"),  # a table narrower than head_dim/2
    ({"inv_freq": 0}, "ModelLoadError: rope.inv_freq"),
    ({"nan_freq": True}, "ModelLoadError: rope.inv_freq"),
    ({"cfg": {"vocab_size": 1 << 24}, "max_batch": 4096}, "UnsupportedModelError: the logits"),
    ({"cfg": {"hidden_dim": 1 << 24}, "max_batch": 256}, "UnsupportedModelError: the feed-forward"),
    ({"cfg": {"n_layers": 1 << 24}, "n_ctx": 1 << 24}, "UnsupportedModelError: the KV cache"),
    ({"cfg": {"head_dim": 1 << 24}, "n_ctx": 1 << 10}, "UnsupportedModelError: the RoPE table"),
    ({"cfg": {"dim": 1 << 31}}, "UnsupportedModelError: dim"),
    ({"cfg": {"n_kv_heads": 3}}, "UnsupportedModelError: 4 heads over 3"),
    ({"n_ctx": (1 << 24) + 1}, "ValueError: n_ctx"),
    ({"n_ctx": 1 << 40}, "ValueError: n_ctx"),
    ({"max_batch": 0}, "ValueError: max_batch"),
    ({}, "ok"),
]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("sizes") / "tiny.gguf"
    write_tiny_synth(path, n_ctx_train=4096)
    return path


def test_overflowing_sizes_and_a_short_rope_table_are_typed_errors(model):
    proc = subprocess.run(
        [sys.executable, "-c", WORKER, str(model), json.dumps([case for case, _ in CASES])],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0, f"crashed after {len(results)} cases: {proc.stderr[-2000:]}"
    for (case, expected), result in zip(CASES, results, strict=True):
        assert result.startswith(expected), (case, result)
