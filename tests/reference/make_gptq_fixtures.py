"""Writes tests/data/gptq/*.npz: tiny GPTQ layers packed and dequantized by GPTQModel itself.

Run with an interpreter that has torch, safetensors and gptqmodel (not the project's .venv):
    pip install torch safetensors transformers && pip install --no-deps gptqmodel==7.7.0
    (+ its light imports: pypcre logbar accelerate threadpoolctl device-smi tokenicer defuser pillow)
    python tests/reference/make_gptq_fixtures.py
(Run with torch 2.13.0+cpu, transformers 5.25.0, safetensors 0.8.0, GPTQModel 7.7.0; the output
is byte-identical from run to run.) The tests read the .npz files with numpy only, so CI needs
none of this.

Each variant (bits 2/3/4 x group 32/64/128/per-channel x sym/asym x v1/v2 x act-order on/off)
starts from random codes, zero points, fp16 scales and (for act-order) a random channel order;
the packing, the v2 -> v1 zero conversion and the dequantization are GPTQModel's own code:
  qweight, qzeros  gptqmodel.utils.model_dequant.pack_cols (qweight: packed along K)
  v1 qzeros        gptqmodel.utils.model.convert_gptq_v2_to_v1_format_module (what its save writes)
  reference        gptqmodel.utils.model_dequant.convert_gptq_file on a safetensors file, float32
The `v1_underflow` variants hold zero points of 0 in v1, which underflow when written; their
reference is GPTQModel's module loader instead (convert_gptq_v1_to_v2_format_module, then
TorchLinear.dequantize_weight with float32 scales), since its file dequantizer reads the
underflowed fields differently (see tmac_core/loading/gptq.py).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from gptqmodel.nn_modules.qlinear.torch import TorchLinear
from gptqmodel.quantization import QuantizeConfig
from gptqmodel.utils.model import convert_gptq_v1_to_v2_format_module, convert_gptq_v2_to_v1_format_module
from gptqmodel.utils.model_dequant import convert_gptq_file, pack_cols
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parents[1] / "data" / "gptq"
N = 32  # out_features: 3-bit qzeros need a multiple of 32
GROUPS = (32, 64, 128, -1)


def variant_name(bits: int, group: int, sym: bool, fmt: str, act: bool) -> str:
    g = "pc" if group == -1 else f"g{group}"
    return f"w{bits}{g}_{'sym' if sym else 'asym'}_{'v2' if fmt == 'gptq_v2' else 'v1'}{'_act' if act else ''}"


def _module(bits: int, group: int, sym: bool, act: bool, k: int, n: int = N) -> TorchLinear:
    return TorchLinear(bits=bits, group_size=group, sym=sym, desc_act=act, in_features=k, out_features=n, bias=False)


def random_layer(
    rng: np.random.Generator,
    bits: int,
    group: int,
    sym: bool,
    fmt: str,
    act: bool,
    k: int,
    n: int,
    *,
    scale_range: tuple[float, float] = (2e-3, 5e-2),
    underflow: bool = False,
) -> dict[str, torch.Tensor]:
    """qweight, qzeros, scales, g_idx of a random (n out, k in) layer, packed by GPTQModel."""
    gs = k if group == -1 else group
    n_groups = k // gs
    maxq = 2**bits - 1
    codes = rng.integers(0, maxq + 1, size=(k, n))
    if sym:
        zeros = np.full((n_groups, n), 2 ** (bits - 1))
    else:
        # v1 cannot store a zero point of 0 (it is written as -1); only the underflow variants have them
        low = 0 if (fmt == "gptq_v2" or underflow) else 1
        zeros = rng.integers(low, maxq + 1, size=(n_groups, n))
        if underflow:
            zeros[:, ::5] = 0
    scales = rng.uniform(*scale_range, size=(n_groups, n)).astype(np.float16)
    if act:
        order = rng.permutation(k)
        g_idx = np.empty(k, dtype=np.int32)
        g_idx[order] = np.arange(k) // gs
    else:
        g_idx = (np.arange(k) // gs).astype(np.int32)

    qweight = pack_cols(torch.from_numpy(codes.T.copy()), bits, pack_dtype=torch.int32).T.contiguous()
    qzeros = pack_cols(torch.from_numpy(zeros), bits, pack_dtype=torch.int32)
    if fmt == "gptq":
        module = _module(bits, group, sym, act, k, n)
        module.qzeros = qzeros.clone()
        convert_gptq_v2_to_v1_format_module(module, QuantizeConfig(bits=bits, group_size=group))
        qzeros = module.qzeros.clone()
    return {"qweight": qweight, "qzeros": qzeros, "scales": torch.from_numpy(scales), "g_idx": torch.from_numpy(g_idx)}


def make_variant(seed: int, bits: int, group: int, sym: bool, fmt: str, act: bool, underflow: bool = False) -> dict:
    k = 256 if group == 128 else 128
    layer = random_layer(np.random.default_rng(seed), bits, group, sym, fmt, act, k, N, underflow=underflow)
    config = {"quant_method": "gptq", "bits": bits, "group_size": group, "sym": sym, "desc_act": act}
    config["checkpoint_format"] = fmt
    tensors = {f"layer.{part}": tensor for part, tensor in layer.items()}
    if underflow:
        reference = _module_reference(bits, group, sym, act, k, tensors)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.safetensors"
            save_file(tensors, str(path))
            reference = convert_gptq_file(path, torch.float32, config, "cpu")["layer.weight"]
    return {
        "qweight": layer["qweight"].numpy(),
        "qzeros": layer["qzeros"].numpy(),
        "scales": layer["scales"].numpy(),
        "g_idx": layer["g_idx"].numpy(),
        "reference": reference.numpy().astype(np.float32),  # (N, K), nn.Linear orientation
        "config": np.array(json.dumps(config)),
    }


def _module_reference(bits: int, group: int, sym: bool, act: bool, k: int, tensors: dict) -> torch.Tensor:
    """GPTQModel's in-memory loader: v1 -> v2 zeros as its kernels see them, then its dequantizer."""
    module = _module(bits, group, sym, act, k)
    module.qweight = tensors["layer.qweight"].clone()
    module.qzeros = tensors["layer.qzeros"].clone()
    module.g_idx = tensors["layer.g_idx"].clone()
    convert_gptq_v1_to_v2_format_module(module, bits, torch.int32)
    module.scales = tensors["layer.scales"].to(torch.float32)  # exact products, no fp16 rounding
    return module.dequantize_weight().T.contiguous()


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    seed = 0
    for bits in (2, 3, 4):
        for group in GROUPS:
            for sym in (True, False):
                for fmt in ("gptq", "gptq_v2"):
                    for act in (False, True):
                        seed += 1
                        arrays = make_variant(seed, bits, group, sym, fmt, act)
                        np.savez_compressed(OUT / f"{variant_name(bits, group, sym, fmt, act)}.npz", **arrays)
        seed += 1
        arrays = make_variant(seed, bits, 64, False, "gptq", True, underflow=True)
        np.savez_compressed(OUT / f"w{bits}g64_asym_v1_underflow.npz", **arrays)
    print(f"wrote {len(list(OUT.glob('*.npz')))} fixtures to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
