// A C-level exactness check of the fast-generation kernel's vector code (generation/csrc): the packed matrix products
// (matmul.h) for fp32, bf16 and int8 weights, every row-block size and column count, with and without an initial term;
// the int8 x int8 products of w8a8 (qmatmul.h: exact int32 sums, compared with equality); and the gate and exp
// (simd_math.h). Built for any target by tests/test_kernel_portable.py (natively for each x86
// ISA, and cross-compiled for aarch64 and run under qemu-aarch64); prints "ok <isa> <checks>" and exits 0, or prints
// the first failure and exits 1.
//
// References are computed in double. A sum of n products evaluated in fp32 is within eps * sqrt(n) * sum|terms| of the
// exact sum, up to a factor 2 (tests/_tolerance.py); the scaled precisions add one rounding of the product by the
// scale (eps * |y|).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <initializer_list>

#include "matmul.h"
#include "qmatmul.h"
#include "simd_math.h"
#include "wavenet_kernel.h"

static const double EPS = 1.1920928955078125e-07;   // 2^-23
static long checks = 0;

static unsigned rng_state = 12345u;
static float uniform() {   // in [-1, 1)
    rng_state = rng_state * 1664525u + 1013904223u;
    return (float)((rng_state >> 8) * (1.0 / 8388608.0)) - 1.0f;
}

static int fail(const char* what, double got, double want, double bound) {
    printf("FAIL %s: got %.9g, want %.9g, bound %.3g\n", what, got, want, bound);
    return 1;
}

static bf16_t to_bf16(float x) {   // round to nearest even (x finite)
    uint32_t u;
    memcpy(&u, &x, 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16_t)(u >> 16);
}
static float from_bf16(bf16_t b) { uint32_t u = (uint32_t)b << 16; float x; memcpy(&x, &u, 4); return x; }

// One matrix (rows x n_in) in precision `prec` packed as packing.py packs it (blocks of 8*ry rows, input-major), one
// product y = init + M x over B columns, and the double reference.
static int check_product(int prec, int rows, int n_in, int ry, int B, bool with_init) {
    float* w = (float*)malloc(sizeof(float) * rows * n_in);    // the weights the codes stand for
    float* scale = (float*)malloc(sizeof(float) * rows);
    void* packed = malloc((size_t)rows * n_in * 4 + 64);
    for (int r = 0; r < rows; ++r) {
        scale[r] = prec == WN_FP32 ? 1.0f : 0.01f + 0.1f * (float)(r % 7);
        for (int i = 0; i < n_in; ++i) {
            float v = uniform();
            if (prec == WN_INT8) v = (float)(int)lrintf(v * 127.0f);
            if (prec == WN_BF16) v = from_bf16(to_bf16(v));
            w[r * n_in + i] = v;
        }
    }
    const int rb = 8 * ry;
    int64_t k = 0;
    for (int r0 = 0; r0 < rows; r0 += rb) {
        const int nr = rows - r0 < rb ? rows - r0 : rb;
        for (int i = 0; i < n_in; ++i)
            for (int r = r0; r < r0 + nr; ++r, ++k) {
                const float v = w[r * n_in + i];
                if (prec == WN_FP32) ((float*)packed)[k] = v;
                else if (prec == WN_BF16) ((bf16_t*)packed)[k] = to_bf16(v);
                else ((int8_t*)packed)[k] = (int8_t)v;
            }
    }
    float* x = (float*)malloc(sizeof(float) * B * n_in);
    float* init = (float*)malloc(sizeof(float) * B * rows);
    float* y = (float*)malloc(sizeof(float) * B * rows);
    for (int i = 0; i < B * n_in; ++i) x[i] = uniform();
    for (int i = 0; i < B * rows; ++i) init[i] = uniform();
    WNModel m;
    memset(&m, 0, sizeof m);
    m.precision = prec;
    m.weights = packed;
    m.scales = scale;
    WNMatrix M = {0, rows, n_in, ry, 0};
    Inputs in;
    // the inputs in two parts (as the dilated conv reads its taps from the ring), when there are enough of them
    const int first = n_in >= 16 ? n_in / 2 / 8 * 8 : n_in;
    in.parts = first < n_in ? 2 : 1;
    in.ldx = n_in;
    in.x[0] = x; in.n[0] = first;
    in.x[1] = x + first; in.n[1] = n_in - first;
    matmul_blocks(&m, M, 0, n_blocks(M), in, B, with_init ? init : nullptr, rows, y, rows);
    int bad = 0;
    for (int c = 0; c < B && !bad; ++c)
        for (int r = 0; r < rows && !bad; ++r) {
            double sum = 0.0, mag = 0.0;
            for (int i = 0; i < n_in; ++i) {
                sum += (double)w[r * n_in + i] * x[c * n_in + i];
                mag += fabs((double)w[r * n_in + i] * x[c * n_in + i]);
            }
            const double s = scale[r], b = with_init ? init[c * rows + r] : 0.0;
            const double want = b + s * sum;
            const double bound = 2 * EPS * (sqrt((double)n_in) * s * mag + fabs(b) + fabs(want));
            ++checks;
            if (fabs(y[c * rows + r] - want) > bound) {
                char what[160];
                snprintf(what, sizeof what, "product prec %d rows %d in %d ry %d B %d init %d at row %d column %d",
                         prec, rows, n_in, ry, B, (int)with_init, r, c);
                bad = fail(what, y[c * rows + r], want, bound);
            }
        }
    free(w); free(scale); free(packed); free(x); free(init); free(y);
    return bad;
}

