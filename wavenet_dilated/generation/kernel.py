"""The compiled per-sample loop of :mod:`wavenet_dilated.fastgen`: C++ source, build and load.

The source below is compiled on first use with the system C++ compiler (``$CXX``, else ``c++``/``g++``) into a small
shared library with a C ABI, loaded with :mod:`ctypes` — no Python headers, no torch headers, no pybind11, no ninja, so a
build takes seconds, not minutes. The library is cached under the user cache directory
(``$WAVENET_DILATED_CACHE`` or ``$XDG_CACHE_HOME/wavenet_dilated`` or ``~/.cache/wavenet_dilated``), keyed by a hash of
the source, the compiler, its flags and the CPU's feature flags (it is built with ``-march=native``), and written
atomically so concurrent first uses cannot load a half-written file.

What the kernel computes is documented in :mod:`wavenet_dilated.fastgen`; the data layout is:

* every weight matrix is *packed* in row blocks of ``8·ry`` rows: block ``i`` holds rows ``[8·ry·i, 8·ry·(i+1))`` as
  ``(in, 8·ry)`` contiguous (input-major), so a block's product is a stream of FMAs over contiguous memory
  (``ry`` is chosen from the batch size: 8 for batch 1, fewer for more columns);
* activations are ``(batch, channels)`` row-major; ring buffers are ``(slots, batch, R)``;
* the per-step additive term (conditioning projections + speaker projection + conv bias) is ``(steps, batch, L, G)``,
  or one ``(batch, L, G)`` for every step (stride 0).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["SOURCE", "FLAGS", "KernelUnavailable", "load_kernel", "cache_dir", "compiler"]

#: compiler flags; -march=native is why the CPU's feature flags are part of the cache key
FLAGS = ("-O3", "-march=native", "-std=c++17", "-fPIC", "-shared", "-pthread", "-fno-math-errno", "-fno-plt")

ABI_VERSION = 5


class KernelUnavailable(RuntimeError):
    """The compiled kernel cannot be built or loaded here (no compiler, no AVX2/FMA, build failure …)."""


SOURCE = r"""
// wavenet_dilated fast generation kernel (see wavenet_dilated/_fastgen_kernel.py). AVX2 + FMA, fp32.
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <atomic>
#include <time.h>

#define ABI_VERSION 5

extern "C" int wn_abi_version() { return ABI_VERSION; }

// ----------------------------------------------------------------------------------------------- packed matrices
struct WNMatrix {            // a packed (rows x in) matrix: blocks of 8*ry rows, each (in, rows_in_block) contiguous
    int64_t offset;          // into WNModel.weights (floats)
    int32_t rows, in, ry;    // ry: 8-float vectors per full block
    int32_t pad_;
};

struct WNModel {
    int32_t n_layers, R, G, S, K, n_out, n_out_pad, head;   // head: 0 categorical, 1 mol, 2 gaussian
    int32_t n_classes, n_mix, first_table, n_threads;
    float res_scale, log_scale_min;
    const int32_t* dilation;     // [L]
    const int32_t* col0;         // [n_threads + 1]: thread t owns gate channels [col0[t], col0[t+1]) of G/2
    const int32_t* row0;         // [n_threads + 1]: thread t owns rows [row0[t], row0[t+1]) of the first output layer
    const WNMatrix* conv_a;      // [L][nt] thread t's rows of the tanh half of the dilated conv (K*R inputs, taps
                                 //         oldest first)
    const WNMatrix* conv_b;      // [L][nt] the same rows of the sigmoid half
    const WNMatrix* skip;        // [L][nt] thread t's columns of the skip 1x1 (S x cols)
    const WNMatrix* res;         // [L][nt] thread t's columns of the residual 1x1 (R x cols), pre-scaled by
                                 //         res_scale; the last layer's is unused
    const float* weights;
    const float* res_bias;       // [L][R] pre-scaled by res_scale
    const float* skip_bias;      // [S] sum over layers of the skip biases
    const float* table;          // first_table: [K][n_classes][G]: tap j's conv weights times the embedding
    const float* embed;          // categorical: [n_classes][R]; continuous: [2][R] (weight, bias of the 1x1)
    const WNMatrix* out1;        // [nt] thread t's rows of the first output 1x1 (S x S, pre-scaled by skip_scale)
    const WNMatrix* out2;        // [nt] thread t's columns of the second (n_out_pad x S)
    const float* out1_bias;      // [S]
    const float* out2_bias;      // [n_out_pad]
    const int32_t* block;        // [L] steps per precomputed block of past taps (1: the layer is not blocked)
    const WNMatrix* past_a;      // [L][nt] blocked layers: thread t's rows of the tanh half's past taps ((K-1)*R
                                 //         inputs, oldest first); conv_a then holds only the current tap (R inputs)
    const WNMatrix* past_b;      // [L][nt] the same for the sigmoid half
};

struct WNState {
    float* rings;                // all layers' ring buffers, (slots_l, B, R) each, zero-initialised
    const int64_t* ring_offset;  // [L]
    int32_t* class_ring;         // first_table: ((K-1)*d0 + 1, B) classes of layer 0, -1 = before the start
    int64_t* prev_class;         // [B] the last sample (categorical)
    float* prev_value;           // [B] the last sample (continuous)
    float* pre;                  // blocked layers' past-tap sums for the current block, (block_l, B, G) each
    const int64_t* pre_offset;   // [L]
    int64_t step;                // samples generated so far
    int32_t batch;
};

