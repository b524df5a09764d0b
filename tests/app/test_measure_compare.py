"""Measure (thread sweep) and 2-bit vs 4-bit compare, each on real engine processes running the
embedded SmolLM2-135M model; the About dialog; run_in_background."""

from __future__ import annotations

import json
import os
import threading

import pytest
import shiboken6
from PySide6.QtCore import QObject
from PySide6.QtWidgets import QApplication

from app import hardware
from app.paths import AppPaths
from app.perf.sweep import MEASUREMENTS_DIR_NAME, load_records, record_path
from app.settings import AppSettings, load_settings
from app.settings_store import SettingsStore
from app.ui.about import AboutDialog
from app.ui.compare import CompareDialog
from app.ui.measure import MeasureDialog
from app.workers.tasks import run_in_background

pytestmark = pytest.mark.engine

ENGINE_TIMEOUT_MS = 240_000  # the first 2-bit load repacks the model (~20 s on a small VM)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    """One repacked-model cache for the whole session: each variant is repacked once, not per test."""
    return tmp_path_factory.mktemp("repacked-cache")


@pytest.fixture
def paths(tmp_path, shared_cache):
    return AppPaths(
        data_dir=tmp_path / "data",
        cache_dir=shared_cache,
        config_dir=tmp_path / "config",
        models_dir=tmp_path / "models",
    ).ensure()


def test_measure_sweeps_threads_saves_json_and_adopts_the_best(qtbot, paths):
    threads = sorted({1, os.cpu_count() or 1})
    store = SettingsStore(AppSettings(), paths.settings_file)
    dialog = MeasureDialog(store, paths, "default", 4, threads=threads, tokens=8, bits_list=[4])
    qtbot.addWidget(dialog)
    assert dialog.bits_checks[4].isChecked() and not dialog.bits_checks[2].isChecked()
    assert dialog.table.rowCount() == 0 and dialog.chart.points == []
    dialog.start_button.click()
    with qtbot.waitSignal(dialog.runner.finished, timeout=ENGINE_TIMEOUT_MS) as finished:
        pass
    assert finished.args == [True], dialog.status_label.text()
    points = dialog.points
    assert [p.threads for p in points] == threads and all(p.bits == 4 for p in points)
    for p in points:
        assert 0 < p.generated_tokens <= 8 and p.decode_tok_s > 0 and p.cpu_s > 0
    assert dialog.table.rowCount() == len(threads)
    assert 4 in dialog.chart.best and "best trade-off" in dialog.best_label.text()
    assert (
        "Rule: fewest CPU-seconds per token among thread counts within 90% of the fastest" in dialog.best_label.text()
        or "Rule: fewest joules" in dialog.best_label.text()
    )

    folder = paths.data_dir / MEASUREMENTS_DIR_NAME
    saved = record_path(folder, "default", 4, hardware.machine_label())
    record = json.loads(saved.read_text())
    assert record["bits"] == 4 and record["model_key"] == "default" and record["cpu_model"] == hardware.cpu_model_name()
    assert [p["threads"] for p in record["points"]] == threads
    assert record["best"]["threads"] in threads and "90%" in record["best"]["rule"]
    assert record["tier"] in hardware.instruction_sets().available
    assert load_records(folder, "default")[0] == record

    changed = []
    store.subscribe(lambda settings, _names: changed.append(settings))
    dialog.use_button.click()
    assert changed[-1].n_threads == record["best"]["threads"]
    store.flush()
    assert load_settings(paths.settings_file).settings.n_threads == record["best"]["threads"]
    dialog.close()

    # Opening the dialog again shows the saved sweep without measuring.
    again = MeasureDialog(SettingsStore(AppSettings(), paths.settings_file), paths, "default", 4, threads=threads)
    qtbot.addWidget(again)
    assert again.table.rowCount() == len(threads) and "saved on" in again.status_label.text()
    assert again.runner is None


def test_compare_answers_with_both_variants_one_after_the_other(qtbot, paths):
    dialog = CompareDialog(
        SettingsStore(AppSettings(n_threads=1), None),
        paths,
        "default",
        max_tokens=12,
        n_ctx=256,
        prompt="Name three colours.",
    )
    qtbot.addWidget(dialog)
    dialog.run_button.click()
    runner = dialog.runner
    with qtbot.waitSignal(runner.finished, timeout=ENGINE_TIMEOUT_MS) as finished:
        pass
    assert finished.args == [True], dialog.status_label.text()
    assert list(runner.finals) == [4, 2]  # 4-bit first, then 2-bit
    for bits in (4, 2):
        answer = dialog.answers[bits].toPlainText()
        assert answer.strip() and answer == runner.answers[bits]
        assert runner.finals[bits].generated_tokens > 0 and runner.infos[bits].bits == bits
        stats = dialog.stats[bits].text()
        assert "decode" in stats and "bits per weight" in stats and "KV cache" in stats
    assert runner.infos[2].packed_bytes < runner.infos[4].packed_bytes
    assert runner.infos[2].bits_per_weight < runner.infos[4].bits_per_weight
    assert runner._client is None  # both engine processes are gone


def test_about_dialog_lists_machine_kernels_and_folders(qtbot, paths):
    dialog = AboutDialog(SettingsStore(AppSettings(memory_bandwidth=12.5e9, memory_bandwidth_cpu="X"), None), paths)
    qtbot.addWidget(dialog)
    facts = dict(dialog.facts)
    tier = hardware.instruction_sets()
    assert facts["CPU"] == hardware.cpu_model_name()
    assert f"in use: {tier.active}" in facts["Kernel tiers"] and "generic" in facts["Kernel tiers"]
    assert facts["Memory bandwidth"].startswith("12.5 GB/s")
    assert facts["Models folder"] == str(paths.models_dir) and facts["Cache folder"] == str(paths.cache_dir)
    assert "tmac_core" in facts and "Python" in facts and facts["Power sensor"]
    dialog.copy_button.click()
    assert QApplication.clipboard().text() == dialog.as_text() and "Kernel tiers:" in dialog.as_text()


def test_run_in_background_delivers_results_and_errors_on_the_gui_thread(qtbot):
    gui_thread = threading.get_ident()
    results = []

    def work():
        return threading.get_ident()

    run_in_background(work, lambda worker: results.append(("done", worker, threading.get_ident())))
    run_in_background(lambda: 1 / 0, None, lambda error: results.append(("error", type(error), threading.get_ident())))
    qtbot.waitUntil(lambda: len(results) == 2, timeout=5000)
    done = next(r for r in results if r[0] == "done")
    error = next(r for r in results if r[0] == "error")
    assert done[1] != gui_thread and done[2] == gui_thread
    assert error[1] is ZeroDivisionError and error[2] == gui_thread


def test_run_in_background_drops_callbacks_of_a_deleted_owner(qtbot):
    owner = QObject()
    release, delivered = threading.Event(), []
    future = run_in_background(lambda: release.wait(5), delivered.append, context=owner)
    shiboken6.delete(owner)
    release.set()
    future.result(timeout=5)
    qtbot.wait(200)
    assert delivered == []
    run_in_background(lambda: 7, delivered.append)
    qtbot.waitUntil(lambda: delivered == [7], timeout=5000)
