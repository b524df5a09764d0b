"""Whether this install's runtime can load a catalog model and, if not, what is missing.

Decided from the runtime itself, so a card never offers a download or a load that would fail:
the architecture registry (tmac_core.models, checked when the catalog is parsed), the plan's
exact source formats (tmac_core.plan: a native model's type must run as in the file), and
for a model folder the Hugging Face loader's architectures and quantized formats
(tmac_core.loading.hf: HF_ARCHITECTURES, and QUANT_METHODS once the loader reads quantized
checkpoints: until it names a method, folders with that `quantization_config` are refused
by the loader, so their cards say so). Imports tmac_core.loading.hf, hence numpy, when a
folder model is checked: only the Models page calls this. Must not import PySide6.
"""

from __future__ import annotations

from functools import cache

from app.catalog.catalog import CatalogModel
from tmac_core.plan import EXACT_SOURCES, PER_TENSOR_TERNARY

_QUANT_NAMES = {"gptq": "GPTQ", "bitnet": "BitNet-packed ternary"}


def missing_support(model: CatalogModel) -> str:
    """ "" when the runtime loads `model`; else one sentence saying what it does not read yet."""
    if model.native is not None and not model.is_folder:
        blocks = model.plan_type or model.source_quant
        if blocks not in EXACT_SOURCES and blocks not in PER_TENSOR_TERNARY:
            return f"this runtime does not run {blocks} weights as in the file yet"
    if not model.is_folder:
        return ""
    architectures, quant_methods = _folder_support()
    if model.hf_architecture not in architectures:
        return f"this runtime does not read {model.hf_architecture} model folders yet"
    if model.quant_method is not None and model.quant_method not in quant_methods:
        what = _QUANT_NAMES.get(model.quant_method, model.quant_method)
        return f"this runtime does not read {what} checkpoints from a safetensors folder yet"
    return ""


@cache
def _folder_support() -> tuple[frozenset[str], frozenset[str]]:
    from tmac_core.loading import hf  # numpy: only when a folder model is asked about

    methods = getattr(hf, "QUANT_METHODS", ())  # absent: the loader refuses every quantization_config
    return frozenset(hf.HF_ARCHITECTURES), frozenset(methods)
