"""Whether this install's runtime can load a catalog model and, if not, what is missing.

Decided by the runtime itself, so a card never offers a download or a load that would fail:
the architecture registry (tmac_core.models, checked when the catalog is parsed), the plan's
exact source formats (tmac_core.plan: a native model's own type must run as in the file),
and for a model folder the Hugging Face loader's own config check (tmac_core.loading.hf
config_from_hf) on a config.json built from the catalog entry: its architecture class, its
shapes and its `quantization_config` (GPTQ with the entry's bits and group; "bitnet" for
packed ternary safetensors). Imports tmac_core.loading.hf, hence numpy, when a folder model
is checked: only the Models page calls this. Must not import PySide6.
"""

from __future__ import annotations

from typing import Any

from app.catalog.catalog import CatalogModel
from tmac_core.errors import ModelFormatError, UnsupportedModelError
from tmac_core.plan import exact_format, parse_gptq_type

_FOLDER_KINDS = {"bitnet": "BitNet-packed ternary safetensors", "gptq": "GPTQ safetensors folders"}


def missing_support(model: CatalogModel) -> str:
    """ "" when the runtime loads `model`; else one sentence saying what it does not read yet."""
    if model.native is not None:
        blocks = model.plan_type or model.source_quant
        if exact_format(blocks, model.config.dim) is None:
            return f"this runtime does not run {blocks} weights as in the file yet"
    if not model.is_folder:
        return ""
    from tmac_core.loading.hf import config_from_hf  # numpy: only when a folder model is asked about

    try:
        config_from_hf(_config_json(model), f"{model.repo_id} (catalog)")
    except UnsupportedModelError as error:
        reason = str(error).split(": ", 1)[-1]  # the loader's words, without the path it names
        what = _FOLDER_KINDS.get(model.quant_method or "", f"{model.hf_architecture} folders")
        return f"this runtime does not read {what} yet (its loader says: {reason})"
    except ModelFormatError as error:  # the catalog entry itself is off: a packaging bug, said plainly
        return f"the catalog's description of this model does not read as a model ({error.field}: {error.reason})"
    return ""


def _config_json(model: CatalogModel) -> dict[str, Any]:
    """The config.json the repo ships, as far as the catalog entry knows it (shapes, class, quantization)."""
    cfg = model.config
    data: dict[str, Any] = {
        "architectures": [model.hf_architecture],
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.hidden_dim,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.n_ctx_train,
        "tie_word_embeddings": cfg.tie_embeddings,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
    }
    gptq = parse_gptq_type(model.source_quant)
    if model.quant_method == "gptq" and gptq is not None:
        bits, group, act_order = gptq
        data["quantization_config"] = {
            "quant_method": "gptq",
            "bits": bits,
            "group_size": group,
            "desc_act": act_order,
            "sym": True,
        }
    elif model.quant_method is not None:
        data["quantization_config"] = {"quant_method": model.quant_method}
    return data
