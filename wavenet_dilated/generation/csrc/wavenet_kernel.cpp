// wavenet_dilated fast generation kernel: the per-sample loop over all layers (one thread's share of it: worker.h) on
// one or more threads, and the conditioning upsampler. Vectors of the widest ISA the build targets (simd.h); fp32 sums,
// fp32/bf16/int8 weights. Built and loaded by wavenet_dilated/generation/kernel.py; what it computes is documented in
// wavenet_dilated/generation/fast.py.
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <atomic>

#include "simd.h"
#include "wavenet_kernel.h"
#include "worker.h"

// The vector ISA this library was built for (simd.h): "avx512", "avx2+fma", "neon" or "generic".
extern "C" const char* wn_isa() { return WN_ISA; }
// How the w8a8 products multiply int8 by int8 (qmatmul.h): "avx512-vnni", "avx-vnni" or "int32 lanes".
extern "C" const char* wn_int8_dot() { return WN_QDOT; }

// ----------------------------------------------------------------------------------------------- the loop
// Every thread runs this loop (see Worker), on the CPU the call picked for it (Pinning) where it picked one.
static void run_thread(Run* run, int tid) {
#if defined(__linux__)
    if (run->cpu[tid] >= 0) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(run->cpu[tid], &one);
        pthread_setaffinity_np(pthread_self(), sizeof one, &one);
    }
#endif
    Worker w(run, tid);
    for (int64_t t = 0; t < run->n_steps; ++t) {
        w.begin_step(t);
        for (int l = 0; l < w.L; ++l) w.layer(l);
        w.output();
        w.draw();
    }
    w.finish();
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
extern "C" int wn_run(const WNModel* m, WNState* s, int64_t n_steps, const WNTerm* term, const float* uniforms,
                      int32_t n_uniforms, float temperature, const void* forced, void* samples, float* logits_out) {
    if (n_steps <= 0) return 0;
    const int B = s->batch;
    Run run;
    run.m = m; run.s = s; run.n_steps = n_steps; run.term = *term;
    run.uniforms = uniforms; run.n_uniforms = n_uniforms; run.temperature = temperature; run.forced = forced;
    run.samples = samples; run.logits_out = logits_out;
    for (int i = 0; i < 64; ++i) run.cpu[i] = -1;
    const int ntt = m->n_threads < 1 ? 1 : m->n_threads;
    run.skip_part = scratch((size_t)ntt * B * m->S);
    run.res_part = scratch((size_t)2 * ntt * B * m->R);
    run.logit_part = scratch((size_t)ntt * B * m->n_out_pad);
    int max_cols = 0;
    for (int t = 0; t < ntt; ++t) max_cols = m->col0[t + 1] - m->col0[t] > max_cols ? m->col0[t + 1] - m->col0[t] : max_cols;
    run.xlines = xlines_for((int64_t)B * max_cols * (int64_t)sizeof(float)) + 1;
    run.xchg = (XLine*)scratch((size_t)2 * ntt * run.xlines * sizeof(XLine) / sizeof(float));
    int rc = 0;
    if (!run.skip_part || !run.res_part || !run.logit_part || !run.xchg) rc = -1;
    const int nt = m->n_threads < 1 ? 1 : m->n_threads;
    run.barrier.n = nt;
    if (nt > 64) rc = -1;
#if defined(__linux__)
    // Each thread on a CPU of its own for the call (the caller's stays where it is): a thread that moves to the
    // other core finds the other thread's weights in that core's L2 (measured 6 % slower unpinned, ljspeech w8a8
    // batch 1). Only when the caller may run on enough CPUs; the caller's own mask is put back afterwards.
    cpu_set_t saved;
    bool pinned = false;
    if (nt > 1 && pthread_getaffinity_np(pthread_self(), sizeof saved, &saved) == 0 && CPU_COUNT(&saved) >= nt) {
        const int here = sched_getcpu();
        int k = 0;
        if (here >= 0 && here < CPU_SETSIZE && CPU_ISSET(here, &saved)) run.cpu[k++] = here;
        for (int c = 0; c < CPU_SETSIZE && k < nt; ++c)
            if (CPU_ISSET(c, &saved) && c != here) run.cpu[k++] = c;
        pinned = k == nt;
        if (!pinned)
            for (int i = 0; i < nt; ++i) run.cpu[i] = -1;
    }
#endif
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
#if defined(__linux__)
    if (pinned) pthread_setaffinity_np(pthread_self(), sizeof saved, &saved);
#endif
    if (rc == 0) s->step += n_steps;
    free(run.skip_part); free(run.res_part); free(run.logit_part); free(run.xchg);
    return rc;
}

