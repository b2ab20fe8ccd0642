// The one vector layer of the compiled libraries: a float vector `vf` of WN_W lanes, the widest the target compiles
// for, written with GCC/Clang vector extensions (+ - * / and lane access are the compiler's own); only the few
// operations those lack (fused multiply-add, min/max, round, prefetch, spin-wait hint) are spelled per ISA here.
//
//   AVX-512F           WN_W 16  "avx512"     (unless WN_NO_AVX512 is defined: then the AVX2 layer below)
//   AVX2 + FMA         WN_W 8   "avx2+fma"
//   aarch64 NEON       WN_W 4   "neon"
//   anything else      WN_W 4   "generic"    (the compiler's lowering of the vector extensions; a*b + c unfused)
//
// The ISA is chosen from the compiler's predefined macros, i.e. from -march (kernel.py builds with -march=native, or
// -mavx2 -mfma when WAVENET_DILATED_ISA=avx2); wn_isa() names what this build got.
#pragma once
#include <stdint.h>
// the 8-lane type below is passed between static inline functions only: no ABI to keep across builds
#pragma GCC diagnostic ignored "-Wpsabi"
#include <string.h>

#if defined(__AVX512F__) && !defined(WN_NO_AVX512)
#include <immintrin.h>
#define WN_ISA "avx512"
#define WN_W 16
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define WN_ISA "avx2+fma"
#define WN_W 8
#elif defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>
#define WN_ISA "neon"
#define WN_W 4
#else
#define WN_ISA "generic"
#define WN_W 4
#endif

typedef float vf __attribute__((vector_size(4 * WN_W)));
typedef int32_t vi __attribute__((vector_size(4 * WN_W)));
typedef uint32_t vu __attribute__((vector_size(4 * WN_W)));
typedef uint16_t vu16 __attribute__((vector_size(2 * WN_W)));
typedef int8_t vi8 __attribute__((vector_size(WN_W)));
// 8 lanes: the packed matrices' row unit (kernel.py); with 16-lane vectors a block of an odd number of units ends in one
typedef float v8 __attribute__((vector_size(32)));
typedef uint32_t v8u __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));
typedef uint16_t v8u16 __attribute__((vector_size(16)));
typedef int8_t v8i8 __attribute__((vector_size(8)));

// ------------------------------------------------------------------------------------- loads, stores, broadcasts
template <class V, class T>
static inline V load_as(const T* p) { V v; memcpy(&v, p, sizeof(V)); return v; }   // unaligned; one vector load
template <class V>
static inline void store(float* p, V v) { memcpy(p, &v, sizeof(V)); }
static inline vf loadv(const float* p) { return load_as<vf>(p); }
static inline vf splat(float x) { return vf{} + x; }
static inline v8 splat8(float x) { return v8{} + x; }

// ------------------------------------------------------------------------------------- weights of each precision
// Weights are fp32, bf16 (the upper half of an fp32: widened exactly by a 16-bit shift) or int8 (a per-row scale is
// applied to the sums, not to every weight). Each load widens one vector's worth to fp32.
typedef uint16_t bf16_t;
template <class V> struct Lanes;
template <> struct Lanes<vf> { typedef vu u; typedef vi i; typedef vu16 u16; typedef vi8 i8; };
#if WN_W != 8   // else v8 is vf
template <> struct Lanes<v8> { typedef v8u u; typedef v8i i; typedef v8u16 u16; typedef v8i8 i8; };
#endif

template <class V>
static inline V load_w(const float* p) { return load_as<V>(p); }
// (GCC lowers __builtin_convertvector from 8- and 16-bit lanes one lane at a time: the x86 and NEON widenings are
// spelled out.)
template <class V>
static inline V load_w(const bf16_t* p) {
#if defined(__AVX512F__)
    if constexpr (sizeof(V) == 64)
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(load_as<__m256i>(p)), 16));
#endif
#if defined(__AVX2__)
    if constexpr (sizeof(V) == 32)
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(load_as<__m128i>(p)), 16));
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
    if constexpr (sizeof(V) == 16) return (V)vshll_n_u16(vld1_u16(p), 16);
#endif
    typedef typename Lanes<V>::u U;
    return (V)(__builtin_convertvector(load_as<typename Lanes<V>::u16>(p), U) << 16);
}
template <class V>
static inline V load_w(const int8_t* p) {
#if defined(__AVX512F__)
    if constexpr (sizeof(V) == 64) return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(load_as<__m128i>(p)));
#endif
#if defined(__AVX2__)
    if constexpr (sizeof(V) == 32) {
        int64_t bytes;
        memcpy(&bytes, p, 8);
        return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(bytes)));
    }
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
    if constexpr (sizeof(V) == 16) {
        int32_t bytes;
        memcpy(&bytes, p, 4);
        return vcvtq_f32_s32(vmovl_s16(vget_low_s16(vmovl_s8(vreinterpret_s8_s32(vdup_n_s32(bytes))))));
    }
#endif
    typedef typename Lanes<V>::i I;   // widened to int32 first: one sign extension, then one conversion
    return __builtin_convertvector(__builtin_convertvector(load_as<typename Lanes<V>::i8>(p), I), V);
}

// ------------------------------------------------------------------------------------- fused multiply-add: a*b + c
static inline vf fmadd(vf a, vf b, vf c) {
#if WN_W == 16
    return _mm512_fmadd_ps(a, b, c);
#elif WN_W == 8
    return _mm256_fmadd_ps(a, b, c);
#elif defined(__aarch64__) && defined(__ARM_NEON)
    return vfmaq_f32(c, a, b);
#else
    return a * b + c;
#endif
}
#if WN_W != 8
static inline v8 fmadd(v8 a, v8 b, v8 c) {
#if defined(__AVX2__) && defined(__FMA__)
    return _mm256_fmadd_ps(a, b, c);
#else
    v8 r;
    for (int i = 0; i < 8; ++i) r[i] = __builtin_fmaf(a[i], b[i], c[i]);
    return r;
#endif
}
#endif

// ------------------------------------------------------------------------------------- min, max, round
static inline vf vmin(vf a, vf b) { return a < b ? a : b; }
static inline vf vmax(vf a, vf b) { return a > b ? a : b; }
static inline vf round_nearest(vf x) {   // ties to even, as the default rounding mode
#if WN_W == 16
    return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#elif WN_W == 8
    return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#elif defined(__aarch64__) && defined(__ARM_NEON)
    return vrndnq_f32(x);
#else
    vf r;
    for (int i = 0; i < WN_W; ++i) r[i] = __builtin_rintf(x[i]);
    return r;
#endif
}
// sum of the lanes, pairwise
static inline float hsum(vf v) {
    float s[WN_W];
    memcpy(s, &v, sizeof v);
    for (int n = WN_W / 2; n > 0; n /= 2)
        for (int i = 0; i < n; ++i) s[i] += s[i + n];
    return s[0];
}
// the largest lane, pairwise (a chain of log2(WN_W) steps instead of WN_W)
static inline float hmax(vf v) {
    float s[WN_W];
    memcpy(s, &v, sizeof v);
    for (int n = WN_W / 2; n > 0; n /= 2)
        for (int i = 0; i < n; ++i) s[i] = s[i + n] > s[i] ? s[i + n] : s[i];
    return s[0];
}

// ------------------------------------------------------------------------------------- memory and spinning
static inline void prefetch(const void* p) { __builtin_prefetch(p, 0, 3); }
static inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}