static int check_math() {
    const int n = 203;   // not a multiple of any vector width: the scalar tail is checked too
    float a[n], b[n], z[n];
    for (int i = 0; i < n; ++i) { a[i] = 12.0f * uniform(); b[i] = 12.0f * uniform(); }
    a[0] = 60.0f; b[0] = -100.0f; a[1] = -100.0f; b[1] = 100.0f;   // the clamps
    gate(a, b, z, n);
    for (int i = 0; i < n; ++i) {
        const double sig = 1.0 / (1.0 + exp(-(double)b[i])), want = tanh((double)a[i]) * sig;
        // two exps (an ulp or two each), three roundings and a division; e^{2a} - 1 cancels for small |a|, which
        // leaves an absolute error of a few ulps of e^{2a} / (e^{2a} + 1) * sigmoid(b) <= sigmoid(b); the arguments
        // are clamped to [-87, 40], which changes sigmoid(b) by at most e^-40 where b < -40
        const double bound = 8 * EPS * (fabs(want) + sig) + exp(-40.0);
        ++checks;
        if (fabs(z[i] - want) > bound) return fail("gate", z[i], want, bound);
    }
    for (int i = 0; i + WN_W <= n; i += WN_W) {
        const vf e = vexp(loadv(a + i));
        for (int j = 0; j < WN_W; ++j) {
            const double want = exp((double)(a[i + j] < -87.0f ? -87.0f : a[i + j] > 88.0f ? 88.0f : a[i + j]));
            ++checks;
            if (fabs(e[j] - want) > 2 * EPS * want) return fail("exp", e[j], want, 2 * EPS * want);
        }
    }
    return 0;
}

// w8a8: W (rows x parts*n, int8) packed in tiles as packing.py's pack_tiles does, times codes of B columns with unit
// scales: every result is an integer below 2^24, so the fp32 results must equal the int64 sums exactly.
static int check_qproduct(int rows, int parts, int n, int tiles, int B) {
    const int n_in = parts * n, padded = (rows + WN_QTILE - 1) / WN_QTILE * WN_QTILE;
    int8_t* w = (int8_t*)malloc((size_t)rows * n_in);
    uint8_t* packed = (uint8_t*)malloc((size_t)padded * n_in + 64);
    int8_t* q = (int8_t*)malloc((size_t)B * n_in);
    float* ones = (float*)malloc(sizeof(float) * (size_t)(padded + B * parts));
    int32_t* sums = (int32_t*)malloc(sizeof(int32_t) * (size_t)B * parts);
    float* y = (float*)malloc(sizeof(float) * (size_t)B * rows);
    for (int i = 0; i < rows * n_in; ++i) w[i] = (int8_t)lrintf(127.0f * uniform());
    for (int i = 0; i < B * n_in; ++i) q[i] = (int8_t)lrintf(127.0f * uniform());
    for (int i = 0; i < padded + B * parts; ++i) ones[i] = 1.0f;
    size_t k = 0;   // blocks of `tiles` tiles; in a block: group g, tile v, row r, input 4g + j
    for (int r0 = 0; r0 < padded; r0 += WN_QTILE * tiles) {
        const int t = (padded - r0) / WN_QTILE < tiles ? (padded - r0) / WN_QTILE : tiles;
        for (int g = 0; g < n_in / 4; ++g)
            for (int v = 0; v < t; ++v)
                for (int r = 0; r < WN_QTILE; ++r)
                    for (int j = 0; j < 4; ++j) {
                        const int row = r0 + WN_QTILE * v + r;
                        packed[k++] = (uint8_t)((row < rows ? w[(size_t)row * n_in + 4 * g + j] : 0) + 128);
                    }
    }
    for (int c = 0; c < B; ++c)
        for (int p = 0; p < parts; ++p) {
            int32_t s = 0;
            for (int i = 0; i < n; ++i) s += q[(size_t)c * n_in + p * n + i];
            sums[c * parts + p] = s;
        }
    qproduct(packed, rows, n_in, tiles, ones, q, ones, sums, parts, B, nullptr, y);
    int bad = 0;
    for (int c = 0; c < B && !bad; ++c)
        for (int r = 0; r < rows && !bad; ++r) {
            int64_t want = 0;
            for (int i = 0; i < n_in; ++i) want += (int64_t)w[(size_t)r * n_in + i] * q[(size_t)c * n_in + i];
            ++checks;
            if (y[(size_t)c * rows + r] != (float)want) {
                char what[128];
                snprintf(what, sizeof what, "int8 product rows %d parts %d n %d tiles %d B %d at row %d column %d",
                         rows, parts, n, tiles, B, r, c);
                bad = fail(what, y[(size_t)c * rows + r], (double)want, 0.0);
            }
        }
    free(w); free(packed); free(q); free(ones); free(sums); free(y);
    return bad;
}

int main() {
    const int precs[] = {WN_FP32, WN_BF16, WN_INT8};
    for (int p : precs)
        for (int ry = 1; ry <= 8; ++ry)
            for (int rows : {8, 24, 8 * ry, 8 * ry + 8, 3 * 8 * ry + 16})
                for (int n_in : {8, 131})
                    for (int B : {1, 3, 8, 11})
                        for (int init = 0; init < 2; ++init)
                            if (check_product(p, rows, n_in, ry, B, init != 0)) return 1;
    for (int tiles = 1; tiles <= 4; ++tiles)
        for (int rows : {8, 16, 40, 64, 72})
            for (int parts : {1, 3})
                for (int n : {4, 12, 128})
                    for (int B : {1, 3, 8, 9})
                        if (check_qproduct(rows, parts, n, tiles, B)) return 1;
    if (check_math()) return 1;
    printf("ok %s %ld\n", WN_ISA, checks);
    return 0;
}
