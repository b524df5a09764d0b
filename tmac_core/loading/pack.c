/* The kernel weight layout in C: what tmac_core/kernels/layout.py (the spec, checked against
 * golden bytes) computes with numpy, byte for byte, without its temporaries. The planes are
 * the hot part of a first load: layout.py builds each of them from eight uint8 arrays of the
 * matrix's size; here eight codes are one 64-bit word and a plane's byte is one multiply:
 * with y = (x >> i) & 0x0101..01 (bit i of code j at bit 8j), y * 0x0102040810204080 puts
 * bit i of code j at bit 56 + j, and no two partial products share a bit, so nothing carries.
 * The scale arithmetic is layout.py's float64 arithmetic, each operation in the same order
 * (the build has -ffp-contract=off: nothing fuses), and float64 -> fp16 rounds once, to
 * nearest even, as numpy's astype does. Every size is checked before anything is indexed. */
#include "pack.h"

#include <math.h>
#include <string.h>

#define LSB_BYTES 0x0101010101010101ULL
#define GATHER_BITS 0x0102040810204080ULL
#define MAX_ROWS (INT64_C(1) << 31) /* with MAX_K and MAX_BITS, every size product stays below 2^63 */

/* Byte p of a 64-byte block holds row ROW_OF_BYTE(p) of the tile (layout.h); pos is its inverse. */
static void row_positions(uint8_t pos[TMAC_P_TILE_ROWS]) {
    for (int p = 0; p < TMAC_P_TILE_ROWS; p++) {
        int row = p % 16 < 8 ? 8 * (p / 16) + p % 16 : 32 + 8 * (p / 16) + p % 16 - 8;
        pos[row] = (uint8_t)p;
    }
}

static int64_t tiles_of(int64_t m) { return (m + TMAC_P_TILE_ROWS - 1) / TMAC_P_TILE_ROWS; }

static int tile_range_ok(int64_t m, int64_t t0, int64_t t1) {
    return m >= 1 && m <= MAX_ROWS && t0 >= 0 && t0 <= t1 && t1 <= tiles_of(m);
}

static inline uint64_t load8(const uint8_t *p) {
    uint64_t x = 0;
    for (int j = 0; j < 8; j++) x |= (uint64_t)p[j] << (8 * j);
    return x;
}

int tmac_pack_planes(const uint8_t *codes, int64_t row_stride, int64_t m, int64_t k, int64_t k_pad, int bits,
                     int64_t t0, int64_t t1, uint8_t *out, int64_t out_len, int64_t *bad) {
    if (!codes || !out || !bad || bits < 1 || bits > TMAC_P_MAX_BITS) return TMAC_P_E_ARGS;
    if (k < 1 || k > TMAC_P_MAX_K || k_pad < k || k_pad > TMAC_P_MAX_K + 64 || k_pad % 8 || row_stride < k)
        return TMAC_P_E_ARGS;
    if (!tile_range_ok(m, t0, t1)) return TMAC_P_E_ARGS;
    int64_t kpn = k_pad / 8;
    if (out_len < (t1 - t0) * kpn * bits * TMAC_P_TILE_ROWS) return TMAC_P_E_ARGS;
    *bad = -1;
    uint8_t pos[TMAC_P_TILE_ROWS];
    row_positions(pos);
    const uint64_t too_big = (uint64_t)(uint8_t)(0xFFu << bits) * LSB_BYTES; /* any bit >= bits */
    int64_t full = k / 8;
    for (int64_t t = t0; t < t1; t++)
        for (int64_t kp = 0; kp < kpn; kp++) {
            uint8_t *block = out + ((t - t0) * kpn + kp) * bits * TMAC_P_TILE_ROWS; /* (bits, 64) */
            for (int rr = 0; rr < TMAC_P_TILE_ROWS; rr++) {
                int64_t r = t * TMAC_P_TILE_ROWS + rr;
                uint64_t x = 0;
                if (r < m && kp < full) {
                    x = load8(codes + r * row_stride + kp * 8);
                } else if (r < m && kp * 8 < k) { /* the ragged last columns; the rest is padding */
                    uint8_t tail[8] = {0};
                    memcpy(tail, codes + r * row_stride + kp * 8, (size_t)(k - kp * 8));
                    x = load8(tail);
                }
                if (x & too_big) {
                    int j = 0;
                    while (!((x >> (8 * j)) & too_big & 0xFF)) j++;
                    *bad = r * k + kp * 8 + j;
                    return TMAC_P_E_CODE;
                }
                for (int i = 0; i < bits; i++)
                    block[i * TMAC_P_TILE_ROWS + pos[rr]] = (uint8_t)((((x >> i) & LSB_BYTES) * GATHER_BITS) >> 56);
            }
        }
    return TMAC_P_OK;
}

