"""BitNet b1.58: Llama's graph with ternary weights and W1.58A8 arithmetic.

Every linear layer of a block (q, k, v, o, gate, up, down) is a BitLinear: its input
is quantized per token to int8 by absmax before the ternary product; the output
layer's input is not. An RMSNorm (sub-norm) sits before attn_output and before
ffn_down. RoPE is neox-style (pairs (i, i + head_dim/2)): llama.cpp lists both GGUF
archs under LLAMA_ROPE_TYPE_NEOX and its converter does not permute Q/K.

Three variants, told apart by the GGUF `general.architecture` (or the HF folder):
  * "bitnet-b1.58" (also the first upload's "bitnet-25"): microsoft/bitnet-b1.58-2B-4T,
    bitnet.cpp's graph. relu(gate)² · up feed-forward, GQA 20/5, θ = 500000.
  * "bitnet": upstream llama.cpp's graph for 1bitLLM/bitnet_b1_58-*: SiLU-gated
    feed-forward, full multi-head attention, θ = 10000 (read from the file anyway).
  * "llama-bitnet": a Hugging Face LlamaForCausalLM folder whose projections are
    BitNet-packed (config.json quantization_config.quant_method "bitnet", the default
    BitLinear: tiiuae/Falcon3-*-1.58bit, Falcon-E-*, HF1BitLLM/Llama3-8B-1.58). Llama's
    graph as trained with BitLinear (transformers integrations/bitnet.py): SiLU-gated
    feed-forward, no sub-norms, GQA, the lm_head untouched (modules_to_not_convert). Its
    RoPE rotates pairs (2i, 2i+1) as llama's does, the folder's q/k rows permuted at load
    like any Llama folder's (loading/hf.py), so bitnet.cpp's conversion of the same
    weights (arch "llama", rows permuted) runs the same. No GGUF names this architecture:
    tmac_core.config maps a "llama" GGUF whose block projections are all I2_S (bitnet.cpp's
    Falcon3/Falcon-E files) to it, and leaves TQ1_0/TQ2_0 "llama" files, which llama.cpp
    writes from any float Llama, as "llama" (config._registry_name says why).
Tied embeddings, GQA and θ come from the file, as for every architecture.

Activations (models/_llama.pyx, LlamaRuntime's exact_activations): by default each
BitLinear's int8 input goes through the ordinary activation tables, one rounding of
each 4-term sum to 127 levels per group. exact_activations=True builds the tables
from the int8 values without rounding (every integer dot product exact; the output
layer's float input read as int8 part plus remainder). Measured on tiny TQ2_0/TQ1_0/
I2_S models against the W1.58A8 arithmetic (tests/runtime/test_bitnet.py): exact
2.8e-5 of the logit range, tables 2.0-2.6 % (cosine >= 0.998), about llama.cpp
TQ2_0's own distance from that arithmetic (Q8_K per-256 activations: 1.7-2 %). On
the 2B-4T-shaped model (2 shared cores, interleaved medians) exact mode decodes at
~0.6x and reads prompts at ~0.5-0.6x the table mode's speed. The default is the
table mode: its error is the size every published runtime accepts, its speed is
what the 2-bit models are for; exact mode is the reference-grade option. Re-measured
through Engine.load(exact_activations=...) / `bench --exact-activations` on a 6-layer
2B-4T-shaped TQ2_0 model (2 threads, 128-token prompt, 2 alternating runs each): tables
64-73 prompt tok/s and 24.7-27.0 decode tok/s, exact 34-40 and 12.5-17.6. On the tiny
Falcon3-1.58bit-style folder (tests/runtime/test_falcon_folder.py) exact mode is 1.4 % and
tables 1.6-1.7 % of the logit range from transformers, so the default stays the tables.
"""

import dataclasses

from tmac_core.plan import Architecture, ModelConfig

B158 = Architecture("bitnet-b1.58", rope_style="neox", ffn_act="relu2", sub_norms=True, act_quant="int8_token")
ONEBITLLM = Architecture("bitnet", rope_style="neox", ffn_act="silu", sub_norms=True, act_quant="int8_token")
LLAMA_BITNET = Architecture("llama-bitnet", rope_style="interleaved", act_quant="int8_token")
# Engine.load's exact_activations when the caller does not choose (the measurements above):
# exact mode is slower on this machine class, so the table mode is the default.
EXACT_ACTIVATIONS_DEFAULT = False


def runtime_config(cfg: ModelConfig, exact: bool, from_folder: bool) -> ModelConfig:
    """The ModelConfig the forward pass runs for a model loaded from a folder or a file.

    A "llama-bitnet" GGUF (bitnet.cpp's I2_S Falcon files) in table mode runs the plain
    Llama graph, no int8 step before the tables: the tables round the input anyway, and
    this is the arithmetic such files have run with since they first loaded as "llama"
    (tests/runtime/test_bitnet.py checks the logits are identical). Only exact mode adds
    the trained int8 arithmetic. Folders keep their measured int8-then-tables path."""
    if cfg.arch == LLAMA_BITNET.name and not exact and not from_folder:
        return dataclasses.replace(cfg, act_quant="none")
    return cfg
