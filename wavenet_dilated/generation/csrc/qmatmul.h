// The int8 × int8 products of the w8a8 precision (WN_W8A8): int8 weights with a scale per row, int8 activations with
// a scale per vector, exact int32 sums (kernel.py and precision.py document the model this computes).
//
// Activations. A vector x (one column of one part of a product's input: a layer input x_t of R channels, or a gate
// output z of the thread's channels) is stored as codes q = rint(x * (127 / max|x|)) in [-127, 127] with the scale
// s = max|x| / 127 (all zero when max|x| is 0), or, for z (|z| < 1), q = rint(127 z) with s = 1/127. The sum of the
// codes rides along.
//
// Weights. A matrix is packed in blocks of 16·nv rows (nv "tiles" of 16 rows); a block is, for each group of 4
// inputs g, nv tiles of 64 bytes: byte 4·r + k of tile v is u = w[16·v + r][4·g + k] + 128 (in [1, 255]), so that one
// vpdpbusd multiplies a tile by 4 broadcast activation codes. Rows past the matrix's end are u = 128 (w = 0).
// Sums: sum_i u_i q_i = sum_i w_i q_i + 128 sum_i q_i, so each part's int32 accumulators start at -128·sum(q).
//
// A product: y[c][r] = init[c][r] + rowscale[r] · sum over parts p of s_p[c] · (sum_i w[r][p, i] q_p[c][i]), the
// int32 sums exact on every ISA; AVX-512 VNNI (and AVX-VNNI) run vpdpbusd, other targets the same integer arithmetic
// on 32-bit lanes.
#pragma once
#include <stdint.h>
#include <string.h>

#include "simd.h"
#include "wavenet_kernel.h"

#define WN_QTILE 16      // rows per tile
#define WN_QTILE_BYTES 64

#if defined(__AVX512VNNI__) && WN_W == 16
#define WN_QDOT "avx512-vnni"
#elif defined(__AVXVNNI__) && WN_W == 8
#define WN_QDOT "avx-vnni"
#else
#define WN_QDOT "int32 lanes"
#endif

// ------------------------------------------------------------------------------------- quantising activations
// q = rint(clamp(x * mul, -127, 127)) for x[0, n), stored as int8; returns the sum of the codes.
static inline int32_t quantize_scaled(const float* x, int n, float mul, int8_t* q) {
    vi acc{};
    const vf k = splat(mul), lim = splat(127.0f);
    int i = 0;
    for (; i + WN_W <= n; i += WN_W) {
        const vi c = __builtin_convertvector(round_nearest(vmin(vmax(loadv(x + i) * k, -lim), lim)), vi);
        acc += c;
#if WN_W == 16
        _mm_storeu_si128((__m128i*)(q + i), _mm512_cvtepi32_epi8((__m512i)c));
#else
        for (int j = 0; j < WN_W; ++j) q[i + j] = (int8_t)c[j];
#endif
    }
    int32_t lanes[WN_W];
    memcpy(lanes, &acc, sizeof acc);
    for (int w = WN_W / 2; w > 0; w /= 2)   // pairwise: integer sums, any order gives the same
        for (int j = 0; j < w; ++j) lanes[j] += lanes[j + w];
    int32_t s = lanes[0];
    for (; i < n; ++i) {
        float v = x[i] * mul;
        v = v > 127.0f ? 127.0f : v < -127.0f ? -127.0f : v;
        const int32_t c = (int32_t)__builtin_rintf(v);
        q[i] = (int8_t)c;
        s += c;
    }
    return s;
}

// codes of x[0, n) with their scale and code sum: q = rint(x * (127 / max|x|)) (|x * 127 / max|x|| <= 127 up to one
// rounding, so the clamp of quantize_scaled never moves a code), scale max|x| / 127; all zero when max|x| is 0.
static inline void quantize_dynamic(const float* x, int n, int8_t* q, float* scale, int32_t* sum) {
    vf top{};
    int i = 0;
    for (; i + WN_W <= n; i += WN_W) {
        const vf v = loadv(x + i);
        top = vmax(top, vmax(v, -v));
    }
    top = top == top ? top : vf{};   // a lane that saw a NaN counts as 0, as in a scalar max from 0
    float m = hmax(top);
    for (; i < n; ++i) m = __builtin_fabsf(x[i]) > m ? __builtin_fabsf(x[i]) : m;
    if (!(m > 0.0f)) {   // zero (or not a number: nothing finite to scale)
        memset(q, 0, n);
        *scale = 0.0f;
        *sum = 0;
        return;
    }
    *scale = m / 127.0f;
    *sum = quantize_scaled(x, n, 127.0f / m, q);
}

