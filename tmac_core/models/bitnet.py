"""BitNet b1.58: Llama's graph with ternary weights and W1.58A8 arithmetic.

Every linear layer of a block (q, k, v, o, gate, up, down) is a BitLinear: its input
is quantized per token to int8 by absmax before the ternary product; the output
layer's input is not. An RMSNorm (sub-norm) sits before attn_output and before
ffn_down. RoPE is neox-style (pairs (i, i + head_dim/2)): llama.cpp lists both GGUF
archs under LLAMA_ROPE_TYPE_NEOX and its converter does not permute Q/K.

Two variants, told apart by the GGUF `general.architecture`:
  * "bitnet-b1.58" (also the first upload's "bitnet-25"): microsoft/bitnet-b1.58-2B-4T,
    bitnet.cpp's graph. relu(gate)² · up feed-forward, GQA 20/5, θ = 500000.
  * "bitnet": upstream llama.cpp's graph for 1bitLLM/bitnet_b1_58-*: SiLU-gated
    feed-forward, full multi-head attention, θ = 10000 (read from the file anyway).
Tied embeddings, GQA and θ come from the file, as for every architecture.
"""

from tmac_core.plan import Architecture

B158 = Architecture("bitnet-b1.58", rope_style="neox", ffn_act="relu2", sub_norms=True, act_quant="int8_token")
ONEBITLLM = Architecture("bitnet", rope_style="neox", ffn_act="silu", sub_norms=True, act_quant="int8_token")
