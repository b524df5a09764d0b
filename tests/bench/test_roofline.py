"""tests/bench/roofline.py's parts that run without valgrind: the port-peak program builds
and measures, callgrind_annotate's output is read right, and the differencing arithmetic."""

import platform
import shutil

import pytest

from tests.bench import roofline as R

ANNOTATE = """\
--------------------------------------------------------------------------------
Ir
--------------------------------------------------------------------------------
1,000,000 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                    file:function
--------------------------------------------------------------------------------
400,000 (40.00%)  /usr/lib/gcc/x86_64-linux-gnu/12/include/avx2intrin.h:tmac_gemm_tile_avx2
100,000 (10.00%)  tmac_core/kernels/x86/avx2/lut_gemv.c:tmac_gemm_tile_avx2 [/w/_kernels.so]
 90,000 ( 9.00%)  Python/ceval.c:_PyEval_EvalFrameDefault'2 [/lib/libpython3.11.so]
 60,000 ( 6.00%)  Python/ceval.c:_PyEval_EvalFrameDefault [/lib/libpython3.11.so]
 50,000 ( 5.00%)  ???:0x0000000000108a80 [/site-packages/llama_cpp/lib/libggml-cpu.so]
 40,000 ( 4.00%)  ???:0x0000000000033900 [/site-packages/llama_cpp/lib/libggml-cpu.so]
 30,000 ( 3.00%)  tmac_core/kernels/x86/avx2/lut_build.c:tmac_lut_entries_avx2 [/w/_kernels.so]
 20,000 ( 2.00%)  tmac_core/kernels/thread_pool.c:lut_task [/w/_kernels.so]
 10,000 ( 1.00%)  tmac_core/kernels/x86/avx2/attention.c:tmac_attn_block_avx2 [/w/_kernels.so]
  5,000 ( 0.50%)  ???:ggml::cpu::repack::gemm<block_q4_0, 8l, 8l> [/lib/libggml-cpu.so]
"""


def test_annotate_merges_a_function_across_files_recursion_levels_and_stripped_code():
    c = R.parse_annotate(ANNOTATE)
    assert c["TOTAL"] == 1_000_000
    assert c["tmac_gemm_tile_avx2"] == 500_000  # intrinsics headers and the kernel's own lines
    assert c["_PyEval_EvalFrameDefault"] == 150_000
    assert c["libggml-cpu.so (stripped)"] == 90_000
    assert c["ggml::cpu::repack::gemm<block_q4_0, 8l, 8l>"] == 5_000  # "::" inside a name survives
    assert sum(v for k, v in c.items() if k != "TOTAL") == 805_000


def test_difference_split_and_per_weight_token():
    short = {"TOTAL": 1_000, "tmac_gemm_tile_avx2": 300, "tmac_lut_scales": 10, "startup": 500}
    long = {"TOTAL": 1_900, "tmac_gemm_tile_avx2": 900, "tmac_lut_scales": 30, "tmac_attn_block_avx2": 70}
    d = R.difference(long, short)
    assert d == {
        "TOTAL": 900,
        "tmac_gemm_tile_avx2": 600,
        "tmac_lut_scales": 20,
        "tmac_attn_block_avx2": 70,
        "startup": -500,
    }
    parts = R.split(d)
    assert parts == {"LUT tiles": 600, "table builds": 20, "attention": 70, "rest": 210}
    assert sum(parts.values()) == d["TOTAL"]
    assert R.per_weight_token(900, weights=30, tokens=10) == 3.0
    assert R.top(d, 2) == [("tmac_gemm_tile_avx2", 600), ("tmac_attn_block_avx2", 70)]


def test_matrix_weights_are_the_synthetic_models_layer_matrices():
    from tmac_core.models import ARCHITECTURES
    from tmac_core.synth import SynthSpec

    cfg = ARCHITECTURES["llama"].config(
        dim=R.DIM,
        hidden_dim=R.FFN,
        n_layers=3,
        n_heads=R.HEADS,
        n_kv_heads=R.KV_HEADS,
        head_dim=R.DIM // R.HEADS,
        vocab_size=R.VOCAB,
        n_ctx_train=4096,
        rope_theta=10000.0,
        tie_embeddings=False,
    )
    shapes = SynthSpec(cfg, weight_type="q4_0").tensor_shapes()
    matrices = [s for name, s in shapes.items() if name.startswith("blk.") and len(s) == 2]
    assert R.matrix_weights(3) == sum(a * b for a, b in matrices)


def test_tile_implied_counts_grow_with_the_planes():
    assert R.tile_implied(2) < R.tile_implied(4) < 2 * R.tile_implied(2)  # fixed cost per kpair


@pytest.mark.skipif(
    platform.machine() not in ("x86_64", "AMD64") or shutil.which("cc") is None, reason="AVX2 program, needs cc"
)
def test_port_peak_builds_and_measures_positive_rates():
    import tmac_core.kernels as K

    if not K.cpu_features().get("avx2"):
        pytest.skip("no AVX2 on this CPU")
    dll = R.port_peak_lib()
    assert dll.port_peak_seconds(len(R.MIXES), 10) == -1.0  # unknown mix
    assert dll.port_peak_seconds(0, 0) == -1.0
    peaks = R.port_peaks(seconds_each=0.002, passes=1)
    assert [p.mix for p in peaks] == list(R.MIXES)
    for p in peaks:
        assert p.ops_per_ns > 0 and p.work_per_ns > 0
    # 2 bit planes do half the 4-bit tile's ops for the same weight x tokens
    assert dll.port_peak_ops(R.MIX_GEMM2) * 2 == dll.port_peak_ops(R.MIX_GEMM4)
    assert dll.port_peak_work(R.MIX_GEMM2) == dll.port_peak_work(R.MIX_GEMM4)