// ----------------------------------------------------------------------------------------------- w8a8 pieces
// The activation quantiser and the int8 product of qmatmul.h on their own, for the tests to hold against numpy.
// codes (rows, n), scale (rows), sum (rows) of x (rows, n): quantize_dynamic (unit != 0: quantize_unit, scale 1/127).
extern "C" void wn_quantize(const float* x, int64_t rows, int32_t n, int32_t unit, int8_t* q, float* scale,
                            int32_t* sum) {
    for (int64_t r = 0; r < rows; ++r) {
        if (unit) {
            sum[r] = quantize_unit(x + r * n, n, q + r * n);
            scale[r] = 1.0f / 127.0f;
        } else {
            quantize_dynamic(x + r * n, n, q + r * n, scale + r, sum + r);
        }
    }
}

// qmatmul.h's qproduct: one matrix packed by packing.py's pack_tiles, for the tests to hold against numpy.
extern "C" void wn_qproduct(const void* packed, int32_t rows, int32_t n_in, int32_t tiles, const float* rowscale,
                            const int8_t* codes, const float* scale, const int32_t* sum, int32_t parts, int32_t B,
                            const float* init, float* y) {
    qproduct(packed, rows, n_in, tiles, rowscale, codes, scale, sum, parts, B, init, y);
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
        const vf c0 = splat(k > 0 ? coef[0] : 0.0f), c1 = splat(k > 1 ? coef[1] : 0.0f),
                 c2 = splat(k > 2 ? coef[2] : 0.0f);
        for (; i + WN_W <= w; i += WN_W) {
            const vf v = add ? loadv(add + i) : vf{};
            vf t{};
            if (k > 0) t = c0 * loadv(rows[0] + i);
            if (k > 1) t = fmadd(c1, loadv(rows[1] + i), t);
            if (k > 2) t = fmadd(c2, loadv(rows[2] + i), t);
            store(out + i, v + t);
        }
        for (; i < w; ++i) {
            float t = 0.0f;
            for (int j = 0; j < k; ++j) t += coef[j] * rows[j][i];
            out[i] = (add ? add[i] : 0.0f) + t;
        }
    }
}

// y (rows x w) = x (rows x c) @ wt (c x w): the frame-rate projection of the conditioning (a few frames per chunk;
// done here rather than by torch so that no OpenMP pool is woken per chunk). Columns outermost: a slice of wt
// (c x 4 vectors) stays in L1 for every row instead of all of wt passing through the caches once per row.
extern "C" void wn_project(const float* x, int64_t rows, int32_t c, const float* wt, int64_t w, float* y) {
    int64_t i = 0;
    for (; i + 4 * WN_W <= w; i += 4 * WN_W)
        for (int64_t r = 0; r < rows; ++r) {
            const float* xr = x + r * c;
            vf a0{}, a1{}, a2{}, a3{};
            for (int k = 0; k < c; ++k) {
                const vf xv = splat(xr[k]);
                const float* row = wt + (int64_t)k * w + i;
                a0 = fmadd(xv, loadv(row), a0);
                a1 = fmadd(xv, loadv(row + WN_W), a1);
                a2 = fmadd(xv, loadv(row + 2 * WN_W), a2);
                a3 = fmadd(xv, loadv(row + 3 * WN_W), a3);
            }
            float* out = y + r * w + i;
            store(out, a0); store(out + WN_W, a1); store(out + 2 * WN_W, a2); store(out + 3 * WN_W, a3);
        }
    for (int64_t r = 0; r < rows; ++r)
        for (int64_t j = i; j < w; ++j) {
            float v = 0.0f;
            for (int k = 0; k < c; ++k) v += x[r * c + k] * wt[(int64_t)k * w + j];
            y[r * w + j] = v;
        }
}

