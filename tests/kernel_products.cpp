// A C-level exactness check of the fast-generation kernel's vector code (generation/csrc): the packed matrix products
// (matmul.h) for fp32, bf16 and int8 weights, every row-block size and column count, with and without an initial term;
// and the gate and exp (simd_math.h). Built for any target by tests/test_kernel_portable.py (natively for each x86
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

int main() {
    const int precs[] = {WN_FP32, WN_BF16, WN_INT8};
    for (int p : precs)
        for (int ry = 1; ry <= 8; ++ry)
            for (int rows : {8, 24, 8 * ry, 8 * ry + 8, 3 * 8 * ry + 16})
                for (int n_in : {8, 131})
                    for (int B : {1, 3, 8, 11})
                        for (int init = 0; init < 2; ++init)
                            if (check_product(p, rows, n_in, ry, B, init != 0)) return 1;
    if (check_math()) return 1;
    printf("ok %s %ld\n", WN_ISA, checks);
    return 0;
}
