/*
 * Plain-C f32 references for the microattn C tests: attention written straight from the math
 * (a loop over every key with the mask's definition, a two-pass softmax), independent of the
 * library's streaming kernels. Shared by host_test.c and the Cortex-M example; header-only.
 */
#ifndef MICROATTN_REFERENCE_H
#define MICROATTN_REFERENCE_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "microattn.h"

/* Deterministic pseudo-random floats in [-1, 1). */
static uint32_t ref_seed = 12345u;
static float ref_rand(void) {
    ref_seed = ref_seed * 1664525u + 1013904223u;
    return (float)(ref_seed >> 8) / (float)(1u << 24) * 2.0f - 1.0f;
}
static void ref_fill(float *x, size_t n, float amplitude) {
    for (size_t i = 0; i < n; i++) x[i] = amplitude * ref_rand();
}

/* sqrt(sum (a-b)^2 / sum b^2); 0 when both are zero. */
static double ref_rel_l2(const float *a, const float *b, size_t n) {
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    if (den == 0.0) return num == 0.0 ? 0.0 : 1.0;
    return sqrt(num / den);
}

static int64_t ref_div_floor(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static int ref_in_list(const size_t *list, size_t n, int64_t x) {
    for (size_t i = 0; i < n; i++)
        if ((int64_t)list[i] == x) return 1;
    return 0;
}

/* Whether one mask term lets the query at position p see key j (the header's definitions). */
static int ref_term_allows(const microattn_mask_term_t *t, int64_t p, int64_t j) {
    switch (t->kind) {
    case MICROATTN_MASK_NONE: return 1;
    case MICROATTN_MASK_CAUSAL: return j <= p;
    case MICROATTN_MASK_KEY_PADDING: return j < (int64_t)t->valid;
    case MICROATTN_MASK_SLIDING:
        return p - (int64_t)t->left <= j && j <= p + (int64_t)t->right;
    case MICROATTN_MASK_DILATED: {
        int64_t r = (int64_t)t->dilation, diff = j - p;
        if (r <= 0 || diff % r != 0) return 0;
        return -(int64_t)t->left <= diff / r && diff / r <= (int64_t)t->right;
    }
    case MICROATTN_MASK_GLOBAL_SLIDING:
        return (p - (int64_t)t->left <= j && j <= p + (int64_t)t->right) ||
               ref_in_list(t->global, t->global_len, j) || ref_in_list(t->global, t->global_len, p);
    case MICROATTN_MASK_BLOCK_SPARSE: {
        int64_t qb = ref_div_floor(p, (int64_t)t->block), kb = j / (int64_t)t->block;
        int64_t gap = qb > kb ? qb - kb : kb - qb;
        if (gap <= (int64_t)t->window) return 1;
        if (ref_in_list(t->global, t->global_len, qb) || ref_in_list(t->global, t->global_len, kb))
            return 1;
        for (size_t i = 0; i < t->random_len; i++)
            if ((int64_t)t->random[i].query_block == qb && (int64_t)t->random[i].key_block == kb)
                return 1;
        return 0;
    }
    default: return 0;
    }
}

static int ref_mask_allows(const microattn_mask_t *m, size_t row, size_t key) {
    int64_t p = (int64_t)row + m->q_pos_offset;
    for (size_t t = 0; t < m->num_terms; t++)
        if (!ref_term_allows(&m->terms[t], p, (int64_t)key)) return 0;
    return 1;
}

/*
 * Multi-head SDPA with dot-product scores, any mask, optional ALiBi slopes (one per query
 * head, NULL for none). Logits for one row are kept in `logits` (lk floats). Rows with no
 * allowed key are zero.
 */
static void ref_sdpa(const float *q, const float *k, const float *v, float *out,
                     microattn_shape_t s, float scale, const microattn_mask_t *mask,
                     const float *alibi, float *logits) {
    size_t group = s.heads / s.kv_heads;
    for (size_t h = 0; h < s.heads; h++) {
        const float *kh = k + (h / group) * s.lk * s.d;
        const float *vh = v + (h / group) * s.lk * s.dv;
        for (size_t i = 0; i < s.lq; i++) {
            const float *qi = q + (h * s.lq + i) * s.d;
            float *oi = out + (h * s.lq + i) * s.dv;
            int64_t p = (int64_t)i + mask->q_pos_offset;
            float max = -INFINITY;
            for (size_t j = 0; j < s.lk; j++) {
                if (!ref_mask_allows(mask, i, j)) { logits[j] = -INFINITY; continue; }
                float dot = 0.0f;
                for (size_t c = 0; c < s.d; c++) dot += qi[c] * kh[j * s.d + c];
                float z = scale * dot;
                if (alibi) {
                    int64_t dist = (int64_t)j - p;
                    z -= alibi[h] * (float)(dist < 0 ? -dist : dist);
                }
                logits[j] = z;
                if (z > max) max = z;
            }
            for (size_t c = 0; c < s.dv; c++) oi[c] = 0.0f;
            if (max == -INFINITY) continue;
            float sum = 0.0f;
            for (size_t j = 0; j < s.lk; j++) {
                float w = logits[j] == -INFINITY ? 0.0f : expf(logits[j] - max);
                logits[j] = w;
                sum += w;
            }
            for (size_t j = 0; j < s.lk; j++)
                for (size_t c = 0; c < s.dv; c++) oi[c] += logits[j] / sum * vh[j * s.dv + c];
        }
    }
}

/* y[rows][n_out] = x[rows][n_in] W^T + b (W is [n_out][n_in], b may be NULL). */
static void ref_linear(const float *x, const float *w, const float *b, float *y, size_t rows,
                       size_t n_in, size_t n_out) {
    for (size_t r = 0; r < rows; r++)
        for (size_t o = 0; o < n_out; o++) {
            float acc = b ? b[o] : 0.0f;
            for (size_t c = 0; c < n_in; c++) acc += x[r * n_in + c] * w[o * n_in + c];
            y[r * n_out + o] = acc;
        }
}

/*
 * nn.MultiheadAttention (no mask): work holds 4 * (lq + lk) * embed + lk floats.
 */
static void ref_mha(const float *query, const float *key, const float *value, const float *in_w,
                    const float *in_b, const float *out_w, const float *out_b, float *out,
                    microattn_mha_shape_t s, float *work) {
    size_t e = s.embed, hd = e / s.heads;
    float *qp = work, *kp = qp + s.lq * e, *vp = kp + s.lk * e;
    float *qh = vp + s.lk * e, *kh = qh + s.lq * e, *vh = kh + s.lk * e;
    float *oh = vh + s.lk * e, *concat = oh + s.lq * e, *logits = concat + s.lq * e;
    ref_linear(query, in_w, in_b, qp, s.lq, e, e);
    ref_linear(key, in_w + e * e, in_b ? in_b + e : NULL, kp, s.lk, e, e);
    ref_linear(value, in_w + 2 * e * e, in_b ? in_b + 2 * e : NULL, vp, s.lk, e, e);
    /* [rows][heads][hd] -> [heads][rows][hd] */
    for (size_t h = 0; h < s.heads; h++) {
        for (size_t r = 0; r < s.lq; r++)
            for (size_t c = 0; c < hd; c++) qh[(h * s.lq + r) * hd + c] = qp[r * e + h * hd + c];
        for (size_t r = 0; r < s.lk; r++)
            for (size_t c = 0; c < hd; c++) {
                kh[(h * s.lk + r) * hd + c] = kp[r * e + h * hd + c];
                vh[(h * s.lk + r) * hd + c] = vp[r * e + h * hd + c];
            }
    }
    microattn_shape_t a = {s.heads, s.heads, s.lq, s.lk, hd, hd};
    microattn_mask_t none = {0};
    ref_sdpa(qh, kh, vh, oh, a, 1.0f / sqrtf((float)hd), &none, NULL, logits);
    for (size_t h = 0; h < s.heads; h++)
        for (size_t r = 0; r < s.lq; r++)
            for (size_t c = 0; c < hd; c++) concat[r * e + h * hd + c] = oh[(h * s.lq + r) * hd + c];
    ref_linear(concat, out_w, out_b, out, s.lq, e, e);
}

static float ref_elu1(float x) { return x > 0.0f ? x + 1.0f : expf(x); }

/* Single-head linear attention, phi = elu + 1; causal: token t sees keys 0..t. */
static void ref_linear_attention(const float *q, const float *k, const float *v, float *out,
                                 size_t lq, size_t lk, size_t d, size_t dv, int causal,
                                 float eps) {
    for (size_t i = 0; i < lq; i++) {
        size_t last = causal ? i + 1 : lk;
        float den = eps;
        for (size_t c = 0; c < dv; c++) out[i * dv + c] = 0.0f;
        for (size_t j = 0; j < last; j++) {
            float w = 0.0f;
            for (size_t a = 0; a < d; a++) w += ref_elu1(q[i * d + a]) * ref_elu1(k[j * d + a]);
            den += w;
            for (size_t c = 0; c < dv; c++) out[i * dv + c] += w * v[j * dv + c];
        }
        for (size_t c = 0; c < dv; c++) out[i * dv + c] /= den;
    }
}

#endif /* MICROATTN_REFERENCE_H */