// ----------------------------------------------------------------------------------------------- math
static inline __m256 exp256(__m256 x) {
    // Cephes expf: exp(x) = 2^n * p(r), |r| <= ln2/2; about 1 ulp on the clamped range
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500E-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507E-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073E-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894E-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459E-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201E-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(n));
}

// z = tanh(a) * sigmoid(b) = (e^{2a} - 1) / ((e^{2a} + 1)(1 + e^{-b})), arguments clamped to [-87, 40] so that
// nothing overflows; at the clamps tanh and sigmoid are 1 (or 0) to far below fp32 resolution.
static inline void gate(const float* a, const float* b, float* z, int n) {
    const __m256 one = _mm256_set1_ps(1.0f), lo = _mm256_set1_ps(-87.0f), hi = _mm256_set1_ps(40.0f);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 va = _mm256_loadu_ps(a + i), vb = _mm256_loadu_ps(b + i);
        __m256 ea = exp256(_mm256_min_ps(_mm256_max_ps(_mm256_add_ps(va, va), lo), hi));
        __m256 eb = exp256(_mm256_min_ps(_mm256_max_ps(_mm256_sub_ps(_mm256_setzero_ps(), vb), lo), hi));
        __m256 num = _mm256_sub_ps(ea, one);
        __m256 den = _mm256_mul_ps(_mm256_add_ps(ea, one), _mm256_add_ps(eb, one));
        _mm256_storeu_ps(z + i, _mm256_div_ps(num, den));
    }
    for (; i < n; ++i) z[i] = tanhf(a[i]) / (1.0f + expf(-b[i]));
}

// ----------------------------------------------------------------------------------------------- micro-kernel
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
            // 1 KB ahead of the weight stream (measured: +5-15 % where the weights come from L3 or DRAM)
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

// ----------------------------------------------------------------------------------------------- threads
// Each thread publishes how many barriers it has reached in a cache line of its own and waits until every other
// thread's count has caught up: one store to a line it owns and one read per other thread, no shared atomic
// read-modify-write (a fetch_add on one shared counter measured ~13 % of a 2-thread small step, spin included).
struct alignas(64) Flag {
    std::atomic<int64_t> epoch{0};
    char pad_[64 - sizeof(std::atomic<int64_t>)];
};

struct Barrier {
    Flag flag[64];
    int n = 1;
    void wait(int tid, int64_t& epoch) {
        if (n == 1) return;
        ++epoch;
        flag[tid].epoch.store(epoch, std::memory_order_release);
        for (int q = 0; q < n; ++q) {
            if (q == tid) continue;
            int spins = 0;
            while (flag[q].epoch.load(std::memory_order_acquire) < epoch) {
                if (++spins < 4000) _mm_pause();
                else sched_yield();     // a busy machine: do not burn the time slice of the thread we wait for
            }
        }
    }
};

// ----------------------------------------------------------------------------------------------- sampling
static const double SQRT2 = 1.41421356237309504880;

static double erfinv_d(double y) {
    // Giles (2010) initial approximation, refined by two Newton steps on erf (libm): ~1e-15 relative
    if (y <= -1.0) return -INFINITY;
    if (y >= 1.0) return INFINITY;
    double w = -log((1.0 - y) * (1.0 + y)), p;
    if (w < 6.25) {
        w -= 3.125;
        p = -3.6444120640178196996e-21; p = -1.685059138182016589e-19 + p * w; p = 1.2858480715256400167e-18 + p * w;
        p = 1.115787767802518096e-17 + p * w; p = -1.333171662854620906e-16 + p * w; p = 2.0972767875968561637e-17 + p * w;
        p = 6.6376381343583238325e-15 + p * w; p = -4.0545662729752068639e-14 + p * w;
        p = -8.1519341976054721522e-14 + p * w;
        p = 2.6335093153082322977e-12 + p * w; p = -1.2975133253453532498e-11 + p * w;
        p = -5.4154120542946279317e-11 + p * w;
        p = 1.051212273321532285e-09 + p * w; p = -4.1126339803469836976e-09 + p * w; p = -2.9070369957882005086e-08 + p * w;
        p = 4.2347877827932403518e-07 + p * w; p = -1.3654692000834678645e-06 + p * w;
        p = -1.3882523362786468719e-05 + p * w;
        p = 0.0001867342080340571352 + p * w; p = -0.00074070253416626697512 + p * w; p = -0.0060336708714301490533 + p * w;
        p = 0.24015818242558961693 + p * w; p = 1.6536545626831027356 + p * w;
    } else if (w < 16.0) {
        w = sqrt(w) - 3.25;
        p = 2.2137376921775787049e-09; p = 9.0756561938885390979e-08 + p * w; p = -2.7517406297064545428e-07 + p * w;
        p = 1.8239629214389227755e-08 + p * w; p = 1.5027403968909827627e-06 + p * w; p = -4.013867526981545969e-06 + p * w;
        p = 2.9234449089955446044e-06 + p * w; p = 1.2475304481671778723e-05 + p * w; p = -4.7318229009055733981e-05 + p * w;
        p = 6.8284851459573175448e-05 + p * w; p = 2.4031110387097893999e-05 + p * w; p = -0.0003550375203628474796 + p * w;
        p = 0.00095328937973738049703 + p * w; p = -0.0016882755560235047313 + p * w; p = 0.0024914420961078508066 + p * w;
        p = -0.0037512085075692412107 + p * w; p = 0.005370914553590063617 + p * w; p = 1.0052589676941592334 + p * w;
        p = 3.0838856104922207635 + p * w;
    } else {
        w = sqrt(w) - 5.0;
        p = -2.7109920616438573243e-11; p = -2.5556418169965252055e-10 + p * w; p = 1.5076572693500548083e-09 + p * w;
        p = -3.7894654401267369937e-09 + p * w; p = 7.6157012080783393804e-09 + p * w;
        p = -1.4960026627149240478e-08 + p * w;
        p = 2.9147953450901080826e-08 + p * w; p = -6.7711997758452339498e-08 + p * w; p = 2.2900482228026654717e-07 + p * w;
        p = -9.9298272942317002539e-07 + p * w; p = 4.5260625972231537039e-06 + p * w;
        p = -1.9681778105531670567e-05 + p * w;
        p = 7.5995277030017761139e-05 + p * w; p = -0.00021503011930044477347 + p * w;
        p = -0.00013871931833623122026 + p * w;
        p = 1.0103004648645343977 + p * w; p = 4.8499064014085844221 + p * w;
    }
    double x = p * y;
    for (int it = 0; it < 2; ++it) {
        double err = erf(x) - y;
        x -= err / (2.0 / sqrt(M_PI) * exp(-x * x));
    }
    return x;
}

