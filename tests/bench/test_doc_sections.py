"""docs/BENCHMARKS.md holds the newest run of each benchmark: a kernels run replaces the kernels
block (above the end-to-end block), it never piles up beside the older ones."""

from __future__ import annotations

from tests.bench import e2e
from tests.bench.__main__ import HEADER, KERNELS_END, KERNELS_START, with_kernel_section


def test_a_kernels_run_replaces_the_previous_one_and_stays_above_end_to_end():
    doc = HEADER + f"\n{e2e.START}\n## End to end — old\n{e2e.END}\n"
    first = with_kernel_section(doc, "## Kernels — first\nrows\n")
    second = with_kernel_section(first, "## Kernels — second\nrows\n")
    assert second.count(KERNELS_START) == 1 and second.count("## Kernels") == 1
    assert "second" in second and "first" not in second
    assert second.index(KERNELS_END) < second.index(e2e.START)
    assert second.endswith(f"{e2e.END}\n") and second.startswith(HEADER.rstrip("\n"))


def test_the_committed_doc_has_one_block_of_each():
    text = e2e.DOC.read_text()
    for marker in (KERNELS_START, KERNELS_END, e2e.START, e2e.END):
        assert text.count(marker) == 1, marker
    assert text.count("## Kernels —") == 1
