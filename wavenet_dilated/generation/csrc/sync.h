// How the fast-generation kernel's threads meet (worker.h): a barrier, and the self-numbered cache lines of the
// gate-output exchange.
#pragma once
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <atomic>

#include "simd.h"

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
                // a few plain re-reads first (a pause instruction can take ~140 cycles on recent x86, a good part of
                // what the other thread needs to arrive), then paused spinning, then yielding
                if (++spins < 64) continue;
                if (spins < 4000) cpu_relax();
                else sched_yield();     // a busy machine: do not burn the time slice of the thread we wait for
            }
        }
    }
};

// ----------------------------------------------------------------------------------------------- exchange
// What a thread publishes for the others in the gate-output exchange (WNModel.exchange): its payload in lines of 60
// bytes, each line carrying the exchange's number in its last 4 bytes, stored after the payload. x86 keeps stores in
// order and loads in order (and the release/acquire pair says so to the compiler and to other CPUs), so a reader
// that sees a line's number sees the payload before it: one cache-line transfer per line, no separate flag.
struct alignas(64) XLine {
    char data[60];
    std::atomic<int32_t> number;
};
#define WN_XLINE_BYTES 60

static inline int xlines_for(int64_t bytes) { return (int)((bytes + WN_XLINE_BYTES - 1) / WN_XLINE_BYTES); }

// The sum of n int8 codes.
static inline int32_t code_sum(const int8_t* q, int n) {
    int32_t t = 0;
    for (int i = 0; i < n; ++i) t += q[i];
    return t;
}

// n bytes of a published payload from byte `off` on.
static inline void from_lines(const XLine* lines, int64_t off, int64_t n, char* dst) {
    while (n > 0) {
        const int64_t i = off / WN_XLINE_BYTES, o = off - i * WN_XLINE_BYTES;
        const int64_t k = n < WN_XLINE_BYTES - o ? n : WN_XLINE_BYTES - o;
        memcpy(dst, lines[i].data + o, (size_t)k);
        dst += k; off += k; n -= k;
    }
}
