// The layer phases of Worker (worker.h) that read the conditioning term and the past inputs: the term of a layer,
// the code rings of w8a8, and the three ways of making a layer's dilated conv (per-class tables, blocked past taps,
// all taps at once). Included at the end of worker.h, after the struct they belong to.
#pragma once

// w8a8: the layer's code ring (WNState.codes) gets this step's codes at `slot`, and again at P + slot while that
// is below P + block - 1, so that every block's window of past columns is contiguous. Each thread stores its own
// 64-byte pieces of the codes, thread 0 the scales and sums.
inline void Worker::store_codes(int l) {
    const int nb = m->block[l];
    int8_t* codes = s->codes + s->code_offset[l] * R;
    float* scale = s->code_scale + s->code_offset[l];
    int32_t* sum = s->code_sum + s->code_offset[l];
    for (int64_t k = slot; k < P + nb - 1; k += P)
        for (int b = 0; b < B; ++b) {
            const int64_t c = k * B + b;
            if (q1 > q0) memcpy(codes + c * R + q0, xq + (int64_t)b * R + q0, (size_t)(q1 - q0));
            if (tid == 0) { scale[c] = xs[b]; sum[c] = xsum[b]; }
        }
}

// w8a8: the codes of layer l's input `back` steps ago, as part j of a product's inputs (columns: b, then the
// next steps' b, … in the mirrored window of store_codes).
inline void Worker::past_codes(int l, int64_t back, QInputs& in, int j) const {
    const int64_t c = ((slot - back) % P + P) % P * B + s->code_offset[l];
    in.q[j] = s->codes + c * R;
    in.scale[j] = s->code_scale + c;
    in.sum[j] = s->code_sum + c;
}

// tm, ldt: layer l's term at this step, in this thread's channels [c0, c0 + cw) and [H + c0, H + c0 + cw) — a
// slice of the rows term, or the upsampler's last stage made here (wn_polyphase's arithmetic, the same bits).
inline void Worker::layer_term(int l) {
    if (run->term.s == 0) {
        tm = cond + (int64_t)l * G;
        ldt = (int64_t)L * G;
        return;
    }
    tm = tbuf;
    ldt = G;
    const vf k0 = splat(up_k > 0 ? up_coef[0] : 0.0f), k1 = splat(up_k > 1 ? up_coef[1] : 0.0f),
             k2 = splat(up_k > 2 ? up_coef[2] : 0.0f);
    for (int b = 0; b < B; ++b)
        for (int half = 0; half < 2; ++half) {
            const int64_t at = (int64_t)b * L * G + (int64_t)l * G + half * H + c0;
            const float* add = run->term.add + at;
            float* out = tbuf + (int64_t)b * G + half * H + c0;
            int i = 0;
            for (; i + WN_W <= cw; i += WN_W) {
                vf v{};
                if (up_k > 0) v = k0 * loadv(up_row[0] + at + i);
                if (up_k > 1) v = fmadd(k1, loadv(up_row[1] + at + i), v);
                if (up_k > 2) v = fmadd(k2, loadv(up_row[2] + at + i), v);
                store(out + i, loadv(add + i) + v);
            }
            for (; i < cw; ++i) {
                float v = up_k > 0 ? up_coef[0] * up_row[0][at + i] : 0.0f;
                if (up_k > 1) v = __builtin_fmaf(up_coef[1], up_row[1][at + i], v);
                if (up_k > 2) v = __builtin_fmaf(up_coef[2], up_row[2][at + i], v);
                out[i] = add[i] + v;
            }
        }
}

// h of layer 0 with a table first layer: its taps come from per-class tables,
// h = term + sum_j T_j[class at t - (K-1-j) d]
inline void Worker::conv_from_tables() {
    for (int b = 0; b < B; ++b) {
        float* hb = h + (int64_t)b * 2 * cw;
        const float* cb = tm + (int64_t)b * ldt;
        for (int r = 0; r < cw; ++r) { hb[r] = cb[c0 + r]; hb[cw + r] = cb[H + c0 + r]; }
        for (int j = 0; j < K; ++j) {
            const int64_t back = (int64_t)(K - 1 - j) * d;
            int64_t cls = back == 0 ? prev_i[b] : s->class_ring[((slot - back) % P + P) % P * B + b];
            if (cls < 0) continue;
            const float* row = m->table + ((int64_t)j * m->n_classes + cls) * G;
            for (int r = 0; r < cw; ++r) { hb[r] += row[c0 + r]; hb[cw + r] += row[H + c0 + r]; }
        }
    }
}

