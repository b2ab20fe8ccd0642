// wavenet_dilated fast generation kernel: the per-sample loop over all layers, on one or more threads, and the
// conditioning upsampler. AVX2 + FMA, fp32. Built and loaded by wavenet_dilated/generation/kernel.py; what it
// computes is documented in wavenet_dilated/generation/fast.py.
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <atomic>

#include "matmul.h"
#include "sampling.h"
#include "simd_math.h"
#include "wavenet_kernel.h"

// ----------------------------------------------------------------------------------------------- threads
// Each thread publishes how many barriers it has reached in a cache line of its own and waits until every other
// thread's count has caught up: one store to a line it owns and one read per other thread, no shared atomic
// read-modify-write (a fetch_add on one shared counter costs a contended cache line per thread and barrier).
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

// ----------------------------------------------------------------------------------------------- layout
// Every field of the structs in wavenet_kernel.h, in declaration order: what wn_layout and wn_layout_names report for
// the loader to compare with abi.py, which refuses a library whose structs differ from its ctypes mirror.
#define WN_MATRIX_FIELDS(X) X(WNMatrix, offset) X(WNMatrix, rows) X(WNMatrix, in) X(WNMatrix, ry) X(WNMatrix, pad_)
#define WN_MODEL_FIELDS(X)                                                                                            \
    X(WNModel, n_layers) X(WNModel, R) X(WNModel, G) X(WNModel, S) X(WNModel, K) X(WNModel, n_out)                   \
    X(WNModel, n_out_pad) X(WNModel, head) X(WNModel, n_classes) X(WNModel, n_mix) X(WNModel, first_table)           \
    X(WNModel, n_threads) X(WNModel, res_scale) X(WNModel, log_scale_min) X(WNModel, dilation) X(WNModel, col0)     \
    X(WNModel, row0) X(WNModel, conv_a) X(WNModel, conv_b) X(WNModel, skip) X(WNModel, res) X(WNModel, weights)     \
    X(WNModel, res_bias) X(WNModel, skip_bias) X(WNModel, table) X(WNModel, embed) X(WNModel, out1)                  \
    X(WNModel, out2) X(WNModel, out1_bias) X(WNModel, out2_bias) X(WNModel, block) X(WNModel, past_a)                \
    X(WNModel, past_b)
#define WN_STATE_FIELDS(X)                                                                                            \
    X(WNState, rings) X(WNState, ring_offset) X(WNState, class_ring) X(WNState, prev_class) X(WNState, prev_value)  \
    X(WNState, pre) X(WNState, pre_offset) X(WNState, step) X(WNState, batch)
#define WN_PLACE(S, f) (int64_t)offsetof(S, f), (int64_t)sizeof(S::f),
#define WN_NAME(S, f) " " #f

// Per struct, in the order WNMatrix, WNModel, WNState: the number of fields, sizeof, then (offsetof, sizeof) of each
// field. Writes at most n values to out and returns how many there are (n = 0 asks for the count).
extern "C" int64_t wn_layout(int64_t* out, int64_t n) {
    const int64_t matrix[] = {WN_MATRIX_FIELDS(WN_PLACE)};
    const int64_t model[] = {WN_MODEL_FIELDS(WN_PLACE)};
    const int64_t state[] = {WN_STATE_FIELDS(WN_PLACE)};
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
    return k;
}

// The names of the same structs and fields: "WNMatrix offset rows ...;WNModel ...;WNState ...".
extern "C" const char* wn_layout_names() {
    return "WNMatrix" WN_MATRIX_FIELDS(WN_NAME) ";WNModel" WN_MODEL_FIELDS(WN_NAME) ";WNState" WN_STATE_FIELDS(WN_NAME);
}
