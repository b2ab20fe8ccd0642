// Vectorised fp32 math of the fast-generation kernel (AVX2 + FMA): exp and the gated activation.
#pragma once
#include <immintrin.h>
#include <math.h>

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
