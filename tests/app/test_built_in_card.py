"""The built-in model's card describes the embedded file itself, as `python -m tmac_core inspect` does:
its type mix and, per variant, its bits per weight (not those of the catalog's Q8_0 SmolLM2 file)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from app.catalog.inventory import EMBEDDED
from tests.app.test_model_manager import TIMEOUT_MS


def inspect_cli() -> dict:
    """What the runtime's own command line says about the embedded file."""
    out = subprocess.run(
        [sys.executable, "-m", "tmac_core", "inspect", "default", "--json"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return json.loads(out)


def wait_built_in(qtbot, page):
    """The built-in card once its file has been read (in the background, like an import's)."""
    card = page.card("default")
    qtbot.waitUntil(lambda: card.state.model is not None, timeout=TIMEOUT_MS)
    return card


def test_built_in_card_matches_inspect_on_the_embedded_file(qtbot, make_page):
    record = inspect_cli()
    page = make_page()
    card = wait_built_in(qtbot, page)
    assert card.state.kind == EMBEDDED and card.state.model.source_quant == record["file_type"]
    total = sum(record["type_mix"].values())
    mix = ", ".join(f"{t} {100 * n / total:.0f} %" for t, n in record["type_mix"].items())
    assert card.source_label.text().startswith(f"Source: {mix}."), card.source_label.text()
    for bits, mode in ((None, "file"), (4, "4"), (2, "2")):
        text = card.estimate_labels[bits].text()
        shown = float(re.search(r"([\d.]+) bits/weight", text).group(1))
        assert shown == round(record["bits_per_weight"][mode], 1), (mode, text)
        assert "as in the file (Q4_1)" in card.estimate_labels[None].text()
    # the file it runs, not a download: its own size, and the subtitle keeps the path to itself
    assert card.state.download_bytes == record["file_size"]
    assert (
        card.subtitle_label.text().startswith("Built into the app") and "135M parameters" in card.subtitle_label.text()
    )
    assert ".gguf" not in card.subtitle_label.text()
