// The packed matrix product of the fast-generation kernel: y = init + W x for the row blocks of one packed matrix
// (layout in wavenet_kernel.h and kernel.py), with the accumulators held in ymm registers.
#pragma once
#include <immintrin.h>
#include <stdint.h>

#include "wavenet_kernel.h"

// y[c*ldy + r] = init[c*ld_init + r] (or 0) + sum over parts p, inputs i of W[r, p, i] * xs[p][c*ldx + i]
// for the RY*8 rows of one packed block and NC columns.
struct Inputs {
    const float* x[8];
    int32_t n[8];
    int32_t parts, ldx;
};

template <int RY, int NC>
static inline void block_kernel(const float* __restrict w, const Inputs& in, int c0,
                                const float* init, int ld_init, float* y, int ldy) {
    // every loop over c and r is unrolled so that the accumulators live in registers only (without the pragmas GCC
    // kept a copy of them on the stack, stored at every iteration)
    __m256 acc[NC][RY];
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c)
#pragma GCC unroll 8
        for (int r = 0; r < RY; ++r)
            acc[c][r] = init ? _mm256_loadu_ps(init + (int64_t)(c0 + c) * ld_init + 8 * r) : _mm256_setzero_ps();
    for (int p = 0; p < in.parts; ++p) {
        const float* x = in.x[p] + (int64_t)c0 * in.ldx;
        const int n = in.n[p];
        for (int i = 0; i < n; ++i) {
            // 1 KB ahead of the weight stream: it pays where the weights come from L3 or DRAM
#pragma GCC unroll 8
            for (int r = 0; r < RY; r += 2) _mm_prefetch((const char*)(w + 256 + 8 * r), _MM_HINT_T0);
            __m256 wv[RY];
#pragma GCC unroll 8
            for (int r = 0; r < RY; ++r) wv[r] = _mm256_loadu_ps(w + 8 * r);
#pragma GCC unroll 8
            for (int c = 0; c < NC; ++c) {
                const __m256 xb = _mm256_broadcast_ss(x + (int64_t)c * in.ldx + i);
#pragma GCC unroll 8
                for (int r = 0; r < RY; ++r) acc[c][r] = _mm256_fmadd_ps(wv[r], xb, acc[c][r]);
            }
            w += 8 * RY;
        }
    }
#pragma GCC unroll 8
    for (int c = 0; c < NC; ++c)
#pragma GCC unroll 8
        for (int r = 0; r < RY; ++r) _mm256_storeu_ps(y + (int64_t)(c0 + c) * ldy + 8 * r, acc[c][r]);
}

template <int RY>
static void block_columns(const float* w, const Inputs& in, int B, const float* init, int ld_init, float* y, int ldy) {
    // column chunks small enough that RY*NC accumulators stay in the 16 ymm registers
    constexpr int NC = RY >= 8 ? 1 : RY >= 4 ? 2 : RY >= 2 ? 4 : 8;
    int c = 0;
    for (; c + NC <= B; c += NC) block_kernel<RY, NC>(w, in, c, init, ld_init, y, ldy);
    switch (B - c) {
        case 0: break;
        case 1: block_kernel<RY, 1>(w, in, c, init, ld_init, y, ldy); break;
        case 2: if constexpr (NC > 2) block_kernel<RY, 2>(w, in, c, init, ld_init, y, ldy); break;
        case 3: if constexpr (NC > 3) block_kernel<RY, 3>(w, in, c, init, ld_init, y, ldy); break;
        case 4: if constexpr (NC > 4) block_kernel<RY, 4>(w, in, c, init, ld_init, y, ldy); break;
        case 5: if constexpr (NC > 5) block_kernel<RY, 5>(w, in, c, init, ld_init, y, ldy); break;
        case 6: if constexpr (NC > 6) block_kernel<RY, 6>(w, in, c, init, ld_init, y, ldy); break;
        case 7: if constexpr (NC > 7) block_kernel<RY, 7>(w, in, c, init, ld_init, y, ldy); break;
    }
}

// y[:, rows of blocks [b0, b1)] = init + M x, for all B columns. y, init point at row 0 of column 0.
static void matmul_blocks(const WNModel* m, const WNMatrix& M, int b0, int b1, const Inputs& in, int B,
                          const float* init, int ld_init, float* y, int ldy) {
    const int rb = 8 * M.ry;
    for (int blk = b0; blk < b1; ++blk) {
        const int r0 = blk * rb;
        const int rows = M.rows - r0 < rb ? M.rows - r0 : rb;
        const float* w = m->weights + M.offset + (int64_t)r0 * M.in;
        const float* ini = init ? init + r0 : nullptr;
        float* yy = y + r0;
        switch (rows / 8) {
            case 1: block_columns<1>(w, in, B, ini, ld_init, yy, ldy); break;
            case 2: block_columns<2>(w, in, B, ini, ld_init, yy, ldy); break;
            case 3: block_columns<3>(w, in, B, ini, ld_init, yy, ldy); break;
            case 4: block_columns<4>(w, in, B, ini, ld_init, yy, ldy); break;
            case 5: block_columns<5>(w, in, B, ini, ld_init, yy, ldy); break;
            case 6: block_columns<6>(w, in, B, ini, ld_init, yy, ldy); break;
            case 7: block_columns<7>(w, in, B, ini, ld_init, yy, ldy); break;
            case 8: block_columns<8>(w, in, B, ini, ld_init, yy, ldy); break;
        }
    }
}

static inline int n_blocks(const WNMatrix& M) { return (M.rows + 8 * M.ry - 1) / (8 * M.ry); }