static inline double load_f(const void *p, int f64, int64_t at) {
    return f64 ? ((const double *)p)[at] : (double)((const float *)p)[at];
}

/* float64 -> IEEE half bits, rounded once to nearest even (numpy's astype); overflow gives an
 * infinity. On the bits: the 53-bit significand shifted right to 11 bits (a normal half) or to
 * units of 2^-24 (a subnormal), the bits shifted out deciding the rounding. */
static uint16_t f64_to_f16(double x) {
    uint64_t b;
    memcpy(&b, &x, sizeof b);
    uint16_t sign = (uint16_t)((b >> 48) & 0x8000);
    b &= ~(UINT64_C(1) << 63);
    if (b >= UINT64_C(0x7FF0000000000000)) return sign | (b > UINT64_C(0x7FF0000000000000) ? 0x7E00 : 0x7C00);
    if (b >= UINT64_C(0x40EFFE0000000000)) return sign | 0x7C00; /* 65520 = halfway to 2^16, and above */
    int e = (int)(b >> 52) - 1023;                                /* x = 1.f * 2^e, e <= 15 here */
    if (e < -1022) return sign; /* a float64 subnormal is far below half of fp16's least value */
    uint64_t sig = (b & ((UINT64_C(1) << 52) - 1)) | (UINT64_C(1) << 52); /* 53 bits */
    int shift = e >= -14 ? 42 : 28 - e; /* to 11 bits, or to units of 2^-24 (value = sig * 2^(e - 52)) */
    if (shift > 54) return sign;        /* below 2^-25 (half the least subnormal): rounds to zero */
    uint64_t q = sig >> shift, rest = sig & ((UINT64_C(1) << shift) - 1), half = UINT64_C(1) << (shift - 1);
    if (rest > half || (rest == half && (q & 1))) q++;
    if (e < -14) return sign | (uint16_t)q; /* q = 1024: the least normal, which these bits also spell */
    if (q == 2048) {
        q = 1024;
        e++;
    }
    return sign | (uint16_t)((e + 15) << 10) | (uint16_t)(q - 1024);
}

static int f16_args_ok(const void *s, int64_t m, int64_t n, int bits) {
    return s && bits >= 1 && bits <= TMAC_P_MAX_BITS && n >= 1 && n <= TMAC_P_MAX_K && m >= 1 && m <= MAX_ROWS;
}

int tmac_pack_f16_peak(const void *s, int64_t s_rs, int64_t s_cs, const void *z, int64_t z_rs, int64_t z_cs,
                       int f64, int64_t m, int64_t n, int bits, int64_t r0, int64_t r1, double *peak, int64_t *bad) {
    if (!f16_args_ok(s, m, n, bits) || !peak || !bad || r0 < 0 || r0 > r1 || r1 > m) return TMAC_P_E_ARGS;
    double kb = (double)((1 << bits) - 1) / 2.0, zero = (double)(1 << (bits - 1)), top = 0.0;
    *bad = -1;
    for (int64_t r = r0; r < r1; r++)
        for (int64_t g = 0; g < n; g++) {
            double sv = load_f(s, f64, r * s_rs + g * s_cs), zv = z ? load_f(z, f64, r * z_rs + g * z_cs) : zero;
            if (!isfinite(sv) || !isfinite(zv)) {
                *bad = r * n + g;
                return TMAC_P_E_NONFINITE;
            }
            double half = fabs(sv / 2.0), offset = fabs(sv * (kb - zv));
            top = half > top ? half : top;
            top = offset > top ? offset : top;
        }
    *peak = top;
    return TMAC_P_OK;
}

