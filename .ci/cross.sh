#!/usr/bin/env bash
# The kernels on the targets this machine is not: Windows x64/ARM64 and macOS arm64.
#
#  1. compile-only checks with clang, each target with its own files and flags from
#     tmac_core/kernels/sources.py: the NEON tier and baseline files for aarch64-pc-windows-msvc
#     and arm64-apple-macos11, the x86 ones (baseline, AVX2, AVX-512) for x86_64-pc-windows-msvc.
#     No MSVC or Apple SDK headers exist here: clang's own headers (stdint.h, stddef.h,
#     arm_neon.h, immintrin.h) serve, and small stand-ins declare the few C library functions
#     the kernels call (stdlib.h, string.h, math.h, assert.h; malloc.h for immintrin.h on
#     Windows). The x86 files are compiled for x86_64-apple-macos10.15 (Intel Macs) as well, and
#     the float-source quantizer (tmac_core/loading/quantize.c) for every target. The two files that need the OS (cpu_features.c, thread_pool.c) are skipped
#     there; every file, those two included, is then compiled for Windows on ARM as
#     aarch64-w64-windows-gnu against the mingw-w64 headers (the same windows.h for every
#     architecture), and for x86_64 in step 2.
#  2. the C library (kernels, dispatch, CPU detection, the Win32 thread pool) built with
#     mingw-w64 together with tests/kernels/c/kernel_driver.c, run under wine: every tier
#     this CPU offers against the generic tier and the Python extension's outputs, each also
#     through the thread pool at a different size.
#  3. the Windows struct sizes, offsets and constants that app/power/windows.py and
#     app/platform_checks.py hand to ctypes, printed from the real headers under wine and
#     compared with the Python side (tests/app/windows_layouts.py).
# The NEON tier on a CPU without the dot-product extension runs in the test suite
# (tests/kernels/test_neon_baseline.py, qemu-aarch64 -cpu cortex-a53).
# Any failure fails CI (set -e).
set -euo pipefail
cd "$(dirname "$0")/.."
# .ci/run has refreshed the package lists (apt-get update) before calling this
if command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    # wine (the wine, wineserver and winepath commands) with the 64-bit loader only: a mingw
    # x86_64 console program needs no 32-bit wine and none of wine's recommended media libraries
    $SUDO apt-get install -y -qq --no-install-recommends clang gcc-mingw-w64-x86-64 wine wine64 >/dev/null
