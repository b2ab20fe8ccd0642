// The structs the fast-generation kernel shares with Python. Their ctypes mirror is wavenet_dilated/generation/abi.py;
// the loader compares the two through wn_layout (wavenet_kernel.cpp) every time it loads the library.
#pragma once
#include <stdint.h>

// ----------------------------------------------------------------------------------------------- packed matrices
// Weight precisions (WNModel.precision): the element type of WNModel.weights.
// WN_W8A8: int8 weights and int8 activations (qmatmul.h) for every layer's conv, skip and residual 1x1s; its output
// 1x1s are packed and multiplied as WN_INT8's.
enum { WN_FP32 = 0, WN_BF16 = 1, WN_INT8 = 2, WN_W8A8 = 3 };

struct WNMatrix {            // a packed (rows x in) matrix: blocks of 8*ry rows, each (in, rows_in_block) contiguous
    int64_t offset;          // into WNModel.weights (elements of the precision's type)
    int32_t rows, in, ry;    // ry: 8-row units per full block
    int32_t scale_offset;    // int8: where the rows' scales start in WNModel.scales
};

struct WNModel {
    int32_t n_layers, R, G, S, K, n_out, n_out_pad, head;   // head: 0 categorical, 1 mol, 2 gaussian
    int32_t n_classes, n_mix, first_table, n_threads;
    float res_scale, log_scale_min;
    int32_t precision;           // WN_FP32, WN_BF16, WN_INT8 or WN_W8A8
    int32_t exchange;            // 0: the threads sum partial residual products after a barrier per layer; 1: they
                                 //    exchange gate outputs and each computes the whole residual product (res holds
                                 //    the whole matrix for every thread; worker.h)
    const int32_t* dilation;     // [L]
    const int32_t* col0;         // [n_threads + 1]: thread t owns gate channels [col0[t], col0[t+1]) of G/2
    const int32_t* row0;         // [n_threads + 1]: thread t owns rows [row0[t], row0[t+1]) of the first output layer
    const WNMatrix* conv_a;      // [L][nt] thread t's rows of the tanh half of the dilated conv (K*R inputs, taps
                                 //         oldest first)
    const WNMatrix* conv_b;      // [L][nt] the same rows of the sigmoid half
    const WNMatrix* skip;        // [L][nt] thread t's columns of the skip 1x1 (S x cols)
    const WNMatrix* res;         // [L][nt] thread t's columns of the residual 1x1 (R x cols; exchange: all of
                                 //         them), pre-scaled by res_scale; the last layer's is unused
    const void* weights;         // every packed matrix, elements of the precision's type (fp32, bf16 bits, int8)
    const float* scales;         // int8: per packed row, what its sums are multiplied by (else unused)
    const float* res_bias;       // [L][R] pre-scaled by res_scale
    const float* skip_bias;      // [S] sum over layers of the skip biases
    const float* table;          // first_table: [K][n_classes][G]: tap j's conv weights times the embedding
    const float* embed;          // categorical: [n_classes][R]; continuous: [2][R] (weight, bias of the 1x1)
    const WNMatrix* out1;        // [nt] thread t's rows of the first output 1x1 (S x S, pre-scaled by skip_scale)
    const WNMatrix* out2;        // [nt] thread t's columns of the second (n_out_pad x S)
    const float* out1_bias;      // [S]
    const float* out2_bias;      // [n_out_pad]
    const int32_t* block;        // [L] steps per precomputed block of past taps (1: the layer is not blocked)
    const WNMatrix* past_a;      // [L][nt] blocked layers: thread t's rows of the tanh half's past taps ((K-1)*R
                                 //         inputs, oldest first); conv_a then holds only the current tap (R inputs)
    const WNMatrix* past_b;      // [L][nt] the same for the sigmoid half
};

struct WNState {
    float* rings;                // all layers' ring buffers, (slots_l, B, R) each, zero-initialised
    const int64_t* ring_offset;  // [L]
    int32_t* class_ring;         // first_table: ((K-1)*d0 + 1, B) classes of layer 0, -1 = before the start
    int64_t* prev_class;         // [B] the last sample (categorical)
    float* prev_value;           // [B] the last sample (continuous)
    float* pre;                  // blocked layers' past-tap sums for the current block, (block_l, B, G) each
    const int64_t* pre_offset;   // [L]
    int64_t step;                // samples generated so far
    int32_t batch, pad_;
    // WN_W8A8: every layer's input codes, their scales and code sums (qmatmul.h quantize_dynamic), in rings of
    // P_l + block_l - 1 slots (the first block_l - 1 slots again after the last), B columns each (null otherwise)
    int8_t* codes;               // (slots_l, B, R) each
    float* code_scale;           // (slots_l, B) each
    int32_t* code_sum;           // (slots_l, B) each
    const int64_t* code_offset;  // [L] where each layer's starts, in columns (codes: times R)
};

// The per-step additive term of every layer's pre-activation (conditioning projections + speaker projection + conv
// bias), (B, L, G) floats for step t of a call, in one of two forms:
// - s == 0: rows, term(t) = rows + t * stride (stride 0: the same term for every step);
// - s > 0: the last stage of the conditioning upsampler, made per step by the threads that read it (each its own
//   channels), so no full-rate copy of the term passes through memory: with n = first + t and p = n mod s,
//   term(t) = add + (a[3p] X(n/s - 1) + a[3p+1] X(n/s) + a[3p+2] X(n/s + 1)) where X(q) = x + (q - lo) * B*L*G for
//   0 <= q < len and lo <= q < lo + n_rows (the rows this call needs), else no term (wn_polyphase's arithmetic).
struct WNTerm {
    const float* rows;
    int64_t stride;
    const float* x;              // s > 0: the stage's input rows
    const float* a;              // [s][3] the stage's per-phase taps
    const float* add;            // [B][L][G] added to every step's term (the constant part)
    int64_t lo, n_rows, len;     // the first row held in x, how many, the input's length at that rate
    int64_t first;               // the upsampled position of the call's first step
    int32_t s, pad_;
};

// The layout and the names of the four structs above, for the loader to compare with abi.py (wavenet_kernel.cpp).
extern "C" int64_t wn_layout(int64_t* out, int64_t n);
extern "C" const char* wn_layout_names();