int tmac_pack_f16_scales(const void *s, int64_t s_rs, int64_t s_cs, const void *z, int64_t z_rs, int64_t z_cs,
                         int f64, int64_t m, int64_t n, int bits, double tensor_scale, int64_t t0, int64_t t1,
                         uint16_t *out, int64_t out_len, int64_t *bad) {
    if (!f16_args_ok(s, m, n, bits) || !out || !bad || !tile_range_ok(m, t0, t1)) return TMAC_P_E_ARGS;
    if (!(tensor_scale > 0.0) || !isfinite(tensor_scale) || out_len < (t1 - t0) * n * 2 * TMAC_P_TILE_ROWS)
        return TMAC_P_E_ARGS;
    double kb = (double)((1 << bits) - 1) / 2.0, zero = (double)(1 << (bits - 1));
    *bad = -1;
    for (int64_t t = t0; t < t1; t++)
        for (int64_t g = 0; g < n; g++) {
            uint16_t *pair = out + ((t - t0) * n + g) * 2 * TMAC_P_TILE_ROWS; /* (2, 64): sh, c */
            for (int rr = 0; rr < TMAC_P_TILE_ROWS; rr++) {
                int64_t r = t * TMAC_P_TILE_ROWS + rr;
                if (r >= m) {
                    pair[rr] = pair[TMAC_P_TILE_ROWS + rr] = 0;
                    continue;
                }
                double sv = load_f(s, f64, r * s_rs + g * s_cs), zv = z ? load_f(z, f64, r * z_rs + g * z_cs) : zero;
                if (!isfinite(sv) || !isfinite(zv)) {
                    *bad = r * n + g;
                    return TMAC_P_E_NONFINITE;
                }
                uint16_t sh = f64_to_f16(sv / 2.0 / tensor_scale), c = f64_to_f16(sv * (kb - zv) / tensor_scale);
                if ((sh & 0x7C00) == 0x7C00 || (c & 0x7C00) == 0x7C00) {
                    *bad = r * n + g;
                    return TMAC_P_E_F16RANGE;
                }
                pair[rr] = sh;
                pair[TMAC_P_TILE_ROWS + rr] = c;
            }
        }
    return TMAC_P_OK;
}

int tmac_pack_pairs(const void *a, const void *b, int64_t row_stride, int elem_size, int64_t m, int64_t n,
                    int64_t t0, int64_t t1, void *out, int64_t out_len) {
    if (!a || !b || !out || (elem_size != 1 && elem_size != 2) || n < 1 || n > TMAC_P_MAX_K || row_stride < n)
        return TMAC_P_E_ARGS;
    if (!tile_range_ok(m, t0, t1) || out_len < (t1 - t0) * n * 2 * TMAC_P_TILE_ROWS) return TMAC_P_E_ARGS;
    const uint8_t *src[2] = {(const uint8_t *)a, (const uint8_t *)b};
    uint8_t *dst = (uint8_t *)out;
    size_t es = (size_t)elem_size;
    for (int64_t t = t0; t < t1; t++)
        for (int64_t g = 0; g < n; g++)
            for (int h = 0; h < 2; h++) {
                uint8_t *row = dst + (((t - t0) * n + g) * 2 + h) * TMAC_P_TILE_ROWS * (int64_t)es; /* (64,) */
                for (int rr = 0; rr < TMAC_P_TILE_ROWS; rr++) {
                    int64_t r = t * TMAC_P_TILE_ROWS + rr;
                    if (r < m)
                        memcpy(row + rr * (int64_t)es, src[h] + (r * row_stride + g) * (int64_t)es, es);
                    else
                        memset(row + rr * (int64_t)es, 0, es);
                }
            }
    return TMAC_P_OK;
}
