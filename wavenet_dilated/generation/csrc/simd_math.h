// Vectorised fp32 math of the fast-generation kernel (any ISA of simd.h): exp and the gated activation.
#pragma once
#include <math.h>

#include "simd.h"

static inline vf vexp(vf x) {
    // Cephes expf: exp(x) = 2^n * p(r), |r| <= ln2/2; about 1 ulp on the clamped range
    x = vmin(vmax(x, splat(-87.0f)), splat(88.0f));
    const vf fx = round_nearest(x * splat(1.44269504088896341f));
    vf r = fmadd(-fx, splat(0.693359375f), x);
    r = fmadd(-fx, splat(-2.12194440e-4f), r);
    vf y = splat(1.9875691500E-4f);
    y = fmadd(y, r, splat(1.3981999507E-3f));
    y = fmadd(y, r, splat(8.3334519073E-3f));
    y = fmadd(y, r, splat(4.1665795894E-2f));
    y = fmadd(y, r, splat(1.6666665459E-1f));
    y = fmadd(y, r, splat(5.0000001201E-1f));
    y = fmadd(y, r * r, r + splat(1.0f));
    const vi n = (__builtin_convertvector(fx, vi) + 127) << 23;   // fx is integral: the conversion is exact
    return y * (vf)n;
}

// z = tanh(a) * sigmoid(b) = (e^{2a} - 1) / ((e^{2a} + 1)(1 + e^{-b})), arguments clamped to [-87, 40] so that
// nothing overflows; at the clamps tanh and sigmoid are 1 (or 0) to far below fp32 resolution.
static inline void gate(const float* a, const float* b, float* z, int n) {
    const vf one = splat(1.0f), lo = splat(-87.0f), hi = splat(40.0f);
    int i = 0;
    for (; i + WN_W <= n; i += WN_W) {
        const vf va = loadv(a + i), vb = loadv(b + i);
        const vf ea = vexp(vmin(vmax(va + va, lo), hi));
        const vf eb = vexp(vmin(vmax(-vb, lo), hi));
        store(z + i, (ea - one) / ((ea + one) * (eb + one)));
    }
    for (; i < n; ++i) z[i] = tanhf(a[i]) / (1.0f + expf(-b[i]));
}
