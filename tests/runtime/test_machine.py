"""tmac_core.machine.cpu_model_name: the one CPU-name reader the CLI, the app and the benchmarks share."""

import sys

import pytest

from tmac_core import machine


def test_the_app_and_the_benchmarks_use_the_runtime_helper():
    import app.hardware
    import tests.bench.machine

    assert app.hardware.cpu_model_name is machine.cpu_model_name
    assert machine.cpu_model_name() in tests.bench.machine.machine_line()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/cpuinfo")
@pytest.mark.parametrize(
    "cpuinfo, name",
    [
        ("processor\t: 0\nmodel name\t: AMD  Ryzen 7   7840U\nflags\t: fpu\n", "AMD Ryzen 7 7840U"),
        (
            "processor\t: 0\nBogoMIPS\t: 108.00\n\nHardware\t: BCM2835\nModel\t: Raspberry Pi 4 Model B\n",
            "Raspberry Pi 4 Model B",
        ),  # "Model" is asked before "Hardware"
        ("processor\t: 0\nmodel name\t:   \nHardware\t: Qualcomm\n", "Qualcomm"),  # an empty value is skipped
    ],
)
def test_linux_names_come_from_proc_cpuinfo(monkeypatch, tmp_path, cpuinfo, name):
    fake = tmp_path / "cpuinfo"
    fake.write_text(cpuinfo)
    monkeypatch.setattr(machine, "Path", lambda _: fake)
    assert machine.cpu_model_name() == name


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/cpuinfo")
def test_no_name_anywhere_still_names_something(monkeypatch, tmp_path):
    monkeypatch.setattr(machine, "Path", lambda _: tmp_path / "absent")
    monkeypatch.setattr(machine.platform, "processor", lambda: "")
    monkeypatch.setattr(machine.platform, "machine", lambda: "riscv64")
    assert machine.cpu_model_name() == "unknown riscv64"
