/* fmaf for the mingw-w64 test build (.ci/cross.sh), taken from ucrtbase.dll.
 *
 * The generic tier's exact rounding needs a correctly rounded fmaf. mingw-w64's
 * own (libmingwex, used with its default msvcrt runtime) is not: on 10^6 random
 * float triples a third of its results differed from the correctly rounded one
 * (measured under wine with mingw-w64 10 / gcc 12). The shipped Windows build is
 * MSVC with the Universal CRT, whose fmaf is exact, so the test build calls
 * the UCRT's fmaf too, and tests what ships. */
#include <windows.h>
#include <stdlib.h>

typedef float (*fmaf_fn)(float, float, float);
static PVOID volatile g_ucrt_fmaf;     /* the pool's threads may race to resolve it: atomics */

float fmaf(float a, float b, float c) {
    PVOID fn = InterlockedCompareExchangePointer(&g_ucrt_fmaf, NULL, NULL);
    if (!fn) {
        HMODULE ucrt = LoadLibraryA("ucrtbase.dll");
        fn = ucrt ? (PVOID)GetProcAddress(ucrt, "fmaf") : NULL;
        if (!fn) abort();
        InterlockedExchangePointer(&g_ucrt_fmaf, fn);
    }
    return ((fmaf_fn)fn)(a, b, c);
}
