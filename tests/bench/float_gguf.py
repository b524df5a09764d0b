"""An F16 GGUF from a quantized one, with the `gguf` package: every tensor dequantized
(llama.cpp's own dequantization), matrices stored as F16, vectors as F32, metadata
copied. The benchmark's llama.cpp-made K-quant files of SmolLM2 are quantized from
this file: the float model SmolLM2's embedded Q4_1 was made from is not reachable
offline, so its dequantization stands in for it.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter
from gguf.quants import dequantize

MOSTLY_F16 = 1  # llama_ftype LLAMA_FTYPE_MOSTLY_F16


def write_f16(src: str, dst: str) -> int:
    """Write `dst` (atomically) from `src`; returns its size in bytes."""
    reader = GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    tmp = f"{dst}.tmp{os.getpid()}"
    writer = GGUFWriter(tmp, arch=arch)
    for field in reader.fields.values():
        if field.name in ("general.architecture", "general.alignment") or field.name.startswith("GGUF."):
            continue
        if field.name == "general.file_type":
            writer.add_file_type(MOSTLY_F16)
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), vtype, sub_type=sub)
    for t in reader.tensors:
        w = dequantize(t.data, t.tensor_type)  # (rows, k) in numpy order
        writer.add_tensor(t.name, w.astype(np.float16 if w.ndim == 2 else np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, dst)
    return os.path.getsize(dst)


if __name__ == "__main__":
    print(write_f16(sys.argv[1], sys.argv[2]))