// codes of a gate output z[0, n) (|z| <= 1): q = rint(127 z), clamped; returns their sum.
static inline int32_t quantize_unit(const float* z, int n, int8_t* q) { return quantize_scaled(z, n, 127.0f, q); }

// ------------------------------------------------------------------------------------- the product
// The quantised input of a product: part p of column c has codes q[p] + c·ldq (n bytes), scale scale[p][c·lds] and
// code sum sum[p][c·lds]; the parts meet the matrix's inputs from input 4·g0 on (0: all of them).
struct QInputs {
    const int8_t* q[8];
    const float* scale[8];
    const int32_t* sum[8];
    int32_t parts, n, ldq, lds;
    int32_t g0 = 0;
};

// acc += tile(u) · broadcast(4 codes): lanes are rows, 4 products each.
static inline vi qdot(vi acc, const uint8_t* u, int32_t codes) {
#if defined(__AVX512VNNI__) && WN_W == 16
    return (vi)_mm512_dpbusd_epi32((__m512i)acc, load_as<__m512i>(u), _mm512_set1_epi32(codes));
#elif defined(__AVXVNNI__) && WN_W == 8
    return (vi)_mm256_dpbusd_avx_epi32((__m256i)acc, load_as<__m256i>(u), _mm256_set1_epi32(codes));
#else
    const vu words = load_as<vu>(u);
    const vi w0 = (vi)(words & 0xffu), w1 = (vi)((words >> 8) & 0xffu), w2 = (vi)((words >> 16) & 0xffu),
             w3 = (vi)(words >> 24);
    return acc + w0 * (int32_t)(int8_t)codes + w1 * (int32_t)(int8_t)(codes >> 8) +
           w2 * (int32_t)(int8_t)(codes >> 16) + w3 * (int32_t)(int8_t)(codes >> 24);
#endif
}