fi
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
WORK=$(mktemp -d)
export WINEPREFIX="$WORK/wine" WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
cleanup() { wineserver -k >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT
[ -n "${CROSS_KEEP:-}" ] && trap - EXIT   # CROSS_KEEP=1: keep $WORK (binaries, outputs) to look at
K=tmac_core/kernels
started=$SECONDS

# "tier<TAB>file<TAB>gcc flags" for every kernel file, from the one list setup.py builds from
units() {
    "$PY" - "$1" <<'EOF'
import importlib.util, sys
spec = importlib.util.spec_from_file_location("s", "tmac_core/kernels/sources.py")
s = importlib.util.module_from_spec(spec); spec.loader.exec_module(s)
arch = sys.argv[1]
common = " ".join(s.GCC_COMMON)
for f in s.BASELINE_SOURCES:
    print(f"baseline\t{f}\t{common}")
for u in s.TIER_UNITS:
    if arch in u.archs:
        for f in u.sources:
            print(f"{u.tier}\t{f}\t{common} {' '.join(u.gcc_flags)}")
EOF
}

echo "== clang compile-only: other targets' kernel files"
STUB="$WORK/stub-include"
mkdir -p "$STUB"
cat >"$STUB/stdlib.h" <<'EOF'
#pragma once
#include <stddef.h>
void *malloc(size_t); void *calloc(size_t, size_t); void free(void *); void abort(void);
EOF
cat >"$STUB/string.h" <<'EOF'
#pragma once
#include <stddef.h>
void *memcpy(void *, const void *, size_t); void *memset(void *, int, size_t);
int memcmp(const void *, const void *, size_t); int strcmp(const char *, const char *);
size_t strlen(const char *);
EOF
cat >"$STUB/math.h" <<'EOF'
#pragma once
float expf(float); float fabsf(float); float fmaf(float, float, float); float nearbyintf(float);
float frexpf(float, int *); float ldexpf(float, int);
double exp(double); double log(double); double fabs(double);
#define INFINITY __builtin_inff()
#define isnan(x) __builtin_isnan(x)
#define isinf(x) __builtin_isinf(x)
#define isfinite(x) __builtin_isfinite(x)
EOF
cat >"$STUB/malloc.h" <<'EOF'
#pragma once
#include <stddef.h>
void *_aligned_malloc(size_t, size_t); void _aligned_free(void *);
EOF
cat >"$STUB/assert.h" <<'EOF'
#pragma once
#define assert(x) ((void)0)
EOF
# the OS-facing baseline files: built for real (with windows.h) by the mingw step below
OS_FILES="cpu_features.c thread_pool.c"
compiled=0
for target in aarch64-pc-windows-msvc:aarch64 arm64-apple-macos11:arm64 x86_64-pc-windows-msvc:x86_64 \
              x86_64-apple-macos10.15:x86_64; do
    triple=${target%%:*}; arch=${target##*:}
    while IFS=$'\t' read -r tier file flags; do
        case " $OS_FILES " in *" $file "*) continue ;; esac
        # -nostdlibinc: clang's own headers only; -ffreestanding would also drop the builtins' declarations
        # shellcheck disable=SC2086
        clang --target="$triple" -nostdlibinc -isystem "$STUB" $flags -Werror -I "$K/include" \
            -c "$K/$file" -o "$WORK/obj.o"
        compiled=$((compiled + 1))
    done < <(units "$arch")
    echo "  $triple: ok"
done
# Windows on ARM with real windows.h: the mingw-w64 headers are the same for every
# architecture, so the OS-facing files (Win32 thread pool, IsProcessorFeaturePresent) compile
# for ARM64 too (compile only: Debian has no ARM64 mingw runtime to link against)
MINGW_INCLUDE=/usr/share/mingw-w64/include
while IFS=$'\t' read -r tier file flags; do
    # shellcheck disable=SC2086
    clang --target=aarch64-w64-windows-gnu -nostdlibinc -isystem "$(clang -print-resource-dir)/include" \
        -isystem "$MINGW_INCLUDE" $flags -Werror -I "$K/include" -c "$K/$file" -o "$WORK/obj.o"
    compiled=$((compiled + 1))
done < <(units aarch64)
echo "  aarch64-w64-windows-gnu (mingw-w64 headers, every file): ok"
# the float-source quantizer and the layout packer (tmac_core.loading._fastquant's C files: baseline flags, an AVX
# function chosen at run time on x86-64). Not for x86_64-pc-windows-msvc: clang gates its AVX
# intrinsics there behind -mavx where MSVC's cl has them all; the mingw build below covers x64
# Windows with the same code path as clang and gcc everywhere.
QFLAGS=$("$PY" -c 'import importlib.util as u; s=u.spec_from_file_location("s","tmac_core/kernels/sources.py"); m=u.module_from_spec(s); s.loader.exec_module(m); print(" ".join(m.GCC_COMMON))')
for qfile in quantize.c pack.c; do
    for triple in aarch64-pc-windows-msvc arm64-apple-macos11 x86_64-apple-macos10.15; do
        # shellcheck disable=SC2086
        clang --target="$triple" -nostdlibinc -isystem "$STUB" $QFLAGS -Werror -I tmac_core/loading \
            -c "tmac_core/loading/$qfile" -o "$WORK/obj.o"
        compiled=$((compiled + 1))
    done
    # shellcheck disable=SC2086
    x86_64-w64-mingw32-gcc $QFLAGS -Werror -I tmac_core/loading -c "tmac_core/loading/$qfile" -o "$WORK/obj.o"
done
echo "  the quantizer and the layout packer (tmac_core/loading/quantize.c, pack.c): ok"
echo "  $compiled files compiled"

echo "== mingw-w64 build of the C library + kernel driver, run under wine"
OBJ="$WORK/win"
mkdir -p "$OBJ"
objs=()
while IFS=$'\t' read -r tier file flags; do
    out="$OBJ/$(echo "$file" | tr / _).o"
    # shellcheck disable=SC2086
    x86_64-w64-mingw32-gcc $flags -Werror -I "$K/include" -c "$K/$file" -o "$out"
    objs+=("$out")
done < <(units x86_64)
# shellcheck disable=SC2046
x86_64-w64-mingw32-gcc $QFLAGS -Werror -DDRIVER_DISPATCH -I "$K/include" tests/kernels/c/kernel_driver.c tests/kernels/c/ucrt_fmaf.c "${objs[@]}" -static -o "$WORK/kernel_driver.exe"
n_cases=$("$PY" -m tests.kernels.write_cross_cases "$WORK/cases.bin")
wine "$WORK/kernel_driver.exe" "$(winepath -w "$WORK/cases.bin" 2>/dev/null || echo "Z:$WORK/cases.bin")" \
    >"$WORK/wine.out" 2>&1 || { tail -n 40 "$WORK/wine.out"; echo "kernel driver failed under wine"; exit 1; }
grep -E "^(cpu:|tier )" "$WORK/wine.out" | sed 's/^/  /'
summary=$(tail -n 1 "$WORK/wine.out" | tr -d '\r')
echo "  $summary (the cases file has $n_cases cases; one pass per tier)"
case "$summary" in
    *" cases, 0 failed") ;;
    *) grep FAIL "$WORK/wine.out" | head -n 20; echo "kernel driver reported failures under wine"; exit 1 ;;
esac
echo "== the Windows structs and constants the Python ctypes code writes by hand, against the headers"
x86_64-w64-mingw32-gcc -std=c11 -Wall -Werror tests/app/c/windows_layouts.c -o "$WORK/windows_layouts.exe"
wine "$WORK/windows_layouts.exe" | tr -d '\r' >"$WORK/layouts-headers.txt"
"$PY" -m tests.app.windows_layouts >"$WORK/layouts-python.txt"
diff -u "$WORK/layouts-headers.txt" "$WORK/layouts-python.txt" || { echo "app/power/windows.py or app/platform_checks.py disagrees with the Windows headers"; exit 1; }
echo "  $(wc -l <"$WORK/layouts-headers.txt") sizes, offsets and constants agree"
echo "== cross.sh done in $((SECONDS - started)) s"
