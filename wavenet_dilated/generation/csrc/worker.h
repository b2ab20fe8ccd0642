// One thread's share of the fast-generation kernel's per-sample loop (run by wn_run in wavenet_kernel.cpp): the
// barrier the threads meet at, what a call shares between them (Run), and the Worker whose methods are the phases of
// a step.
#pragma once
#include <sched.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <atomic>

#include "matmul.h"
#include "qmatmul.h"
#include "sampling.h"
#include "simd.h"
#include "simd_math.h"
#include "sync.h"
#include "wavenet_kernel.h"

// ----------------------------------------------------------------------------------------------- the loop
struct Run {
    const WNModel* m;
    WNState* s;
    int64_t n_steps;
    WNTerm term;                // the per-step additive term (wavenet_kernel.h)
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
    XLine* xchg;                // [2][nt][xlines] the gate-output exchange, double-buffered by exchange number
    int32_t xlines;             // lines per thread and buffer
    int cpu[64];                // the CPU each thread runs on, or -1 (not pinned)
    Barrier barrier;
};

static float* scratch(size_t n) {
    const size_t bytes = (n * sizeof(float) + 64 + 63) / 64 * 64;
    float* p = (float*)aligned_alloc(64, bytes);
    if (p) memset(p, 0, bytes);
    return p;
}

// The phases of one step below are methods so that each reads on its own; forced inline so that the loop compiles as
// one function, with the worker's fields in registers as the locals they replace were.
#define WN_INLINE __attribute__((always_inline)) inline

// One thread's share of the loop. Thread t owns the gate channels [c0, c0 + cw): it computes those rows of the dilated
// conv, their gate, and the products of its columns of the skip and residual 1x1s. The residual products of all threads
// are summed (in thread order, so every thread gets the same bits) into the next layer's input after one barrier per
// layer; the skip sums once per sample. Every thread then computes the same logits and draws the same sample.
// A step is begin_step, layer(l) for every layer, output, draw.
struct Worker {
    Run* const run;
    const WNModel* const m;
    WNState* const s;
    const int tid;
    const int L, R, G, S, K, H, B;
    const int nt, NO;
    const int c0, cw;               // the gate channels this thread owns
    const int s0, sw;               // the rows of the first output 1x1 this thread owns
    const bool quantized;
    const bool w8a8;                // WN_W8A8: the layers' products take int8 codes of their inputs (qmatmul.h)
    const bool zx;                  // the gate-output exchange (WNModel.exchange, more than one thread)
    int64_t epoch = 0;
    int phase = 0;
    float* h;
    float* z;
    float* relu_skip;
    float* hidden;
    float* logits;
    float* work;
    float* xpast;                   // a block's past inputs, column-major
    float* tbuf;                    // an upsampled term (WNTerm.s > 0): this thread's channels of one layer, (B, G)
    int64_t* prev_i;
    float* prev_f;
    float* my_skip;
    // w8a8: codes, scales and code sums of this layer's input at this step (B, R) (the earlier inputs' are in the
    // state's code rings), and of the gate output (B, cw; scale 1/127)
    int8_t* xq = nullptr;
    float* xs = nullptr;
    int32_t* xsum = nullptr;
    int q0 = 0, q1 = 0;             // the bytes of a column of codes this thread stores in the code ring
    int8_t* zq = nullptr;
    float* zs = nullptr;
    int32_t* zsum = nullptr;
    // the step at hand
    int64_t t = 0, step = 0;
    const float* cond = nullptr;    // rows term: the step's (B, L, G)
    const float* up_row[3];         // upsampled term: the step's input rows and their taps (up_k of them)
    float up_coef[3];
    int up_k = 0;
    const float* x_prev = nullptr;  // the previous layer's input (B, R), or null for a table first layer
    // the layer at hand
    int d = 0;
    int64_t P = 0, slot = 0;
    float* ring = nullptr;
    float* x_now = nullptr;         // this layer's input at this step (B, R): the thread's own copy (xbuf)
    float* xbuf[2];                 // x_now of even and odd layers (the one before stays x_prev)
    // the gate-output exchange: every thread's z of the layer, (B, H) (w8a8: their codes, code sums and scales)
    float* zall = nullptr;
    int8_t* zqall = nullptr;
    int32_t* zqsum = nullptr;       // (B) the code sums of one part of zqall
    float* zqs = nullptr;
    int32_t* yres = nullptr;        // w8a8: the residual product's int32 sums (B, ldr), the own part's made before
    int ldr = 0;                    // the others' codes arrive
    int32_t xn = 0;                 // exchanges so far
    int w0 = 0, w1 = 0;             // the channels of x_now this thread stores in the shared ring
    const float* tm = nullptr;      // this layer's term at this step: column b at tm + b * ldt (layer_term)
    int64_t ldt = 0;