// One block of NT tiles (16·NT rows) for NC columns starting at c0. rows: the block's rows that exist.
// ACC: add the exact int32 sums to yi (B, ldyi) instead (qmatmul_acc), rows past `rows` included (their sums are 0).
template <int NT, int NC, bool ACC>
static inline void qblock_kernel(const uint8_t* __restrict w, const QInputs& in, int c0, int rows, const float* init,
                                 int ld_init, const float* rowscale, float* y, int ldy, int32_t* yi) {
    constexpr int VT = WN_QTILE / WN_W;    // vectors per tile
    constexpr int NV = NT * VT;            // vectors per column
    // few accumulators: a second set for the odd input groups, so that enough vpdpbusd chains are in flight
    constexpr int NS = NC * NV <= 4 ? 2 : 1;
    const int groups = in.n / 4;
    vf part[NC][NV];
    for (int p = 0; p < in.parts; ++p) {
        vi acc[NS][NC][NV];
        int32_t xw[NS][NC];
#pragma GCC unroll 12
        for (int c = 0; c < NC; ++c) {
            const vi start = vi{} + (-128 * in.sum[p][(int64_t)(c0 + c) * in.lds]);
#pragma GCC unroll 16
            for (int v = 0; v < NV; ++v) {
                acc[0][c][v] = start;
                if constexpr (NS > 1) acc[1][c][v] = vi{};
            }
        }
        const int8_t* xq = in.q[p] + (int64_t)c0 * in.ldq;
        const uint8_t* wp = w + ((int64_t)in.g0 + (int64_t)p * groups) * NT * WN_QTILE_BYTES;
        int g = 0;
        for (; g + NS <= groups; g += NS) {
#pragma GCC unroll 2
            for (int k = 0; k < NS; ++k)
#pragma GCC unroll 12
                for (int c = 0; c < NC; ++c) memcpy(&xw[k][c], xq + (int64_t)c * in.ldq + 4 * (g + k), 4);
#pragma GCC unroll 2
            for (int k = 0; k < NS; ++k)
#pragma GCC unroll 16
                for (int v = 0; v < NV; ++v) {
                    const uint8_t* u = wp + k * NT * WN_QTILE_BYTES + v * (WN_W * 4);
#pragma GCC unroll 12
                    for (int c = 0; c < NC; ++c) acc[k][c][v] = qdot(acc[k][c][v], u, xw[k][c]);
                }
            wp += NS * NT * WN_QTILE_BYTES;
        }
        if constexpr (NS > 1) {
            if (g < groups) {   // an odd group left
#pragma GCC unroll 12
                for (int c = 0; c < NC; ++c) memcpy(&xw[0][c], xq + (int64_t)c * in.ldq + 4 * g, 4);
#pragma GCC unroll 16
                for (int v = 0; v < NV; ++v)
#pragma GCC unroll 12
                    for (int c = 0; c < NC; ++c) acc[0][c][v] = qdot(acc[0][c][v], wp + v * (WN_W * 4), xw[0][c]);
            }
#pragma GCC unroll 12
            for (int c = 0; c < NC; ++c)
#pragma GCC unroll 16
                for (int v = 0; v < NV; ++v) acc[0][c][v] += acc[1][c][v];
        }
        if constexpr (ACC) {
#pragma GCC unroll 12
            for (int c = 0; c < NC; ++c)
#pragma GCC unroll 16
                for (int v = 0; v < NV; ++v) {
                    int32_t* yv = yi + (int64_t)(c0 + c) * ldy + v * WN_W;
                    const vi t = load_as<vi>(yv) + acc[0][c][v];
                    memcpy(yv, &t, sizeof t);
                }
            continue;
        }
#pragma GCC unroll 12
        for (int c = 0; c < NC; ++c) {
            const vf s = splat(in.scale[p][(int64_t)(c0 + c) * in.lds]);
#pragma GCC unroll 16
            for (int v = 0; v < NV; ++v) {
                const vf a = __builtin_convertvector(acc[0][c][v], vf);
                part[c][v] = p == 0 ? a * s : fmadd(a, s, part[c][v]);
            }
        }
    }
    if constexpr (ACC) return;
    for (int c = 0; c < NC; ++c) {
        float* yc = y + (int64_t)(c0 + c) * ldy;
        const float* ini = init ? init + (int64_t)(c0 + c) * ld_init : nullptr;
#pragma GCC unroll 16
        for (int v = 0; v < NV; ++v) {
            const int r = v * WN_W;
            if (r >= rows) break;
            if (r + WN_W <= rows) {
                store(yc + r, fmadd(in.parts ? part[c][v] : vf{}, loadv(rowscale + r), ini ? loadv(ini + r) : vf{}));
            } else {
                for (int k = 0; k < rows - r; ++k)
                    yc[r + k] = __builtin_fmaf(in.parts ? part[c][v][k] : 0.0f, rowscale[r + k], ini ? ini[r + k] : 0.0f);
            }
        }
    }
}

// Columns per call: NT·NC int accumulators plus the fp32 parts within the registers (32 vectors with AVX-512).
template <int NT>
struct QColumns {
    static constexpr int NC = NT >= 3 ? 2 : NT == 2 ? 4 : 8;
};

template <int NT, bool ACC>
static void qblock_columns(const uint8_t* w, const QInputs& in, int B, int rows, const float* init, int ld_init,
                           const float* rowscale, float* y, int ldy, int32_t* yi) {
    constexpr int NC = QColumns<NT>::NC;
#define WN_QBLOCK(n) qblock_kernel<NT, n, ACC>(w, in, c, rows, init, ld_init, rowscale, y, ldy, yi)
    int c = 0;
    for (; c + NC <= B; c += NC) WN_QBLOCK(NC);
    switch (B - c) {
        case 0: break;
        case 1: WN_QBLOCK(1); break;
        case 2: if constexpr (NC > 2) WN_QBLOCK(2); break;
        case 3: if constexpr (NC > 3) WN_QBLOCK(3); break;
        case 4: if constexpr (NC > 4) WN_QBLOCK(4); break;
        case 5: if constexpr (NC > 5) WN_QBLOCK(5); break;
        case 6: if constexpr (NC > 6) WN_QBLOCK(6); break;
        case 7: if constexpr (NC > 7) WN_QBLOCK(7); break;
    }
#undef WN_QBLOCK
}

