// The packed matrix product of the fast-generation kernel: y = init + W x for the row blocks of one packed matrix
// (layout in wavenet_kernel.h and kernel.py), with the accumulators held in vector registers (simd.h). Weights are
// fp32, bf16 or int8 with a scale per row (WNModel.precision); the sums are fp32 whatever the weights.
#pragma once
#include <stdint.h>

#include "simd.h"
#include "wavenet_kernel.h"

// y[c*ldy + r] = init[c*ld_init + r] (or 0) + scale[r] * sum over parts p, inputs i of W[r, p, i] * xs[p][c*ldx + i]
// for the RY*8 rows of one packed block and NC columns (scale: bf16 and int8 weights, per row; fp32: none).
struct Inputs {
    const float* x[8];
    int32_t n[8];
    int32_t parts, ldx;
};

// Accumulators of 8*RY rows: NV full vectors, then one 8-lane vector when the lanes do not divide the rows (16 lanes).
template <int RY>
struct Rows {
    static constexpr int NV = 8 * RY / WN_W, NH = (8 * RY % WN_W) / 8, NVA = NV > 0 ? NV : 1, NHA = NH > 0 ? NH : 1;
};

template <int RY, int NC, class T>
static inline void block_kernel(const T* __restrict w, const Inputs& in, int c0, const float* init, int ld_init,
                                const float* scale, float* y, int ldy) {
    constexpr int NV = Rows<RY>::NV, NH = Rows<RY>::NH;
    constexpr bool scaled = sizeof(T) < 4;   // bf16, int8: init is added after the scale: the sums start at 0
    // every loop over c and r is unrolled so that the accumulators live in registers only (without the pragmas GCC
    // kept a copy of them on the stack, stored at every iteration)
    vf acc[NC][Rows<RY>::NVA];
    v8 acch[NC][Rows<RY>::NHA];
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c) {
        const float* ini = init ? init + (int64_t)(c0 + c) * ld_init : nullptr;
#pragma GCC unroll 8
        for (int r = 0; r < NV; ++r) acc[c][r] = ini && !scaled ? loadv(ini + WN_W * r) : vf{};
        if constexpr (NH > 0) acch[c][0] = ini && !scaled ? load_as<v8>(ini + WN_W * NV) : v8{};
    }
    for (int p = 0; p < in.parts; ++p) {
        const float* x = in.x[p] + (int64_t)c0 * in.ldx;
        const int n = in.n[p];
        for (int i = 0; i < n; ++i) {
            // 1 KB ahead of the weight stream: it pays where the weights come from L3 or DRAM
#pragma GCC unroll 8
            for (int r = 0; r < 8 * RY * (int)sizeof(T); r += 64) prefetch((const char*)w + 1024 + r);
            vf wv[Rows<RY>::NVA];
#pragma GCC unroll 8
            for (int r = 0; r < NV; ++r) wv[r] = load_w<vf>(w + WN_W * r);
            v8 wh{};
            if constexpr (NH > 0) wh = load_w<v8>(w + WN_W * NV);
#pragma GCC unroll 8
            for (int c = 0; c < NC; ++c) {
                const float xc = x[(int64_t)c * in.ldx + i];
                const vf xb = splat(xc);
#pragma GCC unroll 8
                for (int r = 0; r < NV; ++r) acc[c][r] = fmadd(wv[r], xb, acc[c][r]);
                if constexpr (NH > 0) acch[c][0] = fmadd(wh, splat8(xc), acch[c][0]);
            }
            w += 8 * RY;
        }
    }
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c) {
        float* yc = y + (int64_t)(c0 + c) * ldy;
        const float* ini = init ? init + (int64_t)(c0 + c) * ld_init : nullptr;
#pragma GCC unroll 8
        for (int r = 0; r < NV; ++r) {
            vf v = acc[c][r];
            if constexpr (scaled) v = fmadd(v, loadv(scale + WN_W * r), ini ? loadv(ini + WN_W * r) : vf{});
            store(yc + WN_W * r, v);
        }
        if constexpr (NH > 0) {
            v8 v = acch[c][0];
            if constexpr (scaled)
                v = fmadd(v, load_as<v8>(scale + WN_W * NV), ini ? load_as<v8>(ini + WN_W * NV) : v8{});
            store(yc + WN_W * NV, v);
        }
    }
}