    Worker(Run* run_, int tid_)
        : run(run_), m(run_->m), s(run_->s), tid(tid_), L(m->n_layers), R(m->R), G(m->G), S(m->S), K(m->K),
          H(G / 2), B(s->batch), nt(m->n_threads), NO(m->n_out_pad), c0(m->col0[tid]),
          cw(m->col0[tid + 1] - c0), s0(m->row0[tid]), sw(m->row0[tid + 1] - s0), quantized(m->head == 0),
          w8a8(m->precision == WN_W8A8), zx(m->exchange != 0 && nt > 1) {
        h = scratch((size_t)B * 2 * (cw > 0 ? cw : 1));
        z = scratch((size_t)B * (cw > 0 ? cw : 1));
        relu_skip = scratch((size_t)B * S);
        hidden = scratch((size_t)B * (sw > 0 ? sw : 1));
        logits = scratch((size_t)B * NO);
        work = scratch((size_t)NO + 64);
        int max_block = 1;
        for (int l = 0; l < L; ++l) max_block = m->block[l] > max_block ? m->block[l] : max_block;
        xpast = w8a8 ? nullptr : scratch((size_t)max_block * B * (K - 1) * R + 1);   // w8a8 reads the code rings
        tbuf = scratch((size_t)B * G);
        xbuf[0] = scratch((size_t)B * R);
        xbuf[1] = scratch((size_t)B * R);
        if (zx && w8a8) {
            zqall = (int8_t*)scratch(((size_t)B * H + 3) / 4);
            zqsum = (int32_t*)scratch(B);
            zqs = scratch(B);
            for (int b = 0; b < B; ++b) zqs[b] = 1.0f / 127.0f;
            ldr = (R + WN_QTILE - 1) / WN_QTILE * WN_QTILE;
            yres = (int32_t*)scratch((size_t)B * ldr);
        } else if (zx) {
            zall = scratch((size_t)B * H);
        }
        w0 = R / 16 * tid / nt * 16;
        w1 = tid + 1 == nt ? R : R / 16 * (tid + 1) / nt * 16;
        prev_i = (int64_t*)malloc(sizeof(int64_t) * B);
        prev_f = (float*)malloc(sizeof(float) * B);
        my_skip = run->skip_part + (int64_t)tid * B * S;
        for (int b = 0; b < B; ++b) { prev_i[b] = s->prev_class[b]; prev_f[b] = s->prev_value[b]; }
        if (w8a8) {
            xq = (int8_t*)scratch(((size_t)B * R + 3) / 4);
            xs = scratch(B);
            xsum = (int32_t*)scratch(B);
            q0 = R / 64 * tid / nt * 64;
            q1 = tid + 1 == nt ? R : R / 64 * (tid + 1) / nt * 64;
            zq = (int8_t*)scratch(((size_t)B * (cw > 0 ? cw : 1) + 3) / 4);
            zs = scratch(B);
            zsum = (int32_t*)scratch(B);
            for (int b = 0; b < B; ++b) zs[b] = 1.0f / 127.0f;
        }
    }
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;
    ~Worker() {
        free(h); free(z); free(relu_skip); free(hidden); free(logits); free(work); free(prev_i); free(prev_f);
        free(xpast); free(tbuf); free(xbuf[0]); free(xbuf[1]); free(zall); free(zqall); free(zqsum); free(zqs);
        free(yres);
        free(xq); free(xs); free(xsum);
        free(zq); free(zs); free(zsum);
    }