// h of a blocked layer: the taps before t were inputs at least d steps ago, so their products for the next
// nb <= d steps are one matrix product over nb*B columns, made when a block starts (weights read once per block
// instead of once per step); per step only the current tap is left.
inline void Worker::conv_blocked(int l) {
    const int nb = m->block[l];
    float* pre = s->pre + s->pre_offset[l];
    const int KR = (K - 1) * R;
    if (step % nb == 0 && w8a8) {   // the past taps' codes straight from the code ring
        QInputs pin;
        pin.parts = K - 1; pin.n = R; pin.ldq = R; pin.lds = 1;
        for (int j = 0; j < K - 1; ++j) past_codes(l, (int64_t)(K - 1 - j) * d, pin, j);
        qmatmul(m, m->past_a[(int64_t)l * nt + tid], pin, nb * B, nullptr, 0, pre + c0, G);
        qmatmul(m, m->past_b[(int64_t)l * nt + tid], pin, nb * B, nullptr, 0, pre + H + c0, G);
    } else if (step % nb == 0) {
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
        const float* cb = tm + (int64_t)b * ldt;
        const float* pb = pre_t + (int64_t)b * G;
        for (int r = 0; r < cw; ++r) {
            hb[r] = cb[c0 + r] + pb[c0 + r];
            hb[cw + r] = cb[H + c0 + r] + pb[H + c0 + r];
        }
    }
    const WNMatrix& Ma = m->conv_a[(int64_t)l * nt + tid];
    const WNMatrix& Mb = m->conv_b[(int64_t)l * nt + tid];
    if (w8a8) {
        const QInputs in = single(xq, xs, xsum, R);
        qmatmul(m, Ma, in, B, h, 2 * cw, h, 2 * cw);
        qmatmul(m, Mb, in, B, h + cw, 2 * cw, h + cw, 2 * cw);
        return;
    }
    Inputs in;
    in.parts = 1; in.ldx = R; in.x[0] = x_now; in.n[0] = R;
    matmul_blocks(m, Ma, 0, n_blocks(Ma), in, B, h, 2 * cw, h, 2 * cw);
    matmul_blocks(m, Mb, 0, n_blocks(Mb), in, B, h + cw, 2 * cw, h + cw, 2 * cw);
}

// h of any other layer: all K taps, read from the ring, in one product with the step's term as its start.
inline void Worker::conv_direct(int l) {
    const WNMatrix& Ma = m->conv_a[(int64_t)l * nt + tid];
    const WNMatrix& Mb = m->conv_b[(int64_t)l * nt + tid];
    const float* term = tm;
    if (w8a8) {   // the earlier taps' codes from the code ring, then this step's (made in layer())
        QInputs in;
        in.parts = K; in.n = R; in.ldq = R; in.lds = 1;
        for (int j = 0; j < K - 1; ++j) past_codes(l, (int64_t)(K - 1 - j) * d, in, j);
        in.q[K - 1] = xq; in.scale[K - 1] = xs; in.sum[K - 1] = xsum;
        qmatmul(m, Ma, in, B, term + c0, (int)ldt, h, 2 * cw);
        qmatmul(m, Mb, in, B, term + H + c0, (int)ldt, h + cw, 2 * cw);
        return;
    }
    Inputs in;
    in.parts = K;
    in.ldx = R;
    for (int j = 0; j < K; ++j) {
        const int64_t back = (int64_t)(K - 1 - j) * d;
        in.x[j] = back == 0 ? x_now : ring + ((slot - back) % P + P) % P * B * R;
        in.n[j] = R;
    }
    matmul_blocks(m, Ma, 0, n_blocks(Ma), in, B, term + c0, (int)ldt, h, 2 * cw);
    matmul_blocks(m, Mb, 0, n_blocks(Mb), in, B, term + H + c0, (int)ldt, h + cw, 2 * cw);
}
