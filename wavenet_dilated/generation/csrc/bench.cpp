// The benchmark's ceilings of this machine (wavenet_dilated/bench): fp32 FMA throughput and read bandwidth, per
// thread count, measured by code of the same kind as the generation loop (FMAs on registers and streaming loads of the
// vectors of simd.h, the kernel's ISA). A library of its own, built by the same machinery as the kernel
// (generation/kernel.py).
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <atomic>

#include "simd.h"

static double now_s() { timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }

struct LimitArg { int64_t iters, bytes; int32_t reps; float seed; double sink; std::atomic<int>* ready; int n; };

static void start_together(LimitArg* a) {
    a->ready->fetch_add(1);
    while (a->ready->load() < a->n) cpu_relax();
}

static void* fma_worker(void* p) {
    LimitArg* a = (LimitArg*)p;
    start_together(a);
    // 10 independent accumulators (FMA latency x throughput on current cores), distinct so nothing is merged
    const vf x = splat(0.999f), y = splat(1e-6f);
    vf v[10];
    for (int i = 0; i < 10; ++i) v[i] = splat(a->seed + i);
    for (int64_t k = 0; k < a->iters; ++k)
        for (int i = 0; i < 10; ++i) v[i] = fmadd(v[i], x, y);
    float s = 0.0f;
    for (int i = 0; i < 10; ++i) s += v[i][0];
    a->sink = s;
    return nullptr;
}

static void* read_worker(void* p) {
    LimitArg* a = (LimitArg*)p;
    const int64_t n = a->bytes / 128 * 32;     // floats, a multiple of 32 (and of 4 vectors of any width)
    float* buf = (float*)aligned_alloc(64, (size_t)n * sizeof(float) + 64);
    if (!buf) { a->sink = -1.0; start_together(a); return nullptr; }
    for (int64_t i = 0; i < n; ++i) buf[i] = a->seed;
    start_together(a);
    vf a0{}, a1{}, a2{}, a3{};
    for (int r = 0; r < a->reps; ++r)
        for (int64_t i = 0; i < n; i += 4 * WN_W) {
            a0 += loadv(buf + i);
            a1 += loadv(buf + i + WN_W);
            a2 += loadv(buf + i + 2 * WN_W);
            a3 += loadv(buf + i + 3 * WN_W);
        }
    a->sink = ((a0 + a1) + (a2 + a3))[0];
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
    while (ready.load() < threads) cpu_relax();                  // every buffer is written (page faults done)
    const double t0 = now_s();
    ready.fetch_add(1);
    for (int i = 0; i < started; ++i) pthread_join(th[i], nullptr);
    const double t = now_s() - t0;
    for (int i = 0; i < started; ++i) if (args[i].sink < 0) return -1.0;
    return started == threads ? t : -1.0;
}

// fp32 GFLOP/s of `threads` threads each doing `iters` x 10 independent WN_W-wide FMAs; negative on failure.
extern "C" double wn_fma_gflops(int32_t threads, int64_t iters) {
    const double t = run_limit(fma_worker, threads, iters, 0, 0);
    return t > 0 ? (double)threads * iters * 10 * 2 * WN_W / t * 1e-9 : -1.0;
}

// GB/s read by `threads` threads each summing its own `bytes` buffer `reps` times; negative on failure.
extern "C" double wn_read_gbps(int32_t threads, int64_t bytes, int32_t reps) {
    const double t = run_limit(read_worker, threads, 0, bytes, reps);
    return t > 0 ? (double)threads * (bytes / 128 * 128) * reps / t * 1e-9 : -1.0;
}