// one sample from logits[n_out] with uniforms u[n_uniforms]; mirrors distributions.py operation by operation
static inline double sample_one(const WNModel* m, const float* logits, const float* u, float temperature, float* work) {
    if (m->head == 0) {
        const int n = m->n_out;
        float mx = -INFINITY;
        for (int i = 0; i < n; ++i) { work[i] = logits[i] / temperature; mx = work[i] > mx ? work[i] : mx; }
        int i = 0;
        __m256 vs = _mm256_setzero_ps();
        for (; i + 8 <= n; i += 8) {
            __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(work + i), _mm256_set1_ps(mx)));
            _mm256_storeu_ps(work + i, e);
            vs = _mm256_add_ps(vs, e);
        }
        float s8[8];
        _mm256_storeu_ps(s8, vs);
        float sum = ((s8[0] + s8[1]) + (s8[2] + s8[3])) + ((s8[4] + s8[5]) + (s8[6] + s8[7]));
        for (; i < n; ++i) { work[i] = expf(work[i] - mx); sum += work[i]; }
        const float inv = 1.0f / sum;
        double acc = 0.0;   // torch's CPU cumsum accumulates fp32 in double
        for (int j = 0; j < n; ++j) { acc += (double)(work[j] * inv); work[j] = (float)acc; }
        const float thr = u[0] * work[n - 1];
        int idx = 0;
        for (int j = 0; j < n; ++j) idx += work[j] < thr;
        return idx > n - 1 ? n - 1 : idx;
    }
    if (m->head == 1) {
        const int k = m->n_mix;
        float mx = -INFINITY;
        for (int i = 0; i < k; ++i) mx = logits[i] > mx ? logits[i] : mx;
        float sum = 0.0f;
        for (int i = 0; i < k; ++i) { work[i] = expf(logits[i] - mx); sum += work[i]; }
        double acc = 0.0;
        for (int j = 0; j < k; ++j) { acc += (double)(work[j] / sum); work[j] = (float)acc; }
        const float thr = u[0] * work[k - 1];
        int idx = 0;
        for (int j = 0; j < k; ++j) idx += work[j] < thr;
        if (idx > k - 1) idx = k - 1;
        const float mean = logits[k + idx];
        float ls = logits[2 * k + idx];
        ls = ls < m->log_scale_min ? m->log_scale_min : ls;
        const float scale = expf(ls) * temperature;
        float uu = u[1] < 1e-5f ? 1e-5f : u[1] > 1.0f - 1e-5f ? 1.0f - 1e-5f : u[1];
        float x = mean + scale * (logf(uu) - log1pf(-uu));
        return x < -1.0f ? -1.0f : x > 1.0f ? 1.0f : x;
    }
    // gaussian
    const float mean = logits[0];
    float ls = logits[1] < m->log_scale_min ? m->log_scale_min : logits[1];
    float uu = u[0] < 1e-7f ? 1e-7f : u[0] > 1.0f - 1e-7f ? 1.0f - 1e-7f : u[0];
    const float z = (float)SQRT2 * (float)erfinv_d((double)(2.0f * uu - 1.0f));
    float x = mean + expf(ls) * temperature * z;
    return x < -1.0f ? -1.0f : x > 1.0f ? 1.0f : x;
}

// ----------------------------------------------------------------------------------------------- the loop
struct Run {
    const WNModel* m;
    WNState* s;
    int64_t n_steps;
    const float* cond;          // (n, B, L, G) or (B, L, G)
    int64_t cond_stride;        // floats per step (0: the same term every step)
    const float* uniforms;      // (n, B, n_uniforms) or null when forced
    int32_t n_uniforms;
    float temperature;
    const void* forced;         // (n, B) int64 or float inputs (teacher forcing), or null
    void* samples;              // (n, B) int64 or float, or null
    float* logits_out;          // (n, B, n_out) or null
    // shared between threads: each writes its own slice, reads the others' after a barrier
    float* skip_part;           // [nt][B][S] per-thread skip sums (thread 0's starts at the summed biases)
    float* res_part;            // [2][nt][B][R] per-thread partial residual products, double-buffered by layer
    float* logit_part;          // [nt][B][n_out_pad] per-thread partial logits
    Barrier barrier;
};

