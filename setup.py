"""Builds the one native extension, tmac_core.kernels._kernels.

This is the one place compiler flags live. Baseline files (generic tier,
detection, dispatch, thread pool, Cython glue) get no -m ISA flags and never
-march=native, so the binary runs on any x86-64 / ARMv8; each SIMD tier is its
own set of translation units with its own flags and is only called after
run-time detection. -ffp-contract=off everywhere: the tiers must round
exactly like the generic spec, so no compiler may fuse a multiply-add we did
not write.
"""
import platform
import sysconfig
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.modified import newer_group

K = "tmac_core/kernels/"
X86 = {"x86_64", "amd64", "x64"}
ARM = {"arm64", "aarch64"}

BASELINE_SOURCES = [K + "generic/lut_build.c", K + "generic/lut_gemv.c", K + "generic/attention.c",
                    K + "generic/activation.c", K + "cpu_features.c", K + "dispatch.c", K + "attention.c",
                    K + "thread_pool.c"]
# (sources, gcc/clang flags, msvc flags, architectures)
TIER_UNITS = [
    ([K + "x86/avx2/lut_build.c", K + "x86/avx2/lut_gemv.c", K + "x86/avx2/attention.c",
      K + "x86/avx2/activation.c"],
     ["-mavx2", "-mfma", "-mf16c"], ["/arch:AVX2"], X86),
    ([K + "x86/avx512/lut_gemv.c"],
     ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma", "-mf16c"],
     ["/arch:AVX512"], X86),
    ([K + "arm/neon/lut_build.c", K + "arm/neon/lut_gemv.c", K + "arm/neon/attention.c",
      K + "arm/neon/activation.c"], [], [], ARM),
]
GCC_COMMON = ["-O3", "-std=c11", "-ffp-contract=off", "-fno-strict-aliasing", "-Wall", "-Wno-unused-function"]
MSVC_COMMON = ["/O2", "/fp:precise"]


def target_arch(plat_name: str) -> str:
    p = plat_name.lower()
    for arch in ("arm64", "aarch64", "amd64", "x86_64"):
        if p.endswith(arch):
            return arch
    return platform.machine().lower()


class BuildExt(build_ext):
    def build_extension(self, ext):
        if ext.name != "tmac_core.kernels._kernels":
            if self.compiler.compiler_type != "msvc":
                ext.extra_compile_args = GCC_COMMON
            return super().build_extension(ext)
        target = self.get_ext_fullpath(ext.name)
        if not (self.force or newer_group(list(ext.sources) + list(ext.depends), target, "newer")):
            return      # nothing changed: skip compiling the C files too, not just the link
        msvc = self.compiler.compiler_type == "msvc"
        common = MSVC_COMMON if msvc else GCC_COMMON
        arch = target_arch(self.plat_name or sysconfig.get_platform())
        objects = self.compiler.compile(BASELINE_SOURCES, output_dir=self.build_temp,
                                        include_dirs=ext.include_dirs, extra_postargs=common)
        for sources, gcc_flags, msvc_flags, archs in TIER_UNITS:
            if arch in archs:
                objects += self.compiler.compile(sources, output_dir=self.build_temp,
                                                 include_dirs=ext.include_dirs,
                                                 extra_postargs=common + (msvc_flags if msvc else gcc_flags))
        ext.extra_objects = list(ext.extra_objects or []) + objects
        if not msvc:
            ext.extra_compile_args = GCC_COMMON
            ext.extra_link_args = ["-pthread"]
        super().build_extension(ext)


# Every C file and header: setuptools relinks an extension only when one of its
# sources or depends is newer than the built module, and the kernels' C files
# reach the link as extra objects, which it does not look at.
KERNEL_DEPENDS = sorted(str(p) for p in Path(K).rglob("*") if p.suffix in (".c", ".h") and p.name != "_kernels.c")

extensions = [
    Extension("tmac_core.kernels._kernels", sources=[K + "_kernels.pyx"], include_dirs=[K + "include"],
              depends=KERNEL_DEPENDS),
    # the model runtime reaches the kernels through _kernels' C-level exports (one pool, one table)
    Extension("tmac_core.models._llama", sources=["tmac_core/models/_llama.pyx"],
              include_dirs=[K + "include"], depends=[K + "_kernels.pxd"] + KERNEL_DEPENDS),
]

setup(
    ext_modules=cythonize(extensions, language_level=3, compiler_directives={"embedsignature": True}),
    cmdclass={"build_ext": BuildExt},
)