// y[c][rows of M] = init + M x for the B columns of a quantised input: M packed as above (WNMatrix.ry = tiles per
// block, WNMatrix.offset in bytes of WNModel.weights), its row scales at WNModel.scales + M.scale_offset.
template <bool ACC>
static void qmatmul_rows(const WNModel* m, const WNMatrix& M, const QInputs& in, int B, const float* init,
                         int ld_init, float* y, int ldy, int32_t* yi) {
    const int rb = WN_QTILE * M.ry;
    const int groups = M.in / 4;
    for (int r0 = 0; r0 < M.rows; r0 += rb) {
        const uint8_t* w = (const uint8_t*)m->weights + M.offset + (int64_t)(r0 / WN_QTILE) * groups * WN_QTILE_BYTES;
        const int rows = M.rows - r0 < rb ? M.rows - r0 : rb;
        const float* sc = m->scales + M.scale_offset + r0;
        const float* ini = init ? init + r0 : nullptr;
        float* yr = ACC ? nullptr : y + r0;
        int32_t* yir = ACC ? yi + r0 : nullptr;
        switch ((rows + WN_QTILE - 1) / WN_QTILE) {
            case 1: qblock_columns<1, ACC>(w, in, B, rows, ini, ld_init, sc, yr, ldy, yir); break;
            case 2: qblock_columns<2, ACC>(w, in, B, rows, ini, ld_init, sc, yr, ldy, yir); break;
            case 3: qblock_columns<3, ACC>(w, in, B, rows, ini, ld_init, sc, yr, ldy, yir); break;
            case 4: qblock_columns<4, ACC>(w, in, B, rows, ini, ld_init, sc, yr, ldy, yir); break;
        }
    }
}

static void qmatmul(const WNModel* m, const WNMatrix& M, const QInputs& in, int B, const float* init, int ld_init,
                    float* y, int ldy) {
    qmatmul_rows<false>(m, M, in, B, init, ld_init, y, ldy, nullptr);
}

// y (B, rows) = init + rowscale * sum over parts of scale_p * (W_p q_p) for one (rows x n_in) matrix packed by
// packing.py's pack_tiles (`tiles` per block) at byte 0 of `packed`: codes (B, n_in) column-major in `parts` equal
// parts, scale and sum (B, parts). The product on its own, for wn_qproduct and the portable test.
static inline void qproduct(const void* packed, int rows, int n_in, int tiles, const float* rowscale,
                            const int8_t* codes, const float* scale, const int32_t* sum, int parts, int B,
                            const float* init, float* y) {
    WNModel m;
    memset(&m, 0, sizeof m);
    m.weights = packed;
    m.scales = rowscale;
    WNMatrix M;
    memset(&M, 0, sizeof M);
    M.rows = rows; M.in = n_in; M.ry = tiles;
    QInputs in;
    in.parts = parts; in.n = parts > 0 ? n_in / parts : 0; in.ldq = n_in; in.lds = parts;
    for (int p = 0; p < parts && p < 8; ++p) {
        in.q[p] = codes + (int64_t)p * in.n; in.scale[p] = scale + p; in.sum[p] = sum + p;
    }
    qmatmul(&m, M, in, B, init, rows, y, rows);
}

// yi[c][0, rows rounded up to 16) += the exact int32 sums sum_i w[r][i] q[c][i] of the parts of `in` (all parts of
// one product taken this way, in any order and any number of calls, sum to the same integers): the whole of
// sum_p s_p (W_p q_p) when every part has the same scale s, which qfinish then applies.
static void qmatmul_acc(const WNModel* m, const WNMatrix& M, const QInputs& in, int B, int32_t* yi, int ldyi) {
    qmatmul_rows<true>(m, M, in, B, nullptr, 0, nullptr, ldyi, yi);
}

// y[c][r] = init[c][r] + rowscale[r] · (s[c] · yi[c][r]) for the rows of M: what qmatmul gives for one part with
// those integer sums, to the bit.
static void qfinish(const WNModel* m, const WNMatrix& M, const int32_t* yi, int ldyi, const float* s, int B,
                    const float* init, int ld_init, float* y, int ldy) {
    const float* rowscale = m->scales + M.scale_offset;
    for (int c = 0; c < B; ++c) {
        const vf sc = splat(s[c]);
        int r = 0;
        for (; r + WN_W <= M.rows; r += WN_W) {
            const vf a = __builtin_convertvector(load_as<vi>(yi + (int64_t)c * ldyi + r), vf) * sc;
            store(y + (int64_t)c * ldy + r, fmadd(a, loadv(rowscale + r), loadv(init + (int64_t)c * ld_init + r)));
        }
        for (; r < M.rows; ++r) {
            const float a = (float)yi[(int64_t)c * ldyi + r] * s[c];
            y[(int64_t)c * ldy + r] = __builtin_fmaf(a, rowscale[r], init[(int64_t)c * ld_init + r]);
        }
    }
}