static float* scratch(size_t n) {
    const size_t bytes = (n * sizeof(float) + 64 + 63) / 64 * 64;
    float* p = (float*)aligned_alloc(64, bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

// Every thread runs this loop. Thread t owns the gate channels [c0, c1): it computes those rows of the dilated conv,
// their gate, and the products of its columns of the skip and residual 1x1s. The residual products of all threads
// are summed (in thread order, so every thread gets the same bits) into the next layer's input after one barrier per
// layer; the skip sums once per sample. Every thread then computes the same logits and draws the same sample.
static void run_thread(Run* run, int tid) {
    const WNModel* m = run->m;
    WNState* s = run->s;
    const int L = m->n_layers, R = m->R, G = m->G, S = m->S, K = m->K, H = G / 2, B = s->batch;
    const int nt = m->n_threads, NO = m->n_out_pad;
    const int c0 = m->col0[tid], c1 = m->col0[tid + 1], cw = c1 - c0;
    const int s0 = m->row0[tid], s1 = m->row0[tid + 1], sw = s1 - s0;
    int64_t epoch = 0;
    int phase = 0;
    float* h = scratch((size_t)B * 2 * (cw > 0 ? cw : 1));
    float* z = scratch((size_t)B * (cw > 0 ? cw : 1));
    float* relu_skip = scratch((size_t)B * S);
    float* hidden = scratch((size_t)B * (sw > 0 ? sw : 1));
    float* logits = scratch((size_t)B * NO);
    float* work = scratch((size_t)NO + 64);
    int max_block = 1;
    for (int l = 0; l < L; ++l) max_block = m->block[l] > max_block ? m->block[l] : max_block;
    float* xpast = scratch((size_t)max_block * B * (K - 1) * R + 1);   // a block's past inputs, column-major
    int64_t* prev_i = (int64_t*)malloc(sizeof(int64_t) * B);
    float* prev_f = (float*)malloc(sizeof(float) * B);
    float* my_skip = run->skip_part + (int64_t)tid * B * S;
    const bool quantized = m->head == 0;
    for (int b = 0; b < B; ++b) { prev_i[b] = s->prev_class[b]; prev_f[b] = s->prev_value[b]; }

    for (int64_t t = 0; t < run->n_steps; ++t) {
        const int64_t step = s->step + t;
        const float* cond = run->cond + t * run->cond_stride;
        if (run->forced) {
            for (int b = 0; b < B; ++b) {
                if (quantized) prev_i[b] = ((const int64_t*)run->forced)[t * B + b];
                else prev_f[b] = ((const float*)run->forced)[t * B + b];
            }
        }
        if (m->first_table && tid == 0) {
            // layer 0's ring of classes gets this step's input; this step reads it from prev_i, later steps from here
            const int64_t P0 = (int64_t)(K - 1) * m->dilation[0] + 1;
            for (int b = 0; b < B; ++b) s->class_ring[(step % P0) * B + b] = (int32_t)prev_i[b];
        }
        for (int b = 0; b < B; ++b)
            for (int r = 0; r < S; ++r) my_skip[(int64_t)b * S + r] = tid == 0 ? m->skip_bias[r] : 0.0f;

        const float* x_prev = nullptr;    // the previous layer's input (B, R), or null for a table first layer
        for (int l = 0; l < L; ++l) {
            const int d = m->dilation[l];
            const int64_t P = (int64_t)(K - 1) * d + 1;
            const int64_t slot = step % P;
            float* ring = s->rings + s->ring_offset[l];
            float* x_now = ring + slot * B * R;   // this layer's input at this step
            const WNMatrix& Ma = m->conv_a[(int64_t)l * nt + tid];
            const WNMatrix& Mb = m->conv_b[(int64_t)l * nt + tid];
            if (l == 0 && !m->first_table) {
                // continuous input: the 1x1 embedding (every thread writes the same values)
                for (int b = 0; b < B; ++b)
                    for (int r = 0; r < R; ++r) x_now[b * R + r] = m->embed[r] * prev_f[b] + m->embed[R + r];
            } else if (l > 0) {
                // x_l = res_scale x_{l-1} + res_bias + sum over threads of W_res[:, cols_t] z_t (same order everywhere)
                const float* bias = m->res_bias + (int64_t)(l - 1) * R;
                const float* parts = run->res_part + (int64_t)((phase - 1) & 1) * nt * B * R;
                const __m256 scale = _mm256_set1_ps(m->res_scale);
                for (int b = 0; b < B; ++b) {
                    const float* xp = x_prev ? x_prev + (int64_t)b * R : m->embed + prev_i[b] * R;
                    float* xn = x_now + (int64_t)b * R;
                    for (int r = 0; r < R; r += 8) {   // R is a multiple of 8; vector loads of the other threads'
                                                       // parts keep several cache-line transfers in flight
                        __m256 v = _mm256_fmadd_ps(scale, _mm256_loadu_ps(xp + r), _mm256_loadu_ps(bias + r));
                        for (int q = 0; q < nt; ++q)
                            v = _mm256_add_ps(v, _mm256_loadu_ps(parts + ((int64_t)q * B + b) * R + r));
                        _mm256_storeu_ps(xn + r, v);
                    }
                }
            }
            if (cw > 0) {
                if (l == 0 && m->first_table) {
                    // the first layer's taps come from per-class tables: h = term + sum_j T_j[class at t - (K-1-j) d]
                    for (int b = 0; b < B; ++b) {
                        float* hb = h + (int64_t)b * 2 * cw;
                        const float* cb = cond + (int64_t)b * L * G;
                        for (int r = 0; r < cw; ++r) { hb[r] = cb[c0 + r]; hb[cw + r] = cb[H + c0 + r]; }
                        for (int j = 0; j < K; ++j) {
                            const int64_t back = (int64_t)(K - 1 - j) * d;
                            int64_t cls = back == 0 ? prev_i[b] : s->class_ring[((slot - back) % P + P) % P * B + b];
                            if (cls < 0) continue;
                            const float* row = m->table + ((int64_t)j * m->n_classes + cls) * G;
                            for (int r = 0; r < cw; ++r) { hb[r] += row[c0 + r]; hb[cw + r] += row[H + c0 + r]; }
                        }
                    }
                } else if (m->block[l] > 1) {
                    // the taps before t were inputs at least d steps ago: their products for the next nb <= d steps
                    // are one matrix product over nb*B columns, made when a block starts (weights read once per
                    // block instead of once per step); per step only the current tap is left
                    const int nb = m->block[l];
                    float* pre = s->pre + s->pre_offset[l];
                    const int KR = (K - 1) * R;
                    if (step % nb == 0) {
                        for (int i = 0; i < nb; ++i)
                            for (int j = 0; j < K - 1; ++j) {
                                const int64_t src = ((step + i - (int64_t)(K - 1 - j) * d) % P + P) % P;
                                for (int b = 0; b < B; ++b)
                                    memcpy(xpast + ((int64_t)i * B + b) * KR + (int64_t)j * R,
                                           ring + (src * B + b) * R, sizeof(float) * R);
                            }
                        Inputs pin;
                        pin.parts = 1; pin.ldx = KR; pin.x[0] = xpast; pin.n[0] = KR;
                        const WNMatrix& Pa = m->past_a[(int64_t)l * nt + tid];
                        const WNMatrix& Pb = m->past_b[(int64_t)l * nt + tid];
                        matmul_blocks(m, Pa, 0, n_blocks(Pa), pin, nb * B, nullptr, 0, pre + c0, G);
                        matmul_blocks(m, Pb, 0, n_blocks(Pb), pin, nb * B, nullptr, 0, pre + H + c0, G);
                    }
                    const float* pre_t = pre + (step % nb) * B * G;
                    for (int b = 0; b < B; ++b) {
                        float* hb = h + (int64_t)b * 2 * cw;
                        const float* cb = cond + (int64_t)b * L * G + (int64_t)l * G;
                        const float* pb = pre_t + (int64_t)b * G;
                        for (int r = 0; r < cw; ++r) {
                            hb[r] = cb[c0 + r] + pb[c0 + r];
                            hb[cw + r] = cb[H + c0 + r] + pb[H + c0 + r];
                        }
                    }
                    Inputs in;
                    in.parts = 1; in.ldx = R; in.x[0] = x_now; in.n[0] = R;
                    matmul_blocks(m, Ma, 0, n_blocks(Ma), in, B, h, 2 * cw, h, 2 * cw);
                    matmul_blocks(m, Mb, 0, n_blocks(Mb), in, B, h + cw, 2 * cw, h + cw, 2 * cw);
                } else {
                    Inputs in;
                    in.parts = K;
                    in.ldx = R;
                    for (int j = 0; j < K; ++j) {
                        const int64_t back = (int64_t)(K - 1 - j) * d;
                        in.x[j] = ring + ((slot - back) % P + P) % P * B * R;
                        in.n[j] = R;
                    }
                    const float* term = cond + (int64_t)l * G;
                    matmul_blocks(m, Ma, 0, n_blocks(Ma), in, B, term + c0, L * G, h, 2 * cw);
                    matmul_blocks(m, Mb, 0, n_blocks(Mb), in, B, term + H + c0, L * G, h + cw, 2 * cw);
                }
                for (int b = 0; b < B; ++b) {
                    const float* hb = h + (int64_t)b * 2 * cw;
                    gate(hb, hb + cw, z + (int64_t)b * cw, cw);
                }
            }
            Inputs zin;
            zin.parts = 1; zin.ldx = cw; zin.x[0] = z; zin.n[0] = cw;
            const WNMatrix& Ms = m->skip[(int64_t)l * nt + tid];
            matmul_blocks(m, Ms, 0, n_blocks(Ms), zin, B, my_skip, S, my_skip, S);
            if (l < L - 1) {
                float* part = run->res_part + ((int64_t)(phase & 1) * nt + tid) * B * R;
                const WNMatrix& Mr = m->res[(int64_t)l * nt + tid];
                matmul_blocks(m, Mr, 0, n_blocks(Mr), zin, B, nullptr, 0, part, R);
            }
            x_prev = (l == 0 && m->first_table) ? nullptr : x_now;
            run->barrier.wait(tid, epoch);  // every thread's residual (and, after the last layer, skip) parts are in
            ++phase;
        }
        // output: relu -> 1x1 (skip_scale folded) -> relu -> 1x1; thread t owns out1's rows [s0, s1)
        for (int b = 0; b < B; ++b)
            for (int r = 0; r < S; ++r) {
                float v = 0.0f;
                for (int q = 0; q < nt; ++q) v += run->skip_part[((int64_t)q * B + b) * S + r];
                relu_skip[(int64_t)b * S + r] = v > 0.0f ? v : 0.0f;
            }
        float* my_logits = run->logit_part + (int64_t)tid * B * NO;
        {
            Inputs sin;
            sin.parts = 1; sin.ldx = S; sin.x[0] = relu_skip; sin.n[0] = S;
            const WNMatrix& M1 = m->out1[tid];
            matmul_blocks(m, M1, 0, n_blocks(M1), sin, B, nullptr, 0, hidden, sw);
            for (int b = 0; b < B; ++b)
                for (int r = 0; r < sw; ++r) {
                    float v = hidden[(int64_t)b * sw + r] + m->out1_bias[s0 + r];
                    hidden[(int64_t)b * sw + r] = v > 0.0f ? v : 0.0f;
                }
            Inputs hin;
            hin.parts = 1; hin.ldx = sw; hin.x[0] = hidden; hin.n[0] = sw;
            const WNMatrix& M2 = m->out2[tid];
            matmul_blocks(m, M2, 0, n_blocks(M2), hin, B, nullptr, 0, my_logits, NO);
        }
        run->barrier.wait(tid, epoch);      // every thread's partial logits are in
        for (int b = 0; b < B; ++b)
            for (int r = 0; r < NO; ++r) {
                float v = m->out2_bias[r];
                for (int q = 0; q < nt; ++q) v += run->logit_part[((int64_t)q * B + b) * NO + r];
                logits[(int64_t)b * NO + r] = v;
            }
        // every thread samples the same values from the same logits and uniforms: no barrier needed afterwards
        for (int b = 0; b < B; ++b) {
            const float* lg = logits + (int64_t)b * NO;
            if (tid == 0 && run->logits_out)
                memcpy(run->logits_out + (t * B + b) * m->n_out, lg, sizeof(float) * m->n_out);
            if (run->forced) continue;
            const double v = sample_one(m, lg, run->uniforms + (t * B + b) * run->n_uniforms, run->temperature, work);
            if (quantized) prev_i[b] = (int64_t)v; else prev_f[b] = (float)v;
            if (tid == 0 && run->samples) {
                if (quantized) ((int64_t*)run->samples)[t * B + b] = (int64_t)v;
                else ((float*)run->samples)[t * B + b] = (float)v;
            }
        }
    }
    if (tid == 0) {
        for (int b = 0; b < B; ++b) { s->prev_class[b] = prev_i[b]; s->prev_value[b] = prev_f[b]; }
    }
    free(h); free(z); free(relu_skip); free(hidden); free(logits); free(work); free(prev_i); free(prev_f); free(xpast);
}

// ----------------------------------------------------------------------------------------------- upsampling
// One stage of the conditioning upsampler applied to already projected rows: a nearest-neighbour stretch by s followed
// by a zero-padded (2s+1)-tap smoothing conv is, per output phase p = n mod s, a 3-tap filter over the input positions
// n/s - 1, n/s, n/s + 1 (a[p][0..2]). Rows are w floats wide (batch x layers x gate channels), time-major:
//   y[r] = add + sum_j a[(n % s)*3 + j] * X(n/s + j - 1),  n = lo_out + r,  X(q) = x[q - lo_in] if 0 <= q < len_in else 0
extern "C" void wn_polyphase(const float* x, int64_t lo_in, int64_t n_in, int64_t len_in, int64_t w, int32_t s,
                             const float* a, int64_t lo_out, int64_t n_out, const float* add, float* y) {
    for (int64_t r = 0; r < n_out; ++r) {
        const int64_t n = lo_out + r, f = n / s;
        const int p = (int)(n - f * s);
        const float* rows[3];
        float coef[3];
        int k = 0;
        for (int j = 0; j < 3; ++j) {
            const int64_t q = f + j - 1;
            if (q < 0 || q >= len_in || q < lo_in || q >= lo_in + n_in) continue;
            rows[k] = x + (q - lo_in) * w;
            coef[k] = a[p * 3 + j];
            ++k;
        }
        float* out = y + r * w;
        int64_t i = 0;
        const __m256 c0 = _mm256_set1_ps(k > 0 ? coef[0] : 0.0f), c1 = _mm256_set1_ps(k > 1 ? coef[1] : 0.0f),
                     c2 = _mm256_set1_ps(k > 2 ? coef[2] : 0.0f);
        for (; i + 8 <= w; i += 8) {
            __m256 v = add ? _mm256_loadu_ps(add + i) : _mm256_setzero_ps();
            __m256 t = _mm256_setzero_ps();
            if (k > 0) t = _mm256_mul_ps(c0, _mm256_loadu_ps(rows[0] + i));
            if (k > 1) t = _mm256_fmadd_ps(c1, _mm256_loadu_ps(rows[1] + i), t);
            if (k > 2) t = _mm256_fmadd_ps(c2, _mm256_loadu_ps(rows[2] + i), t);
            _mm256_storeu_ps(out + i, _mm256_add_ps(v, t));
        }
        for (; i < w; ++i) {
            float t = 0.0f;
            for (int j = 0; j < k; ++j) t += coef[j] * rows[j][i];
            out[i] = (add ? add[i] : 0.0f) + t;
        }
    }
}

// y (rows x w) = x (rows x c) @ wt (c x w): the frame-rate projection of the conditioning (a few frames per chunk;
// done here rather than by torch so that no OpenMP pool is woken per chunk).
extern "C" void wn_project(const float* x, int64_t rows, int32_t c, const float* wt, int64_t w, float* y) {
    for (int64_t r = 0; r < rows; ++r) {
        float* out = y + r * w;
        const float* xr = x + r * c;
        int64_t i = 0;
        for (; i + 32 <= w; i += 32) {
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            for (int k = 0; k < c; ++k) {
                const __m256 xv = _mm256_broadcast_ss(xr + k);
                const float* row = wt + (int64_t)k * w + i;
                a0 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(row), a0);
                a1 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(row + 8), a1);
                a2 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(row + 16), a2);
                a3 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(row + 24), a3);
            }
            _mm256_storeu_ps(out + i, a0); _mm256_storeu_ps(out + i + 8, a1);
            _mm256_storeu_ps(out + i + 16, a2); _mm256_storeu_ps(out + i + 24, a3);
        }
        for (; i < w; ++i) {
            float v = 0.0f;
            for (int k = 0; k < c; ++k) v += xr[k] * wt[(int64_t)k * w + i];
            out[i] = v;
        }
    }
}

