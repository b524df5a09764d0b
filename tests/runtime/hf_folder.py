"""Helpers for the Hugging Face folder tests: safetensors bytes written by hand (the format's
spec, not our reader's code), copies of the tiny checkpoints in tests/data/hf, and the one
call that reads everything of a folder the runtime reads. No torch, no network."""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np

from tmac_core.loading.dequant import dequantize_tensor
from tmac_core.loading.hf import HFModel
from tmac_core.tokenizer.hf_files import tokenizer_from_folder

DATA = Path(__file__).resolve().parents[1] / "data" / "hf"

# numpy dtype of each safetensors dtype the helpers write
NUMPY_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "I32": "<i4", "I64": "<i8", "U8": "u1", "I8": "i1"}


def st_bytes(tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None, pad: int = 0) -> bytes:
    """A safetensors file: header length, JSON header (padded with `pad` spaces), data in order.

    BF16 is written as uint16 arrays named with a "bf16:" prefix dropped from the name."""
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    chunks, offset = [], 0
    for name, array in tensors.items():
        dtype = (
            "BF16"
            if name.startswith("bf16:")
            else next(k for k, v in NUMPY_DTYPES.items() if np.dtype(v) == array.dtype)
        )
        raw = np.ascontiguousarray(array).tobytes()
        header[name.removeprefix("bf16:")] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode() + b" " * pad
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def st_from_header(header: Any, data: bytes, raw_header: bytes | None = None) -> bytes:
    """A file from an explicit header (any JSON value) or raw header bytes, and data bytes."""
    text = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def copy_model(tmp_path: Path, name: str) -> Path:
    """A private copy of tests/data/hf/<name> (without the reference outputs)."""
    dest = tmp_path / name
    shutil.copytree(DATA / name, dest, ignore=shutil.ignore_patterns("reference.npz"))
    return dest


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value))


def read_everything(folder: Path) -> None:
    """Everything the engine reads of a folder before building the runtime: the config, every
    safetensors header, the tokenizer files, and every tensor's values as the loader gets them."""
    with HFModel.open(folder) as model:
        tokenizer_from_folder(folder, model.config.vocab_size)
        for name in model.tensors:
            dequantize_tensor(model, name)  # type: ignore[arg-type]