// ----------------------------------------------------------------------------------------------- layout
// Every field of the structs in wavenet_kernel.h, in declaration order: what wn_layout and wn_layout_names report for
// the loader to compare with abi.py, which refuses a library whose structs differ from its ctypes mirror.
#define WN_MATRIX_FIELDS(X) X(WNMatrix, offset) X(WNMatrix, rows) X(WNMatrix, in) X(WNMatrix, ry) X(WNMatrix, scale_offset)
#define WN_MODEL_FIELDS(X)                                                                                            \
    X(WNModel, n_layers) X(WNModel, R) X(WNModel, G) X(WNModel, S) X(WNModel, K) X(WNModel, n_out)                   \
    X(WNModel, n_out_pad) X(WNModel, head) X(WNModel, n_classes) X(WNModel, n_mix) X(WNModel, first_table)           \
    X(WNModel, n_threads) X(WNModel, res_scale) X(WNModel, log_scale_min) X(WNModel, precision) X(WNModel, exchange)    \
    X(WNModel, dilation) X(WNModel, col0) X(WNModel, row0) X(WNModel, conv_a) X(WNModel, conv_b) X(WNModel, skip)   \
    X(WNModel, res) X(WNModel, weights) X(WNModel, scales) X(WNModel, res_bias) X(WNModel, skip_bias)               \
    X(WNModel, table) X(WNModel, embed) X(WNModel, out1) X(WNModel, out2) X(WNModel, out1_bias)                      \
    X(WNModel, out2_bias) X(WNModel, block) X(WNModel, past_a) X(WNModel, past_b)
#define WN_STATE_FIELDS(X)                                                                                            \
    X(WNState, rings) X(WNState, ring_offset) X(WNState, class_ring) X(WNState, prev_class) X(WNState, prev_value)  \
    X(WNState, pre) X(WNState, pre_offset) X(WNState, step) X(WNState, batch) X(WNState, pad_) X(WNState, codes)    \
    X(WNState, code_scale) X(WNState, code_sum) X(WNState, code_offset)
#define WN_TERM_FIELDS(X)                                                                                             \
    X(WNTerm, rows) X(WNTerm, stride) X(WNTerm, x) X(WNTerm, a) X(WNTerm, add) X(WNTerm, lo) X(WNTerm, n_rows)      \
    X(WNTerm, len) X(WNTerm, first) X(WNTerm, s) X(WNTerm, pad_)
#define WN_PLACE(S, f) (int64_t)offsetof(S, f), (int64_t)sizeof(S::f),
#define WN_NAME(S, f) " " #f

// Per struct, in the order WNMatrix, WNModel, WNState, WNTerm: the number of fields, sizeof, then (offsetof, sizeof) of each
// field. Writes at most n values to out and returns how many there are (n = 0 asks for the count).
extern "C" int64_t wn_layout(int64_t* out, int64_t n) {
    const int64_t matrix[] = {WN_MATRIX_FIELDS(WN_PLACE)};
    const int64_t model[] = {WN_MODEL_FIELDS(WN_PLACE)};
    const int64_t state[] = {WN_STATE_FIELDS(WN_PLACE)};
    const int64_t term[] = {WN_TERM_FIELDS(WN_PLACE)};
    int64_t k = 0;
    auto put = [&](int64_t v) { if (k < n) out[k] = v; ++k; };
    auto describe = [&](int64_t size, const int64_t* fields, int64_t count) {
        put(count / 2);
        put(size);
        for (int64_t i = 0; i < count; ++i) put(fields[i]);
    };
    describe(sizeof(WNMatrix), matrix, sizeof(matrix) / sizeof(matrix[0]));
    describe(sizeof(WNModel), model, sizeof(model) / sizeof(model[0]));
    describe(sizeof(WNState), state, sizeof(state) / sizeof(state[0]));
    describe(sizeof(WNTerm), term, sizeof(term) / sizeof(term[0]));
    return k;
}

// The names of the same structs and fields: "WNMatrix offset rows ...;WNModel ...;WNState ...;WNTerm ...".
extern "C" const char* wn_layout_names() {
    return "WNMatrix" WN_MATRIX_FIELDS(WN_NAME) ";WNModel" WN_MODEL_FIELDS(WN_NAME) ";WNState" WN_STATE_FIELDS(WN_NAME)
        ";WNTerm" WN_TERM_FIELDS(WN_NAME);
}