// ----------------------------------------------------------------------------------------------- machine limits
// What the benchmark compares against: fp32 FMA throughput and read bandwidth, per thread count, measured by code of
// the same kind as the loop above (AVX2 FMAs on registers; streaming 32-byte loads).
static double now_s() { timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }

struct LimitArg { int64_t iters, bytes; int32_t reps; float seed; double sink; std::atomic<int>* ready; int n; };

static void start_together(LimitArg* a) {
    a->ready->fetch_add(1);
    while (a->ready->load() < a->n) _mm_pause();
}

static void* fma_worker(void* p) {
    LimitArg* a = (LimitArg*)p;
    start_together(a);
    // 10 independent accumulators (FMA latency x throughput on current cores), distinct so nothing is merged
    const __m256 x = _mm256_set1_ps(0.999f), y = _mm256_set1_ps(1e-6f);
    __m256 v[10];
    for (int i = 0; i < 10; ++i) v[i] = _mm256_set1_ps(a->seed + i);
    for (int64_t k = 0; k < a->iters; ++k)
        for (int i = 0; i < 10; ++i) v[i] = _mm256_fmadd_ps(v[i], x, y);
    float o[8], s = 0.0f;
    for (int i = 0; i < 10; ++i) { _mm256_storeu_ps(o, v[i]); s += o[0]; }
    a->sink = s;
    return nullptr;
}