    // The inputs of step t (forced ones, layer 0's class ring) and the skip sums' start.
    WN_INLINE void begin_step(int64_t t_) {
        t = t_;
        step = s->step + t;
        const WNTerm& T = run->term;
        if (T.s > 0) {
            const int64_t n = T.first + t, f = n / T.s;
            const int p = (int)(n - f * T.s);
            up_k = 0;
            for (int j = 0; j < 3; ++j) {
                const int64_t q = f + j - 1;
                if (q < 0 || q >= T.len || q < T.lo || q >= T.lo + T.n_rows) continue;
                up_row[up_k] = T.x + (q - T.lo) * B * L * G;
                up_coef[up_k] = T.a[p * 3 + j];
                ++up_k;
            }
        } else {
            cond = T.rows + t * T.stride;
        }
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
        x_prev = nullptr;
    }

    // Layer l of the step: its input, this thread's rows of the dilated conv and their gate, the products of its
    // columns of the skip and residual 1x1s; then the barrier after which every thread's parts are in.
    WN_INLINE void layer(int l) {
        d = m->dilation[l];
        P = (int64_t)(K - 1) * d + 1;
        slot = step % P;
        ring = s->rings + s->ring_offset[l];
        x_now = xbuf[l & 1];
        layer_term(l);
        layer_input(l);
        if (w8a8 && !(l == 0 && m->first_table)) {
            for (int b = 0; b < B; ++b)
                quantize_dynamic(x_now + (int64_t)b * R, R, xq + (int64_t)b * R, xs + b, xsum + b);
            store_codes(l);
        } else if (!(l == 0 && m->first_table)) {
            // the ring gets x_now for the later steps' past taps: every thread computed all of it, each stores its
            // own channels (no cache line written by two cores); the other threads' are in after this layer's barrier
            float* dst = ring + slot * B * R;
            for (int b = 0; b < B; ++b)
                memcpy(dst + (int64_t)b * R + w0, x_now + (int64_t)b * R + w0, sizeof(float) * (w1 - w0));
        }
        if (cw > 0) {
            if (l == 0 && m->first_table) conv_from_tables();
            else if (m->block[l] > 1) conv_blocked(l);
            else conv_direct(l);
            for (int b = 0; b < B; ++b) {
                const float* hb = h + (int64_t)b * 2 * cw;
                gate(hb, hb + cw, z + (int64_t)b * cw, cw);
            }
        }
        const WNMatrix& Ms = m->skip[(int64_t)l * nt + tid];
        const WNMatrix& Mr = m->res[(int64_t)l * nt + tid];
        float* part = run->res_part + ((int64_t)(phase & 1) * nt + tid) * B * R;
        const bool exchange = zx && l < L - 1;
        if (w8a8) {
            for (int b = 0; b < B; ++b) zsum[b] = quantize_unit(z + (int64_t)b * cw, cw, zq + (int64_t)b * cw);
            if (exchange) publish(zq, 1);
            QInputs zin = single(zq, zs, zsum, cw);
            qmatmul(m, Ms, zin, B, my_skip, S, my_skip, S);
            if (l < L - 1 && !zx) qmatmul(m, Mr, zin, B, nullptr, 0, part, R);
            if (exchange) {   // the own columns' part of the residual product while the others' codes travel
                memset(yres, 0, sizeof(int32_t) * B * ldr);
                zin.g0 = c0 / 4;
                qmatmul_acc(m, Mr, zin, B, yres, ldr);
            }
        } else {
            if (exchange) publish(z, sizeof(float));
            Inputs zin;
            zin.parts = 1; zin.ldx = cw; zin.x[0] = z; zin.n[0] = cw;
            matmul_blocks(m, Ms, 0, n_blocks(Ms), zin, B, my_skip, S, my_skip, S);
            if (l < L - 1 && !zx) matmul_blocks(m, Mr, 0, n_blocks(Mr), zin, B, nullptr, 0, part, R);
        }
        x_prev = (l == 0 && m->first_table) ? nullptr : x_now;
        if (exchange) gather(w8a8 ? (const void*)zq : (const void*)z, w8a8 ? 1 : (int)sizeof(float));
        else run->barrier.wait(tid, epoch);  // every thread's residual (and, after the last layer, skip) parts are in
        ++phase;
    }

