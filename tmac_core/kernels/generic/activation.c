/* Scalar SwiGLU, the spec of every tier's swiglu (kernels.h §activation):
 * gate[i] = gate[i] / (1 + exp(-gate[i])) * up[i] in float, libm's expf.
 * Baseline flags, -ffp-contract=off. */
#include <math.h>
#include "tmac/kernels.h"

void tmac_swiglu_generic(float *TMAC_RESTRICT gate, const float *TMAC_RESTRICT up, int n) {
    for (int i = 0; i < n; i++) {
        const float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}