static void* read_worker(void* p) {
    LimitArg* a = (LimitArg*)p;
    const int64_t n = a->bytes / 128 * 32;     // floats, a multiple of 32
    float* buf = (float*)aligned_alloc(64, (size_t)n * sizeof(float) + 64);
    if (!buf) { a->sink = -1.0; start_together(a); return nullptr; }
    for (int64_t i = 0; i < n; ++i) buf[i] = a->seed;
    start_together(a);
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int r = 0; r < a->reps; ++r)
        for (int64_t i = 0; i < n; i += 32) {
            a0 = _mm256_add_ps(a0, _mm256_load_ps(buf + i));
            a1 = _mm256_add_ps(a1, _mm256_load_ps(buf + i + 8));
            a2 = _mm256_add_ps(a2, _mm256_load_ps(buf + i + 16));
            a3 = _mm256_add_ps(a3, _mm256_load_ps(buf + i + 24));
        }
    float o[8];
    _mm256_storeu_ps(o, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    a->sink = o[0];
    free(buf);
    return nullptr;
}

// Runs fn on `threads` threads that start together; returns the wall seconds from the start to the last finish.
static double run_limit(void* (*fn)(void*), int threads, int64_t iters, int64_t bytes, int32_t reps) {
    if (threads < 1 || threads > 64) return -1.0;
    std::atomic<int> ready{0};
    LimitArg args[64];
    pthread_t th[64];
    for (int i = 0; i < threads; ++i) args[i] = LimitArg{iters, bytes, reps, 1.0f + i, 0.0, &ready, threads + 1};
    int started = 0;
    for (int i = 0; i < threads; ++i) {
        if (pthread_create(&th[i], nullptr, fn, &args[i]) != 0) break;
        ++started;
    }
    if (started < threads) ready.fetch_add(threads - started);   // let the started ones run; report failure
    while (ready.load() < threads) _mm_pause();                  // every buffer is written (page faults done)
    const double t0 = now_s();
    ready.fetch_add(1);
    for (int i = 0; i < started; ++i) pthread_join(th[i], nullptr);
    const double t = now_s() - t0;
    for (int i = 0; i < started; ++i) if (args[i].sink < 0) return -1.0;
    return started == threads ? t : -1.0;
}