    // The gate-output exchange (WNModel.exchange): instead of partial residual products summed after a barrier,
    // every thread publishes its z (w8a8: their codes) and, once it has the others', computes the whole residual
    // product itself (layer_input) — one cache-line transfer per 60 bytes per layer, and the skip product done while
    // the others' lines are on their way.
    WN_INLINE XLine* xbuffer(int q) { return run->xchg + ((int64_t)(xn & 1) * nt + q) * run->xlines; }

    WN_INLINE void publish(const void* payload, int es) {
        ++xn;
        XLine* lines = xbuffer(tid);
        const char* src = (const char*)payload;
        const int64_t bytes = (int64_t)B * cw * es;
        for (int i = 0, n = xlines_for(bytes); i < n; ++i) {
            const int64_t off = (int64_t)i * WN_XLINE_BYTES;
            memcpy(lines[i].data, src + off, bytes - off < WN_XLINE_BYTES ? bytes - off : WN_XLINE_BYTES);
            lines[i].number.store(xn, std::memory_order_release);
        }
    }

    // Every thread's payload of this exchange into zall / zqall (B, H): the own from `mine`, the others' once each of
    // their lines carries this exchange's number.
    WN_INLINE void gather(const void* mine, int es) {
        char* all = zx && w8a8 ? (char*)zqall : (char*)zall;
        for (int q = 0; q < nt; ++q) {
            const int cq = m->col0[q], wq = m->col0[q + 1] - cq;
            const int64_t bytes = (int64_t)B * wq * es;
            if (bytes == 0) continue;
            const char* src = (const char*)mine;
            if (q == tid && w8a8) continue;   // the own part is in yres already
            if (q != tid) {
                const XLine* lines = xbuffer(q);
                const int n = xlines_for(bytes);
                for (int spins = 0;; ++spins) {   // as Barrier::wait: re-reads, then paused, then yielding
                    bool ready = true;
                    for (int i = 0; i < n; ++i) ready &= lines[i].number.load(std::memory_order_acquire) == xn;
                    if (ready) break;
                    if (spins < 64) continue;
                    if (spins < 4000) cpu_relax();
                    else sched_yield();
                }
                for (int b = 0; b < B; ++b)
                    from_lines(lines, (int64_t)b * wq * es, (int64_t)wq * es, all + ((int64_t)b * H + cq) * es);
                continue;
            }
            for (int b = 0; b < B; ++b)
                memcpy(all + ((int64_t)b * H + cq) * es, src + (int64_t)b * wq * es, (size_t)wq * es);
        }
    }

    // defined in worker_layers.h: the code rings (w8a8), the layer's term, its dilated conv
    WN_INLINE void store_codes(int l);
    WN_INLINE void past_codes(int l, int64_t back, QInputs& in, int j) const;
    WN_INLINE void layer_term(int l);
    WN_INLINE void conv_from_tables();
    WN_INLINE void conv_blocked(int l);
    WN_INLINE void conv_direct(int l);

    // One part of B columns of n codes each, column-major.
    static QInputs single(const int8_t* q, const float* scale, const int32_t* sum, int n) {
        QInputs in;
        in.parts = 1; in.n = n; in.ldq = n; in.lds = 1;
        in.q[0] = q; in.scale[0] = scale; in.sum[0] = sum;
        return in;
    }

