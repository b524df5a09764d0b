"""`python -m tests.bench [kernels|e2e|server|all] [e2e options]`: runs the benchmarks and
prints them. `kernels` (the default) rewrites its dated section of docs/BENCHMARKS.md
(between the kernels markers, above the end-to-end one); `e2e` (tests/bench/e2e.py, our
runtime against llama.cpp) rewrites its own section between the e2e markers; `all` runs
both, kernels first. The doc holds the newest run of each: git keeps the older ones."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.bench import (
    big,  # noqa: F401  (importing it registers the real-shape group with e2e)
    e2e,
    kernels,
    server,
)
from tests.bench.machine import machine_line, read_bandwidth

DOC = Path(__file__).resolve().parents[2] / "docs" / "BENCHMARKS.md"
KERNELS_START, KERNELS_END = "<!-- kernels:start -->", "<!-- kernels:end -->"
HEADER = """# Benchmarks

Written by `python build.py bench`: the newest dated run of each benchmark (git history keeps the older ones).
Medians of repeated runs; the machines are shared and noisy, so compare the
ratios measured in the same run rather than absolute numbers across runs.
Peer numbers not measured in the run (llama.cpp's tq2_0 GEMV time, from an earlier
side-by-side run on this machine class) are marked as quoted.
"""


def kernel_targets(result: dict, bandwidth: dict) -> str:
    best = kernels.summary(result)
    get = lambda m, k, bits, t: best[(m, k, str(bits), t)]["ms"]  # noqa: E731
    lines = ["| target | measured | met |", "|---|---|---|"]
    two = get(4096, 14336, 2, 2)
    tern = get(4096, 14336, "ternary/row", 2)
    lines.append(
        f"| 2-bit GEMV 4096×14336, 2 threads ≤ 0.33 ms (3× llama.cpp tq2_0's 1.0 ms, quoted) "
        f"| 2-bit g64: {two:.3f} ms ({1.0 / two:.2f}× tq2_0); ternary, per-row scales: {tern:.3f} ms "
        f"({1.0 / tern:.2f}× tq2_0) | {'yes' if min(two, tern) <= 0.33 else 'no'} |"
    )
    cold = result["cold"]
    four = cold[(4096, 14336, "4", 2)]
    roof = four["mb"] * 1e6 / (bandwidth[2] * 1e9) * 1e3
    lines.append(
        f"| 4-bit GEMV 4096×14336, 2 threads, weights from DRAM, within 10% of the roofline "
        f"({four['mb']:.1f} MB at {bandwidth[2]:.1f} GB/s measured = {roof:.3f} ms) "
        f"| {four['ms']:.3f} ms ({four['ms'] / roof:.2f}× roofline; llama.cpp q4_K 2.5 ms) "
        f"| {'yes' if four['ms'] <= 1.1 * roof else 'no'} |"
    )
    b1, b2, b4 = (get(4096, 4096, b, 1) for b in (1, 2, 4))
    lines.append(
        f"| time linear in bits (4096×4096, in cache, 1 thread): 1-bit ≈ ½ 2-bit ≈ ¼ 4-bit "
        f"| 1-bit/2-bit = {b1 / b2:.2f}, 2-bit/4-bit = {b2 / b4:.2f}, 1-bit/4-bit = {b1 / b4:.2f} "
        f"| {'yes' if b1 / b2 <= 0.6 and b2 / b4 <= 0.6 else 'no'} |"
    )
    for m, k in [(4096, 14336), (14336, 4096)]:
        for bits in ("2", "4"):
            one, two_t = cold[(m, k, bits, 1)]["ms"], cold[(m, k, bits, 2)]["ms"]
            lines.append(
                f"| 1 thread ≥ 85% of 2-thread throughput, weights from DRAM, {bits}-bit {m}×{k} "
                f"| {100 * two_t / one:.0f}% ({one:.3f} vs {two_t:.3f} ms) "
                f"| {'yes' if two_t / one >= 0.85 else 'no'} |"
            )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    which, rest = (argv[0], argv[1:]) if argv else ("kernels", [])
    if which not in ("kernels", "e2e", "server", "all"):
        print(f"unknown benchmark {which!r}; choose kernels, e2e, server or all", file=sys.stderr)
        return 2
    code = run_kernels() if which in ("kernels", "all") else 0
    if which in ("e2e", "all"):
        code = e2e.main(rest) or code
    if which in ("server", "all"):  # printed only: the local server's tokens/s against in-process
        code = server.main() or code
    return code


def run_kernels() -> int:
    machine = machine_line()
    print(machine, flush=True)
    reads = {t: read_bandwidth(t) for t in (1, 2)}
    bandwidth = {t: gbs for t, (gbs, _how) in reads.items()}
    how = reads[1][1].removesuffix(" on 1 thread(s)")
    print(f"DRAM read bandwidth ({how}, 1 GiB): {bandwidth[1]:.1f} GB/s on 1 thread, {bandwidth[2]:.1f} GB/s on 2")
    result = kernels.run()
    section = "\n".join(
        [
            f"\n## Kernels — {machine}\n",
            f"DRAM read bandwidth measured in this run ({how}, 1 GiB): {bandwidth[1]:.1f} GB/s on 1 thread, "
            f'{bandwidth[2]:.1f} GB/s on 2. "Weights from DRAM" rows cycle through 6 copies of the matrix '
            "so no call finds its weights in the 32 MB L3; the other rows repeat one matrix (warm caches).",
            "Latency is one full GEMV: activation-table build plus the LUT kernel, timed in C.",
            "The reference is a dequantize-to-int8 Q4 kernel (AVX2 maddubs, built for this CPU)"
            " run in the same process.\n",
            "### Targets\n",
            kernel_targets(result, bandwidth),
            "\n### Weights from DRAM\n",
            kernels.cold_markdown(result),
            "\n### All shapes (warm)\n",
            kernels.markdown(result),
            "",
        ]
    )
    print(section)
    DOC.write_text(with_kernel_section(DOC.read_text() if DOC.exists() else HEADER, section))
    print(f"written between the kernels markers of {DOC}")
    return 0


def with_kernel_section(text: str, section: str) -> str:
    """text with its kernels block replaced by section (placed above the end-to-end block if new)."""
    block = f"{KERNELS_START}\n{section.strip()}\n{KERNELS_END}\n"
    if KERNELS_START in text and KERNELS_END in text:
        return text[: text.index(KERNELS_START)] + block + text[text.index(KERNELS_END) + len(KERNELS_END) + 1 :]
    if e2e.START in text:
        at = text.index(e2e.START)
        return text[:at].rstrip("\n") + "\n\n" + block + "\n" + text[at:]
    return text.rstrip("\n") + "\n\n" + block


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