// fp32 GFLOP/s of `threads` threads each doing `iters` x 10 independent 8-wide FMAs; negative on failure.
extern "C" double wn_fma_gflops(int32_t threads, int64_t iters) {
    const double t = run_limit(fma_worker, threads, iters, 0, 0);
    return t > 0 ? (double)threads * iters * 10 * 16 / t * 1e-9 : -1.0;
}

// GB/s read by `threads` threads each summing its own `bytes` buffer `reps` times; negative on failure.
extern "C" double wn_read_gbps(int32_t threads, int64_t bytes, int32_t reps) {
    const double t = run_limit(read_worker, threads, 0, bytes, reps);
    return t > 0 ? (double)threads * (bytes / 128 * 128) * reps / t * 1e-9 : -1.0;
}

struct ThreadArg { Run* run; int tid; std::atomic<int>* go; };
static void* thread_main(void* p) {
    ThreadArg* a = (ThreadArg*)p;
    int g;
    while ((g = a->go->load(std::memory_order_acquire)) == 0) sched_yield();
    if (g > 0) run_thread(a->run, a->tid);
    return nullptr;
}

// Runs n_steps steps; returns 0, or -1 when memory or threads could not be had.
extern "C" int wn_run(const WNModel* m, WNState* s, int64_t n_steps, const float* cond, int64_t cond_stride,
                      const float* uniforms, int32_t n_uniforms, float temperature, const void* forced,
                      void* samples, float* logits_out) {
    if (n_steps <= 0) return 0;
    const int B = s->batch;
    Run run;
    run.m = m; run.s = s; run.n_steps = n_steps; run.cond = cond; run.cond_stride = cond_stride;
    run.uniforms = uniforms; run.n_uniforms = n_uniforms; run.temperature = temperature; run.forced = forced;
    run.samples = samples; run.logits_out = logits_out;
    const int ntt = m->n_threads < 1 ? 1 : m->n_threads;
    run.skip_part = scratch((size_t)ntt * B * m->S);
    run.res_part = scratch((size_t)2 * ntt * B * m->R);
    run.logit_part = scratch((size_t)ntt * B * m->n_out_pad);
    int rc = 0;
    if (!run.skip_part || !run.res_part || !run.logit_part) rc = -1;
    const int nt = m->n_threads < 1 ? 1 : m->n_threads;
    run.barrier.n = nt;
    if (nt > 64) rc = -1;
    pthread_t threads[64];
    ThreadArg args[64];
    std::atomic<int> go{0};
    int started = 0;
    if (rc == 0) {
        for (int i = 1; i < nt; ++i) {
            args[i].run = &run; args[i].tid = i; args[i].go = &go;
            if (pthread_create(&threads[i], nullptr, thread_main, &args[i]) != 0) { rc = -1; break; }
            ++started;
        }
        go.store(rc == 0 ? 1 : -1, std::memory_order_release);   // all or none: a barrier needs every thread
        if (rc == 0) run_thread(&run, 0);
        for (int i = 1; i <= started; ++i) pthread_join(threads[i], nullptr);
    }
    if (rc == 0) s->step += n_steps;
    free(run.skip_part); free(run.res_part); free(run.logit_part);
    return rc;
}
"""


def compiler() -> str | None:
    """The C++ compiler to build with: ``$CXX`` when set, else the first of ``c++``, ``g++``, ``clang++`` on PATH."""
    env = os.environ.get("CXX")
    if env:
        return shutil.which(env) or env
    for name in ("c++", "g++", "clang++"):
        path = shutil.which(name)
        if path:
            return path
    return None


def cache_dir() -> Path:
    """Where built kernels are kept: ``$WAVENET_DILATED_CACHE``, else ``$XDG_CACHE_HOME/wavenet_dilated``, else
    ``~/.cache/wavenet_dilated``."""
    env = os.environ.get("WAVENET_DILATED_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "wavenet_dilated"


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build(cxx: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as tmp:
        src = Path(tmp) / "fastgen.cpp"
        src.write_text(SOURCE)
        out = Path(tmp) / target.name
        proc = subprocess.run([cxx, *FLAGS, str(src), "-o", str(out)], capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise KernelUnavailable(f"building the fast-generation kernel with {cxx} failed: " + " | ".join(tail))
        os.replace(out, target)  # atomic: a concurrent process sees either no file or the whole library


@functools.cache
def load_kernel() -> ctypes.CDLL:
    """Build (once per machine and source version, cached on disk) and load the kernel library.

    Raises :class:`KernelUnavailable` when it cannot be had: not x86-64 with AVX2 and FMA, no compiler, a failed build.
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        raise KernelUnavailable(f"the fast kernel is written for x86-64 (AVX2, FMA); this machine is {platform.machine()}")
    flags = _cpu_flags().split()
    if not {"avx2", "fma"} <= set(flags):
        raise KernelUnavailable("the fast kernel needs a CPU with AVX2 and FMA")
    cxx = compiler()
    if cxx is None:
        raise KernelUnavailable("no C++ compiler found (set $CXX, or install g++)")
    try:
        version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as err:
        raise KernelUnavailable(f"the C++ compiler {cxx} does not run: {err}") from None
    key = hashlib.sha256("\0".join([SOURCE, " ".join(FLAGS), version, " ".join(sorted(flags))]).encode()).hexdigest()
    target = cache_dir() / f"fastgen-{ABI_VERSION}-{key[:20]}.so"
    if not target.exists():
        try:
            _build(cxx, target)
        except OSError as err:
            raise KernelUnavailable(f"cannot build the fast kernel in {target.parent}: {err}") from None
    try:
        lib = ctypes.CDLL(str(target))
    except OSError as err:
        raise KernelUnavailable(f"cannot load the fast kernel {target}: {err}") from None
    if lib.wn_abi_version() != ABI_VERSION:
        raise KernelUnavailable(f"{target} has ABI {lib.wn_abi_version()}, expected {ABI_VERSION}")
    lib.wn_fma_gflops.restype = ctypes.c_double
    lib.wn_fma_gflops.argtypes = [ctypes.c_int32, ctypes.c_int64]
    lib.wn_read_gbps.restype = ctypes.c_double
    lib.wn_read_gbps.argtypes = [ctypes.c_int32, ctypes.c_int64, ctypes.c_int32]
    lib.wn_run.restype = ctypes.c_int
    lib.wn_project.restype = None
    lib.wn_project.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32, ctypes.c_void_p, ctypes.c_int64,
                               ctypes.c_void_p]
    lib.wn_polyphase.restype = None
    lib.wn_polyphase.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                 ctypes.c_int32, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                                 ctypes.c_void_p]
    lib.wn_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                           ctypes.c_void_p, ctypes.c_int32, ctypes.c_float, ctypes.c_void_p, ctypes.c_void_p,
                           ctypes.c_void_p]
    return lib
