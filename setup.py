"""Builds the native extensions: tmac_core.kernels._kernels, tmac_core.models._llama and the
quantizer tmac_core.loading._fastquant.

The C sources and compiler flags come from tmac_core/kernels/sources.py, the one list the
cross-tier tests compile from too (its docstring says why each flag is there). This file only
decides which of those units this target gets, compiles them and links them into _kernels.
"""

import importlib.util
import platform
import sysconfig
from pathlib import Path
from types import ModuleType

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.modified import newer_group

K = "tmac_core/kernels/"


def _load_by_path(path: str) -> ModuleType:
    # by path, not `import tmac_core...`: the package is not importable before it is built
    spec = importlib.util.spec_from_file_location("_tmac_kernel_sources", path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SOURCES = _load_by_path(K + "sources.py")
BASELINE_SOURCES = [K + s for s in SOURCES.BASELINE_SOURCES]
GCC_COMMON = list(SOURCES.GCC_COMMON)
MSVC_COMMON = list(SOURCES.MSVC_COMMON)


def target_arch(plat_name: str) -> str:
    p = plat_name.lower()
    for arch in ("arm64", "aarch64", "amd64", "x86_64"):
        if p.endswith(arch):
            return arch
    return platform.machine().lower()


class BuildExt(build_ext):
    def build_extension(self, ext: Extension) -> None:
        if ext.name != "tmac_core.kernels._kernels":
            if self.compiler.compiler_type != "msvc":
                ext.extra_compile_args = GCC_COMMON
            return super().build_extension(ext)
        target = self.get_ext_fullpath(ext.name)
        if not (self.force or newer_group(list(ext.sources) + list(ext.depends), target, "newer")):
            return  # nothing changed: skip compiling the C files too, not just the link
        msvc = self.compiler.compiler_type == "msvc"
        common = MSVC_COMMON if msvc else GCC_COMMON
        arch = target_arch(self.plat_name or sysconfig.get_platform())
        objects = self.compiler.compile(
            BASELINE_SOURCES, output_dir=self.build_temp, include_dirs=ext.include_dirs, extra_postargs=common
        )
        for unit in SOURCES.TIER_UNITS:
            if arch in unit.archs:
                flags = list(unit.msvc_flags if msvc else unit.gcc_flags)
                objects += self.compiler.compile(
                    [K + s for s in unit.sources],
                    output_dir=self.build_temp,
                    include_dirs=ext.include_dirs,
                    extra_postargs=common + flags,
                )
        ext.extra_objects = list(ext.extra_objects or []) + objects
        if not msvc:
            ext.extra_compile_args = GCC_COMMON
            ext.extra_link_args = ["-pthread"]
        super().build_extension(ext)


# Every C file and header, and the flag list: setuptools relinks an extension only when one
# of its sources or depends is newer than the built module, and the kernels' C files reach
# the link as extra objects, which it does not look at.
KERNEL_DEPENDS = sorted(str(p) for p in Path(K).rglob("*") if p.suffix in (".c", ".h") and p.name != "_kernels.c")
KERNEL_DEPENDS.append(K + "sources.py")

extensions = [
    Extension(
        "tmac_core.kernels._kernels",
        sources=[K + "_kernels.pyx"],
        include_dirs=[K + SOURCES.INCLUDE_DIR],
        depends=KERNEL_DEPENDS,
    ),
    # the model runtime reaches the kernels through _kernels' C-level exports (one pool, one table)
    Extension(
        "tmac_core.models._llama",
        sources=["tmac_core/models/_llama.pyx"],
        include_dirs=[K + SOURCES.INCLUDE_DIR],
        depends=[K + "_kernels.pxd"] + KERNEL_DEPENDS,
    ),
    # the float-source quantizer and the layout packer (pack.c): baseline ISA plus an AVX function
    # picked at run time, no ISA flags
    Extension(
        "tmac_core.loading._fastquant",
        sources=["tmac_core/loading/_fastquant.pyx", "tmac_core/loading/quantize.c", "tmac_core/loading/pack.c"],
        include_dirs=["tmac_core/loading"],
        depends=["tmac_core/loading/quantize.h", "tmac_core/loading/quantize_search.h", "tmac_core/loading/pack.h"],
    ),
]

setup(
    ext_modules=cythonize(extensions, language_level=3, compiler_directives={"embedsignature": True}),
    cmdclass={"build_ext": BuildExt},
)