    // x_now: the continuous input's 1x1 embedding (layer 0), or the residual sum of the layer before (l > 0).
    WN_INLINE void layer_input(int l) {
        if (l == 0 && !m->first_table) {
            // continuous input: the 1x1 embedding (every thread writes the same values)
            for (int b = 0; b < B; ++b)
                for (int r = 0; r < R; ++r) x_now[b * R + r] = m->embed[r] * prev_f[b] + m->embed[R + r];
        } else if (l > 0 && zx) {
            // x_l = res_scale x_{l-1} + res_bias + W_res z, z gathered from every thread: the whole product here
            const float* bias = m->res_bias + (int64_t)(l - 1) * R;
            const vf scale = splat(m->res_scale);
            for (int b = 0; b < B; ++b) {
                const float* xp = x_prev ? x_prev + (int64_t)b * R : m->embed + prev_i[b] * R;
                float* xn_ = x_now + (int64_t)b * R;
                int r = 0;
                for (; r + WN_W <= R; r += WN_W) store(xn_ + r, fmadd(scale, loadv(xp + r), loadv(bias + r)));
                for (; r < R; ++r) xn_[r] = __builtin_fmaf(m->res_scale, xp[r], bias[r]);
            }
            const WNMatrix& Mr = m->res[(int64_t)(l - 1) * nt + tid];
            if (w8a8) {   // the other threads' columns into the integer sums, then scales and the rest
                for (int q = 0; q < nt; ++q) {
                    const int cq = m->col0[q], wq = m->col0[q + 1] - cq;
                    if (q == tid || wq == 0) continue;
                    for (int b = 0; b < B; ++b) zqsum[b] = code_sum(zqall + (int64_t)b * H + cq, wq);
                    QInputs in = single(zqall + cq, zqs, zqsum, wq);
                    in.ldq = H;
                    in.g0 = cq / 4;
                    qmatmul_acc(m, Mr, in, B, yres, ldr);
                }
                qfinish(m, Mr, yres, ldr, zqs, B, x_now, R, x_now, R);
            } else {
                Inputs zin;
                zin.parts = 1; zin.ldx = H; zin.x[0] = zall; zin.n[0] = H;
                matmul_blocks(m, Mr, 0, n_blocks(Mr), zin, B, x_now, R, x_now, R);
            }
        } else if (l > 0) {
            // x_l = res_scale x_{l-1} + res_bias + sum over threads of W_res[:, cols_t] z_t (same order everywhere)
            const float* bias = m->res_bias + (int64_t)(l - 1) * R;
            const float* parts = run->res_part + (int64_t)((phase - 1) & 1) * nt * B * R;
            const vf scale = splat(m->res_scale);
            for (int b = 0; b < B; ++b) {
                const float* xp = x_prev ? x_prev + (int64_t)b * R : m->embed + prev_i[b] * R;
                float* xn = x_now + (int64_t)b * R;
                int r = 0;
                for (; r + WN_W <= R; r += WN_W) {   // vector loads of the other threads' parts keep several
                                                     // cache-line transfers in flight
                    vf v = fmadd(scale, loadv(xp + r), loadv(bias + r));
                    for (int q = 0; q < nt; ++q) v += loadv(parts + ((int64_t)q * B + b) * R + r);
                    store(xn + r, v);
                }
                for (; r < R; ++r) {                 // R is a multiple of 8, not always of the vector width
                    float v = __builtin_fmaf(m->res_scale, xp[r], bias[r]);
                    for (int q = 0; q < nt; ++q) v += parts[((int64_t)q * B + b) * R + r];
                    xn[r] = v;
                }
            }
        }
    }

    // The step's logits (every thread the same): relu -> 1x1 (skip_scale folded) -> relu -> 1x1, thread t computing
    // out1's rows [s0, s0 + sw) and its part of out2; one barrier, then every thread sums the parts.
    WN_INLINE void output() {
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
    }

    // The step's samples (the next step's inputs) and what the caller asked to get back (thread 0 writes it).
    WN_INLINE void draw() {
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

    // The last samples back into the state, for the next call to continue from.
    void finish() {
        if (tid == 0) {
            for (int b = 0; b < B; ++b) { s->prev_class[b] = prev_i[b]; s->prev_value[b] = prev_f[b]; }
        }
    }
};

#include "worker_layers.h"
