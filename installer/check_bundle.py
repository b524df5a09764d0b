"""Static checks of the frozen app (dist/tmac-chat, or dist/T-MAC Chat.app on macOS), run by
`python build.py bundle` after PyInstaller and again by CI:

  * the three native extensions are inside, built for this machine's architecture (the
    executable's and each extension's header: ELF e_machine, PE Machine, Mach-O cputype);
  * every kernel tier this architecture has (tmac_core/kernels/sources.py) is inside _kernels
    (its exported tier functions, where the format exports them: ELF and Mach-O);
  * nothing was built for the build machine's CPU: no -march/-mtune/-mcpu=native in the flag
    list or the environment, and, where the extensions carry DWARF (Linux), every object's
    recorded compiler flags: no `native`, no ISA flag on a baseline object, each tier's objects
    with that tier's flags; and the baseline functions' machine code uses no AVX register
    (x86) or dot-product instruction (ARM);
  * the embedded model is inside (a GGUF file, the size of the installed one);
  * nothing the spec trims came back (QML, WebEngine, translations, the virtual keyboard);
  * the bundle without the model is under the size budget; each part's size is printed.

    python installer/check_bundle.py [BUNDLE_DIR] [--json OUT]
Exit status 0 when every check passes; each failure is printed on its own line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from types import ModuleType

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from installer import layout  # noqa: E402 (after the path change)

EXTENSIONS = ("tmac_core/kernels/_kernels", "tmac_core/models/_llama", "tmac_core/loading/_fastquant")
NATIVE_FLAG = re.compile(r"(-march=native|-mtune=native|-mcpu=native|/arch:native)")
# flags that would let the compiler use instructions beyond the baseline in a baseline object
ISA_FLAG = re.compile(
    r"(-mavx\S*|-mfma|-mf16c|-msse4\S*|-march=(?!x86-64 |x86-64$|armv8-a |armv8-a$)\S+|\+dotprod|/arch:\S+)"
)
FORBIDDEN = re.compile(
    r"(QtWebEngine|Qt6Qml|Qt6Quick|VirtualKeyboard|Qt6Pdf|Qt(Qml|Quick|Pdf)\w*\.framework|/translations/)"
)
ELF_MACHINE = {62: "x86_64", 183: "arm64"}
PE_MACHINE = {0x8664: "x86_64", 0xAA64: "arm64", 0x14C: "x86"}
MACHO_CPU = {0x01000007: "x86_64", 0x0100000C: "arm64"}


class Report:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.facts: dict[str, object] = {}

    def check(self, ok: bool, what: str) -> bool:
        print(("ok    " if ok else "FAIL  ") + what, flush=True)
        if not ok:
            self.failures.append(what)
        return ok


def binary_arch(path: Path) -> str:
    """The architecture in an executable's or library's header: x86_64, arm64, or for a macOS
    universal binary the ones it holds ("arm64+x86_64")."""
    head = path.read_bytes()[:4096]
    if head[:4] == b"\x7fELF":
        return ELF_MACHINE.get(struct.unpack_from("<H", head, 18)[0], "unknown ELF")
    if head[:2] == b"MZ":
        pe = struct.unpack_from("<I", head, 0x3C)[0]
        return PE_MACHINE.get(struct.unpack_from("<H", head, pe + 4)[0], "unknown PE")
    if head[:4] == b"\xcf\xfa\xed\xfe":  # 64-bit Mach-O, little-endian
        return MACHO_CPU.get(struct.unpack_from("<I", head, 4)[0], "unknown Mach-O")
    if head[:4] == b"\xca\xfe\xba\xbe":  # universal: big-endian count, then (cputype, subtype, offset, size, align)
        count = struct.unpack_from(">I", head, 4)[0]
        cpus = (struct.unpack_from(">I", head, 8 + 20 * i)[0] for i in range(min(count, 8)))
        return "+".join(sorted(MACHO_CPU.get(cpu, hex(cpu)) for cpu in cpus))
    return "unknown"


def runs_natively(path: Path, arch: str) -> bool:
    return arch in binary_arch(path).split("+")


def internal_dir(bundle: Path) -> Path:
    """Where PyInstaller put the support files (sys._MEIPASS): _internal/, or Contents/Frameworks
    and Contents/Resources in an .app (symlinked to each other, so either finds everything)."""
    if (bundle / "_internal").is_dir():
        return bundle / "_internal"
    frameworks = bundle.parent / "Frameworks"
    return frameworks if frameworks.is_dir() else bundle


def find_extension(internal: Path, module: str) -> Path | None:
    folder, stem = (internal / module).parent, Path(module).name
    if not folder.is_dir():
        return None
    hits = sorted(p for p in folder.iterdir() if p.name.startswith(stem + ".") and p.suffix in (".so", ".pyd"))
    return hits[0] if hits else None


def kernel_sources() -> ModuleType:  # the tier list and flags setup.py used (loaded by path, stdlib only)
    import importlib.util

    spec = importlib.util.spec_from_file_location("_sources", layout.ROOT / "tmac_core/kernels/sources.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exported_symbols(path: Path) -> set[str] | None:
    nm = shutil.which("nm")
    if nm is None or path.suffix == ".pyd":  # a PE extension exports only its PyInit function
        return None
    args = [nm, "-g", "--defined-only"] if sys.platform != "darwin" else [nm, "-g", "-U"]
    done = subprocess.run([*args, str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        return None
    return {line.split()[-1].lstrip("_") for line in done.stdout.splitlines() if line.strip()}


def dwarf_units(path: Path) -> list[tuple[str, str]]:
    """(source file, compiler flags) for each compilation unit whose DWARF records them."""
    objdump = shutil.which("objdump")
    if objdump is None:
        return []
    done = subprocess.run([objdump, "--dwarf=info", str(path)], capture_output=True, text=True)
    units, producer = [], None
    for line in done.stdout.splitlines():
        if "DW_AT_producer" in line:
            producer = line.split("):", 1)[-1].strip() if "):" in line else line.split(":", 1)[-1].strip()
        elif producer is not None and "DW_AT_name" in line:
            units.append(
                (line.split("):", 1)[-1].strip() if "):" in line else line.split(":", 1)[-1].strip(), producer)
            )
            producer = None
    return units


def check_flags(report: Report, kernels: Path, others: list[Path], sources: ModuleType, arch: str) -> None:
    lists = [*sources.GCC_COMMON, *sources.MSVC_COMMON]
    for unit in sources.TIER_UNITS:
        lists += [*unit.gcc_flags, *unit.msvc_flags]
    report.check(not any(NATIVE_FLAG.search(f) for f in lists), "no -march=native in tmac_core/kernels/sources.py")
    env = {k: os.environ.get(k, "") for k in ("CFLAGS", "CPPFLAGS", "LDFLAGS", "CL", "_CL_", "ARCHFLAGS")}
    report.check(not any(NATIVE_FLAG.search(v) for v in env.values()), "no -march=native in CFLAGS/CL/... here")
    units = {path: dwarf_units(path) for path in [kernels, *others]}
    if not units[kernels]:
        print("note  no DWARF compiler flags recorded in the extensions: the per-object flag check is skipped")
        return
    native = [f"{Path(p).name}: {u[0]}" for p, us in units.items() for u in us if NATIVE_FLAG.search(u[1])]
    report.check(not native, f"no object in the extensions built with a native flag {native[:3]}")
    tier_of = {
        f"tmac_core/kernels/{s}": unit for unit in sources.TIER_UNITS if arch in unit.archs for s in unit.sources
    }
    wrong: list[str] = []
    seen: set[str] = set()
    for us in units.values():
        for name, flags in us:
            own = [u for src, u in tier_of.items() if name.endswith(src)]
            if own:
                seen.add(own[0].tier)
                missing = [f for f in own[0].gcc_flags if f not in flags.split()]
                if missing:
                    wrong.append(f"{name} lacks {missing}")
            elif name.endswith(".c") and ISA_FLAG.search(flags):
                wrong.append(f"{name} (baseline) has {ISA_FLAG.findall(flags)}")
    report.check(not wrong, f"baseline objects carry no ISA flag, tier objects their own flags {wrong[:3]}")
    expected = {u.tier for u in sources.TIER_UNITS if arch in u.archs and u.gcc_flags}
    report.check(expected <= seen, f"objects of every flagged tier recorded: {sorted(seen)}")


def check_baseline_code(report: Report, kernels: Path, symbols: set[str], tiers: set[str], arch: str) -> None:
    """Disassemble the exported baseline functions (CPU detection, dispatch, generic kernels)."""
    objdump = shutil.which("objdump")
    if objdump is None or sys.platform == "darwin":
        print("note  objdump not available: the baseline-code scan is skipped")
        return
    names = sorted(s for s in symbols if s.startswith("tmac_") and not s.endswith(tuple(f"_{t}" for t in tiers)))
    pattern = re.compile(r"%[yz]mm\d+" if arch == "x86_64" else r"\b(sdot|udot|usdot|smmla|ummla|usmmla)\b")
    dirty = []
    for name in names:
        text = subprocess.run(
            [objdump, "-d", "--no-show-raw-insn", f"--disassemble={name}", str(kernels)], capture_output=True, text=True
        ).stdout
        if pattern.search(text):
            dirty.append(name)
    report.check(
        bool(names) and not dirty,
        f"{len(names)} baseline functions use no {'AVX register' if arch == 'x86_64' else 'dotprod/i8mm'} {dirty[:5]}",
    )


def sizes(bundle: Path, model: Path | None) -> tuple[int, dict[str, int]]:
    """Bytes without the model, and per part (each top-level entry of the support folder).
    Symlinks are not counted: an .app links Frameworks and Resources to each other."""
    root = bundle.parent if bundle.name == "MacOS" else bundle  # the .app's Contents/
    containers = {"_internal", "Frameworks", "Resources", "MacOS"}
    parts: dict[str, int] = {}
    for path in root.rglob("*"):
        if path.is_symlink() or not path.is_file() or (model is not None and path.samefile(model)):
            continue
        rel = path.relative_to(root).parts
        key = rel[1] if len(rel) > 1 and rel[0] in containers else rel[0]
        parts[key] = parts.get(key, 0) + path.stat().st_size
    return sum(parts.values()), parts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", nargs="?", type=Path, default=layout.onedir())
    parser.add_argument("--json", type=Path, help="also write the facts (sizes, tiers) here")
    args = parser.parse_args()
    report, bundle = Report(), args.bundle.resolve()
    arch = layout.machine()
    exe = next((p for p in (bundle / layout.EXE_NAME, bundle / f"{layout.EXE_NAME}.exe") if p.is_file()), None)
    if not report.check(exe is not None, f"executable in {bundle}"):
        return 1
    assert exe is not None
    report.check(runs_natively(exe, arch), f"executable built for {binary_arch(exe)} (this machine: {arch})")
    internal = internal_dir(bundle)
    found = {module: find_extension(internal, module) for module in EXTENSIONS}
    for module, path in found.items():
        if report.check(path is not None, f"extension {module} present"):
            assert path is not None
            report.check(runs_natively(path, arch), f"  {path.name} built for {binary_arch(path)}")
    sources = kernel_sources()
    tiers = {"generic", *(u.tier for u in sources.TIER_UNITS if arch in u.archs)}
    report.facts["tiers_built"] = sorted(tiers)
    kernels = found[EXTENSIONS[0]]
    if kernels is not None:
        symbols = exported_symbols(kernels)
        if symbols is None:
            print("note  the extension exports no symbol table here (PE): tiers are checked by --self-test")
        else:
            missing = sorted(
                t for t in tiers if not any(s.endswith(f"_{t}") and s.startswith("tmac_") for s in symbols)
            )
            report.check(not missing, f"kernel tiers inside _kernels: {sorted(tiers)} (missing: {missing})")
            check_baseline_code(report, kernels, symbols, tiers - {"generic"}, arch)
        others = [p for p in found.values() if p is not None and p != kernels]
        check_flags(report, kernels, others, sources, arch)
    model_source = layout.embedded_model_file()
    model = internal / layout.MODEL_PACKAGE / model_source.name
    if not model.is_file() and internal.name == "Frameworks":
        model = internal.parent / "Resources" / layout.MODEL_PACKAGE / model_source.name
    has_model = model.is_file() and model.read_bytes()[:4] == b"GGUF"
    report.check(
        has_model and model.stat().st_size == model_source.stat().st_size,
        f"embedded model {model.relative_to(bundle.parent) if has_model else model} (GGUF, "
        f"{model_source.stat().st_size / 1e6:.1f} MB)",
    )
    forbidden = sorted(str(p.relative_to(internal)) for p in internal.rglob("*") if FORBIDDEN.search(p.as_posix()))
    report.check(not forbidden, f"no trimmed Qt part came back {forbidden[:5]}")
    total, parts = sizes(bundle, model if has_model else None)
    print(f"\nsize without the model: {total / 1e6:.1f} MB (budget {layout.SIZE_BUDGET_BYTES / 1e6:.0f} MB)")
    shown = sorted(parts.items(), key=lambda kv: -kv[1])
    for name, size in shown[:20]:
        print(f"  {size / 1e6:8.1f} MB  {name}")
    if len(shown) > 20:
        print(f"  {sum(size for _, size in shown[20:]) / 1e6:8.1f} MB  ({len(shown) - 20} smaller parts)")
    report.check(total < layout.SIZE_BUDGET_BYTES, f"bundle without the model under the budget: {total / 1e6:.1f} MB")
    report.facts.update(
        size_without_model_mb=round(total / 1e6, 1),
        model_mb=round(model_source.stat().st_size / 1e6, 1),
        parts_mb={k: round(v / 1e6, 2) for k, v in shown},
        failures=report.failures,
    )
    if args.json:
        args.json.write_text(json.dumps(report.facts, indent=1))
    print(f"\ncheck_bundle: {'FAILED: ' + str(len(report.failures)) if report.failures else 'all checks passed'}")
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