// Columns per call of block_kernel: as many as keep RY*NC accumulators within about half the vector registers.
template <int RY>
struct Columns {
    static constexpr int ACC = WN_W == 16 ? 128 : WN_W == 8 ? 64 : 32;   // accumulator floats
    static constexpr int NC = ACC / (8 * RY) < 1 ? 1 : ACC / (8 * RY) > 8 ? 8 : ACC / (8 * RY);
};

template <int RY, class T>
static void block_columns(const T* w, const Inputs& in, int B, const float* init, int ld_init, const float* scale,
                          float* y, int ldy) {
    constexpr int NC = Columns<RY>::NC;
    int c = 0;
    for (; c + NC <= B; c += NC) block_kernel<RY, NC>(w, in, c, init, ld_init, scale, y, ldy);
    switch (B - c) {
        case 0: break;
        case 1: block_kernel<RY, 1>(w, in, c, init, ld_init, scale, y, ldy); break;
        case 2: if constexpr (NC > 2) block_kernel<RY, 2>(w, in, c, init, ld_init, scale, y, ldy); break;
        case 3: if constexpr (NC > 3) block_kernel<RY, 3>(w, in, c, init, ld_init, scale, y, ldy); break;
        case 4: if constexpr (NC > 4) block_kernel<RY, 4>(w, in, c, init, ld_init, scale, y, ldy); break;
        case 5: if constexpr (NC > 5) block_kernel<RY, 5>(w, in, c, init, ld_init, scale, y, ldy); break;
        case 6: if constexpr (NC > 6) block_kernel<RY, 6>(w, in, c, init, ld_init, scale, y, ldy); break;
        case 7: if constexpr (NC > 7) block_kernel<RY, 7>(w, in, c, init, ld_init, scale, y, ldy); break;
    }
}

// y[:, rows of blocks [b0, b1)] = init + M x for all B columns, weights of type T. y, init point at row 0 of column 0.
template <class T>
static void matmul_typed(const T* weights, const float* scales, const WNMatrix& M, int b0, int b1, const Inputs& in,
                         int B, const float* init, int ld_init, float* y, int ldy) {
    const int rb = 8 * M.ry;
    for (int blk = b0; blk < b1; ++blk) {
        const int r0 = blk * rb;
        const int rows = M.rows - r0 < rb ? M.rows - r0 : rb;
        const T* w = weights + M.offset + (int64_t)r0 * M.in;
        const float* sc = scales ? scales + M.scale_offset + r0 : nullptr;
        const float* ini = init ? init + r0 : nullptr;
        float* yy = y + r0;
        switch (rows / 8) {
            case 1: block_columns<1>(w, in, B, ini, ld_init, sc, yy, ldy); break;
            case 2: block_columns<2>(w, in, B, ini, ld_init, sc, yy, ldy); break;
            case 3: block_columns<3>(w, in, B, ini, ld_init, sc, yy, ldy); break;
            case 4: block_columns<4>(w, in, B, ini, ld_init, sc, yy, ldy); break;
            case 5: block_columns<5>(w, in, B, ini, ld_init, sc, yy, ldy); break;
            case 6: block_columns<6>(w, in, B, ini, ld_init, sc, yy, ldy); break;
            case 7: block_columns<7>(w, in, B, ini, ld_init, sc, yy, ldy); break;
            case 8: block_columns<8>(w, in, B, ini, ld_init, sc, yy, ldy); break;
        }
    }
}

// The same, for the model's weight precision.
static void matmul_blocks(const WNModel* m, const WNMatrix& M, int b0, int b1, const Inputs& in, int B,
                          const float* init, int ld_init, float* y, int ldy) {
    switch (m->precision) {
        case WN_BF16:
            matmul_typed((const bf16_t*)m->weights, m->scales, M, b0, b1, in, B, init, ld_init, y, ldy); break;
        case WN_INT8:
        case WN_W8A8:   // its output 1x1s (the others go through qmatmul.h)
            matmul_typed((const int8_t*)m->weights, m->scales, M, b0, b1, in, B, init, ld_init, y, ldy); break;
        default:
            matmul_typed((const float*)m->weights, nullptr, M, b0, b1, in, B, init, ld_init, y, ldy); break;
    }
}

static inline int n_blocks(const WNMatrix& M) { return (M.rows + 8 * M.ry - 1) / (8 * M.ry); }
