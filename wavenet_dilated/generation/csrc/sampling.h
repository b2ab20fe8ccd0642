// Drawing one sample from a step's logits, operation by operation as the Python heads do (nn/heads.py).
#pragma once
#include <math.h>
#include <stdint.h>

#include "simd_math.h"
#include "wavenet_kernel.h"

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
        vf vs{};
        for (; i + WN_W <= n; i += WN_W) {
            const vf e = vexp(loadv(work + i) - splat(mx));
            store(work + i, e);
            vs += e;
        }
        float sum = hsum(vs);
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
