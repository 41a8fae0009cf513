/*
 * Host test of the microattn C API: every kernel against a plain-C f32 reference
 * (reference.h), and the status code of every kind of bad input.
 *
 * Build (scripts/capi-test does this):
 *   gcc -std=c11 -Wall -Wextra -Werror -Iinclude -Iexamples/c examples/c/host_test.c \
 *       capi/target/release/libmicroattn_capi.a -lm -lpthread -ldl -o host_test
 * Prints one line per check and closes with "host_test: N passed, M failed"; exits 1 on any
 * failure.
 */
#include <stdalign.h>
#include <stdio.h>
#include <string.h>

#include "microattn.h"
#include "reference.h"

static int passed, failed;

static void check(int ok, const char *name, const char *detail) {
    if (ok) passed++; else failed++;
    printf("%s %s%s%s\n", ok ? "PASS" : "FAIL", name, detail[0] ? " " : "", detail);
}

static void check_status(microattn_status_t got, microattn_status_t want, const char *name) {
    char detail[160];
    snprintf(detail, sizeof detail, "status=%d (%s) expected=%d", (int)got,
             microattn_status_str(got), (int)want);
    check(got == want, name, detail);
}

static void check_close(microattn_status_t st, const float *got, const float *want, size_t n,
                        double tol, const char *name) {
    char detail[160];
    double err = ref_rel_l2(got, want, n);
    int finite = 1;
    for (size_t i = 0; i < n; i++) finite &= isfinite(got[i]);
    snprintf(detail, sizeof detail, "status=%d rel_l2=%.3e tol=%.1e", (int)st, err, tol);
    check(st == MICROATTN_OK && finite && err <= tol, name, detail);
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* ---- f32 SDPA ---------------------------------------------------------------------------- */

enum { H = 4, HKV = 2, LQ = 12, LK = 20, D = 16, DV = 8 };
static float q[H * LQ * D], k[HKV * LK * D], v[HKV * LK * DV];
static float out[H * LQ * DV], want[H * LQ * DV], logits[64];

static void test_sdpa_f32(void) {
    microattn_shape_t s = {1, 1, LQ, LK, D, DV};
    microattn_status_t st = microattn_sdpa_f32(q, LQ * D, k, LK * D, v, LK * DV, out, LQ * DV, s, NULL);
    microattn_mask_t none = {0};
    ref_sdpa(q, k, v, want, s, 1.0f / sqrtf(D), &none, NULL, logits);
    check_close(st, out, want, LQ * DV, 1e-5, "sdpa_f32 single head, defaults");

    /* GQA, causal AND sliding window, decode-style offset, explicit scale, ALiBi. */
    microattn_shape_t g = {H, HKV, LQ, LK, D, DV};
    microattn_mask_term_t terms[] = {
        {.kind = MICROATTN_MASK_CAUSAL},
        {.kind = MICROATTN_MASK_SLIDING, .left = 5, .right = 0},
    };
    float slopes[H] = {0.5f, 0.25f, 0.125f, 0.0625f};
    microattn_sdpa_params_t p = {
        .has_scale = 1, .scale = 0.3f,
        .mask = {.terms = terms, .num_terms = N(terms), .q_pos_offset = LK - LQ},
        .bias = {.kind = MICROATTN_BIAS_ALIBI, .values = slopes, .values_len = H},
    };
    st = microattn_sdpa_f32(q, N(q), k, N(k), v, N(v), out, N(out), g, &p);
    ref_sdpa(q, k, v, want, g, 0.3f, &p.mask, slopes, logits);
    check_close(st, out, want, N(out), 1e-5, "sdpa_f32 gqa causal+sliding offset alibi");

    /* Sparse structures: BigBird blocks with globals and random pairs, then Longformer. */
    size_t gblocks[] = {0};
    microattn_block_pair_t pairs[] = {{1, 4}, {3, 0}, {2, 4}};
    microattn_mask_term_t bigbird[] = {{.kind = MICROATTN_MASK_BLOCK_SPARSE, .block = 4,
                                        .window = 0, .global = gblocks, .global_len = 1,
                                        .random = pairs, .random_len = N(pairs)},
                                       {.kind = MICROATTN_MASK_KEY_PADDING, .valid = 18}};
    microattn_sdpa_params_t pb = {.mask = {.terms = bigbird, .num_terms = 2}};
    st = microattn_sdpa_f32(q, N(q), k, N(k), v, N(v), out, N(out), g, &pb);
    ref_sdpa(q, k, v, want, g, 1.0f / sqrtf(D), &pb.mask, NULL, logits);
    check_close(st, out, want, N(out), 1e-5, "sdpa_f32 block_sparse+key_padding");

    size_t gpos[] = {0, 9};
    microattn_mask_term_t longformer[] = {
        {.kind = MICROATTN_MASK_GLOBAL_SLIDING, .left = 2, .right = 2, .global = gpos, .global_len = 2},
        {.kind = MICROATTN_MASK_DILATED, .left = 10, .right = 10, .dilation = 1},
    };
    microattn_sdpa_params_t pl = {.mask = {.terms = longformer, .num_terms = 2, .q_pos_offset = -2}};
    st = microattn_sdpa_f32(q, N(q), k, N(k), v, N(v), out, N(out), g, &pl);
    ref_sdpa(q, k, v, want, g, 1.0f / sqrtf(D), &pl.mask, NULL, logits);
    check_close(st, out, want, N(out), 1e-5, "sdpa_f32 global_sliding+dilated negative offset");

    /* A row whose mask allows nothing is zero. */
    microattn_mask_term_t nothing[] = {{.kind = MICROATTN_MASK_KEY_PADDING, .valid = 0}};
    microattn_sdpa_params_t pn = {.mask = {.terms = nothing, .num_terms = 1}};
    out[0] = 1.0f;
    st = microattn_sdpa_f32(q, N(q), k, N(k), v, N(v), out, N(out), g, &pn);
    int zero = 1;
    for (size_t i = 0; i < N(out); i++) zero &= out[i] == 0.0f;
    check(st == MICROATTN_OK && zero, "sdpa_f32 fully masked rows are zero", "");
}

/* ---- f16 SDPA and the decode step ---------------------------------------------------------- */

static uint16_t qh[N(q)], kh[N(k)], vh[N(v)], oh[N(out)];
static float qr[N(q)], kr[N(k)], vr[N(v)];

static void test_sdpa_f16(void) {
    microattn_shape_t g = {H, HKV, LQ, LK, D, DV};
    microattn_status_t st = microattn_f32_to_f16(q, N(q), qh, N(qh));
    st |= microattn_f32_to_f16(k, N(k), kh, N(kh));
    st |= microattn_f32_to_f16(v, N(v), vh, N(vh));
    /* The reference sees the f16-rounded inputs, so only the kernel's own error is measured. */
    st |= microattn_f16_to_f32(qh, N(qh), qr, N(qr));
    st |= microattn_f16_to_f32(kh, N(kh), kr, N(kr));
    st |= microattn_f16_to_f32(vh, N(vh), vr, N(vr));
    check_status(st, MICROATTN_OK, "f16 conversions");
    float half = 0.0f;
    uint16_t one = 0x3C00; /* 1.0 in binary16 */
    microattn_f16_to_f32(&one, 1, &half, 1);
    check(half == 1.0f, "f16_to_f32 of 0x3C00 is 1.0", "");

    float scratch[DV];
    check(microattn_sdpa_f16_scratch_len(g) == DV, "sdpa_f16 scratch query is dv", "");
    microattn_mask_term_t causal[] = {{.kind = MICROATTN_MASK_CAUSAL}};
    microattn_sdpa_params_t p = {.mask = {.terms = causal, .num_terms = 1, .q_pos_offset = LK - LQ}};
    st = microattn_sdpa_f16(qh, N(qh), kh, N(kh), vh, N(vh), oh, N(oh), g, &p, scratch, N(scratch));
    microattn_f16_to_f32(oh, N(oh), out, N(out));
    ref_sdpa(qr, kr, vr, want, g, 1.0f / sqrtf(D), &p.mask, NULL, logits);
    check_close(st, out, want, N(out), 2e-3, "sdpa_f16 gqa causal vs f32 reference");
    st = microattn_sdpa_f16(qh, N(qh), kh, N(kh), vh, N(vh), oh, N(oh), g, &p, scratch, DV - 1);
    check_status(st, MICROATTN_ERR_SCRATCH_TOO_SMALL, "sdpa_f16 short scratch");
}

enum { CAP = 32, FILLED = 13 };
static float kc[HKV * CAP * D], vc[HKV * CAP * DV], kdense[HKV * FILLED * D], vdense[HKV * FILLED * DV];

static void test_decode_step(void) {
    ref_fill(kc, N(kc), 1.0f);
    ref_fill(vc, N(vc), 1.0f);
    for (size_t g = 0; g < HKV; g++) {
        memcpy(kdense + g * FILLED * D, kc + g * CAP * D, FILLED * D * sizeof(float));
        memcpy(vdense + g * FILLED * DV, vc + g * CAP * DV, FILLED * DV * sizeof(float));
    }
    microattn_decode_shape_t ds = {H, HKV, D, DV, FILLED, CAP};
    microattn_mask_term_t window[] = {{.kind = MICROATTN_MASK_SLIDING, .left = 6, .right = 0}};
    float slopes[H] = {0.5f, 0.25f, 0.125f, 0.0625f};
    microattn_sdpa_params_t p = {
        .mask = {.terms = window, .num_terms = 1},
        .bias = {.kind = MICROATTN_BIAS_ALIBI, .values = slopes, .values_len = H},
    };
    microattn_status_t st = microattn_decode_step_f32(q, H * D, kc, N(kc), vc, N(vc), out, H * DV,
                                                      ds, FILLED - 1, &p);
    /* Reference: SDPA with one query row per head over the dense filled part. */
    microattn_shape_t s = {H, HKV, 1, FILLED, D, DV};
    microattn_mask_t m = {window, 1, FILLED - 1};
    ref_sdpa(q, kdense, vdense, want, s, 1.0f / sqrtf(D), &m, slopes, logits);
    check_close(st, out, want, H * DV, 1e-5, "decode_step_f32 strided cache, window, alibi");

    uint16_t qd[H * D], kch[N(kc)], vch[N(vc)], od[H * DV];
    float scratch[DV];
    microattn_f32_to_f16(q, H * D, qd, N(qd));
    microattn_f32_to_f16(kc, N(kc), kch, N(kch));
    microattn_f32_to_f16(vc, N(vc), vch, N(vch));
    st = microattn_decode_step_f16(qd, N(qd), kch, N(kch), vch, N(vch), od, N(od), ds, FILLED - 1,
                                   &p, scratch, microattn_decode_step_f16_scratch_len(ds));
    microattn_f16_to_f32(od, N(od), out, N(od));
    check_close(st, out, want, H * DV, 5e-3, "decode_step_f16 vs f32 reference");

    ds.cache_len = CAP + 1;
    st = microattn_decode_step_f32(q, H * D, kc, N(kc), vc, N(vc), out, H * DV, ds, 0, NULL);
    check_status(st, MICROATTN_ERR_INVALID_PARAMETER, "decode_step cache_len > capacity");
}

/* ---- int8 SDPA ------------------------------------------------------------------------------ */

static int8_t q8[N(q)], k8[N(k)], v8[N(v)], o8[N(out)];

static float max_abs(const float *x, size_t n) {
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
    return m;
}

static void test_sdpa_s8(void) {
    microattn_shape_t g = {H, HKV, LQ, LK, D, DV};
    microattn_s8_scales_t sc;
    microattn_status_t st = microattn_s8_scale_from_max_abs(max_abs(q, N(q)), &sc.q);
    st |= microattn_s8_scale_from_max_abs(max_abs(k, N(k)), &sc.k);
    st |= microattn_s8_scale_from_max_abs(max_abs(v, N(v)), &sc.v);
    sc.out = sc.v;
    st |= microattn_quantize_s8(q, N(q), sc.q, q8, N(q8));
    st |= microattn_quantize_s8(k, N(k), sc.k, k8, N(k8));
    st |= microattn_quantize_s8(v, N(v), sc.v, v8, N(v8));
    st |= microattn_dequantize_s8(q8, N(q8), sc.q, qr, N(qr));
    st |= microattn_dequantize_s8(k8, N(k8), sc.k, kr, N(kr));
    st |= microattn_dequantize_s8(v8, N(v8), sc.v, vr, N(vr));
    check_status(st, MICROATTN_OK, "int8 scales and quantization");
    /* quantize_s8 is round(x / scale) clamped to [-127, 127]. */
    int exact = 1;
    for (size_t i = 0; i < N(q); i++) {
        float r = roundf(q[i] / sc.q);
        r = r > 127.0f ? 127.0f : r < -127.0f ? -127.0f : r;
        exact &= (int)q8[i] == (int)r;
    }
    check(exact, "quantize_s8 matches round(x / scale)", "");

    float slopes[H] = {0.5f, 0.25f, 0.125f, 0.0625f};
    microattn_mask_term_t causal[] = {{.kind = MICROATTN_MASK_CAUSAL}};
    microattn_sdpa_params_t fp = {
        .mask = {.terms = causal, .num_terms = 1, .q_pos_offset = LK - LQ},
        .bias = {.kind = MICROATTN_BIAS_ALIBI, .values = slopes, .values_len = H},
    };
    size_t bias_len = microattn_s8_bias_storage_len(&fp.bias);
    check(bias_len == H && microattn_s8_t5_threshold_count(&fp.bias) == 0,
          "s8 bias storage query", "");
    int32_t bias_storage[H];
    microattn_s8_params_t prepared;
    st = microattn_s8_prepare(&sc, D, H, &fp, bias_storage, bias_len, NULL, 0, &prepared);
    check_status(st, MICROATTN_OK, "s8_prepare");
    int64_t scratch[DV];
    check(microattn_sdpa_s8_scratch_len(g) == DV, "sdpa_s8 scratch query is dv", "");
    st = microattn_sdpa_s8(q8, N(q8), k8, N(k8), v8, N(v8), o8, N(o8), g, &prepared, scratch, DV);
    microattn_dequantize_s8(o8, N(o8), sc.out, out, N(out));
    ref_sdpa(qr, kr, vr, want, g, 1.0f / sqrtf(D), &fp.mask, slopes, logits);
    check_close(st, out, want, N(out), 2e-2, "sdpa_s8 vs f32 reference on dequantized inputs");
    ref_sdpa(q, k, v, want, g, 1.0f / sqrtf(D), &fp.mask, slopes, logits);
    check_close(st, out, want, N(out), 5e-2, "sdpa_s8 vs f32 reference on original inputs");

    /* Prepared parameters rebuilt from stored integers run the same bytes. */
    microattn_s8_params_t stored = prepared;
    int8_t o8b[N(o8)];
    st = microattn_sdpa_s8(q8, N(q8), k8, N(k8), v8, N(v8), o8b, N(o8b), g, &stored, scratch, DV);
    check(st == MICROATTN_OK && memcmp(o8, o8b, sizeof o8) == 0, "sdpa_s8 from copied params", "");

    stored.out.shift = 99;
    st = microattn_sdpa_s8(q8, N(q8), k8, N(k8), v8, N(v8), o8b, N(o8b), g, &stored, scratch, DV);
    check_status(st, MICROATTN_ERR_INVALID_SCALE, "sdpa_s8 invalid multiplier");
    st = microattn_sdpa_s8(q8, N(q8), k8, N(k8), v8, N(v8), o8b, N(o8b), g, NULL, scratch, DV);
    check_status(st, MICROATTN_ERR_NULL_POINTER, "sdpa_s8 null params");
    sc.out = 0.0f;
    st = microattn_s8_prepare(&sc, D, H, &fp, bias_storage, bias_len, NULL, 0, &prepared);
    check_status(st, MICROATTN_ERR_INVALID_SCALE, "s8_prepare zero output scale");
}

/* ---- MHA --------------------------------------------------------------------------------- */

enum { E = 16, HEADS = 4, MLQ = 6, MLK = 9 };
static float xq[MLQ * E], xkv[MLK * E], in_w[3 * E * E], in_b[3 * E], out_w[E * E], out_b[E];
static float mout[MLQ * E], mwant[MLQ * E], mwork[4 * (MLQ + MLK) * E + MLK];

static void test_mha(void) {
    ref_fill(xq, N(xq), 1.0f);
    ref_fill(xkv, N(xkv), 1.0f);
    ref_fill(in_w, N(in_w), 0.3f);
    ref_fill(in_b, N(in_b), 0.1f);
    ref_fill(out_w, N(out_w), 0.3f);
    ref_fill(out_b, N(out_b), 0.1f);
    microattn_mha_shape_t s = {MLQ, MLK, E, HEADS};
    microattn_mha_weights_t w = {in_w, N(in_w), in_b, N(in_b), out_w, N(out_w), out_b, N(out_b)};
    size_t need = microattn_mha_scratch_len(s);
    check(need == 2 * (MLQ + MLK) * E, "mha scratch query", "");
    static float scratch[2 * (MLQ + MLK) * E];
    microattn_status_t st = microattn_mha_f32(xq, N(xq), xkv, N(xkv), xkv, N(xkv), &w, mout,
                                              N(mout), s, NULL, scratch, need);
    ref_mha(xq, xkv, xkv, in_w, in_b, out_w, out_b, mwant, s, mwork);
    check_close(st, mout, mwant, N(mout), 1e-5, "mha_f32 cross-attention with biases");

    microattn_mha_weights_t nob = {in_w, N(in_w), NULL, 0, out_w, N(out_w), NULL, 0};
    st = microattn_mha_f32(xq, N(xq), xkv, N(xkv), xkv, N(xkv), &nob, mout, N(mout), s, NULL,
                           scratch, need);
    ref_mha(xq, xkv, xkv, in_w, NULL, out_w, NULL, mwant, s, mwork);
    check_close(st, mout, mwant, N(mout), 1e-5, "mha_f32 without biases (NULL)");

    s.heads = 3;
    st = microattn_mha_f32(xq, N(xq), xkv, N(xkv), xkv, N(xkv), &w, mout, N(mout), s, NULL,
                           scratch, need);
    check_status(st, MICROATTN_ERR_HEADS_MISMATCH, "mha heads not dividing embed");
    s.heads = HEADS;
    st = microattn_mha_f32(xq, N(xq), xkv, N(xkv), xkv, N(xkv), &w, mout, N(mout), s, NULL,
                           scratch, need - 1);
    check_status(st, MICROATTN_ERR_SCRATCH_TOO_SMALL, "mha short scratch");
    st = microattn_mha_f32(xq, N(xq), xkv, N(xkv), xkv, N(xkv), NULL, mout, N(mout), s, NULL,
                           scratch, need);
    check_status(st, MICROATTN_ERR_NULL_POINTER, "mha null weights");
}

/* ---- linear attention ---------------------------------------------------------------------- */

static void test_linear(void) {
    enum { L = 10, LD = 6, LDV = 5 };
    float lq[L * LD], lk[L * LD], lv[L * LDV], lo[L * LDV], lw[L * LDV], step_out[LDV];
    ref_fill(lq, N(lq), 1.0f);
    ref_fill(lk, N(lk), 1.0f);
    ref_fill(lv, N(lv), 1.0f);
    microattn_shape_t s = {1, 1, L, L, LD, LDV};
    size_t need = microattn_linear_attention_scratch_len(s);
    check(need == LD * LDV + LD + LDV, "linear scratch query", "");
    float scratch[LD * LDV + LD + LDV];
    microattn_status_t st = microattn_linear_attention_f32(lq, N(lq), lk, N(lk), lv, N(lv), lo,
                                                           N(lo), s, NULL, scratch, need);
    ref_linear_attention(lq, lk, lv, lw, L, L, LD, LDV, 0, 1e-6f);
    check_close(st, lo, lw, N(lo), 1e-5, "linear_attention_f32 non-causal");

    microattn_linear_params_t causal = {1, 1e-6f};
    st = microattn_linear_attention_f32(lq, N(lq), lk, N(lk), lv, N(lv), lo, N(lo), s, &causal,
                                        scratch, need);
    ref_linear_attention(lq, lk, lv, lw, L, L, LD, LDV, 1, 1e-6f);
    check_close(st, lo, lw, N(lo), 1e-5, "linear_attention_f32 causal");

    microattn_linear_state_t state;
    float buffer[LD * LDV + LD + LDV];
    st = microattn_linear_state_init(&state, buffer, microattn_linear_state_len(LD, LDV), LD,
                                     LDV, 1e-6f);
    check_status(st, MICROATTN_OK, "linear_state_init");
    float steps[L * LDV];
    for (size_t t = 0; t < L && st == MICROATTN_OK; t++) {
        st = microattn_linear_state_step_f32(&state, lq + t * LD, LD, lk + t * LD, LD,
                                             lv + t * LDV, LDV, step_out, LDV);
        memcpy(steps + t * LDV, step_out, sizeof step_out);
    }
    check_close(st, steps, lw, N(steps), 1e-5, "linear_state_step_f32 vs causal reference");
    st = microattn_linear_state_reset(&state);
    st |= microattn_linear_state_push_f32(&state, lk, LD, lv, LDV);
    st |= microattn_linear_state_query_f32(&state, lq, LD, step_out, LDV);
    check_close(st, step_out, lw, LDV, 1e-5, "linear_state reset, push, query");

    s.lq = L - 1;
    st = microattn_linear_attention_f32(lq, (L - 1) * LD, lk, N(lk), lv, N(lv), lo,
                                        (L - 1) * LDV, s, &causal, scratch, need);
    check_status(st, MICROATTN_ERR_INVALID_PARAMETER, "linear causal with lq != lk");
    microattn_linear_state_t blank;
    memset(&blank, 0, sizeof blank);
    st = microattn_linear_state_query_f32(&blank, lq, LD, step_out, LDV);
    check_status(st, MICROATTN_ERR_INVALID_ARGUMENT, "linear_state not initialized");
    st = microattn_linear_state_step_f32(NULL, lq, LD, lk, LD, lv, LDV, step_out, LDV);
    check_status(st, MICROATTN_ERR_NULL_POINTER, "linear_state null");
    st = microattn_linear_state_init(&state, buffer, 3, LD, LDV, 1e-6f);
    check_status(st, MICROATTN_ERR_SCRATCH_TOO_SMALL, "linear_state short buffer");
    st = microattn_linear_state_init(&state, buffer, N(buffer), LD, LDV, -1.0f);
    check_status(st, MICROATTN_ERR_INVALID_SCALE, "linear_state negative eps");
}

/* ---- quantization helpers ----------------------------------------------------------------- */

static void test_quant(void) {
    microattn_fixed_multiplier_t m;
    microattn_status_t st = microattn_fixed_multiplier_from_real(0.25, &m);
    check(st == MICROATTN_OK && m.multiplier == (1 << 30) && m.shift == -1,
          "fixed_multiplier_from_real(0.25) = 2^30 * 2^-32", "");
    int8_t r = 0;
    st = microattn_requantize_s8(10, m, &r);
    check(st == MICROATTN_OK && r == 3, "requantize 2.5 rounds away from zero", "");
    microattn_requantize_s8(-10, m, &r);
    check(r == -3, "requantize -2.5 rounds away from zero", "");
    microattn_requantize_s8(1000, m, &r);
    check(r == 127, "requantize saturates at 127", "");
    check_status(microattn_fixed_multiplier_from_real(-1.0, &m), MICROATTN_ERR_INVALID_SCALE,
                 "fixed_multiplier_from_real negative");
    microattn_fixed_multiplier_t bad = {0, 0};
    check_status(microattn_requantize_s8(1, bad, &r), MICROATTN_ERR_INVALID_SCALE,
                 "requantize zero multiplier");

    float w[3 * 4] = {1, -2, 3, 4, 0.5f, 0.25f, -1, 0, 10, 20, -30, 40};
    float scales[3] = {4.0f / 127, 1.0f / 127, 40.0f / 127};
    int8_t wq[12];
    float wd[12];
    st = microattn_quantize_per_channel_s8(w, 12, scales, 3, wq, 12);
    st |= microattn_dequantize_per_channel_s8(wq, 12, scales, 3, wd, 12);
    int ok = st == MICROATTN_OK;
    for (size_t i = 0; i < 12; i++) ok &= fabsf(wd[i] - w[i]) <= 0.5f * scales[i / 4] + 1e-6f;
    check(ok && wq[3] == 127 && wq[11] == 127, "per-channel quantize/dequantize", "");
    check_status(microattn_quantize_per_channel_s8(w, 11, scales, 3, wq, 11),
                 MICROATTN_ERR_LENGTH_MISMATCH, "per-channel length not a multiple");
    float scale = 0.0f;
    st = microattn_s8_scale_from_max_abs(12.7f, &scale);
    check(st == MICROATTN_OK && fabsf(scale - 0.1f) < 1e-7f, "scale_from_max_abs", "");
}

/* ---- error codes for bad input ----------------------------------------------------------- */

static void test_errors(void) {
    microattn_shape_t s = {1, 1, LQ, LK, D, DV};
#define SDPA(qp, ql, shape, params) \
    microattn_sdpa_f32(qp, ql, k, LK * D, v, LK * DV, out, LQ * DV, shape, params)
    check_status(SDPA(NULL, LQ * D, s, NULL), MICROATTN_ERR_NULL_POINTER, "null q");
    check_status(microattn_sdpa_f32(q, LQ * D, k, LK * D, v, LK * DV, NULL, LQ * DV, s, NULL),
                 MICROATTN_ERR_NULL_POINTER, "null out");
    check_status(SDPA(q, LQ * D - 1, s, NULL), MICROATTN_ERR_LENGTH_MISMATCH, "short q");
    microattn_shape_t z = s;
    z.d = 0;
    check_status(SDPA(q, 0, z, NULL), MICROATTN_ERR_ZERO_DIMENSION, "zero d");
    microattn_shape_t hm = {3, 2, LQ, LK, D, DV};
    check_status(SDPA(q, LQ * D, hm, NULL), MICROATTN_ERR_HEADS_MISMATCH, "heads 3 over kv 2");
    microattn_shape_t big = {SIZE_MAX / 2, 1, 3, LK, D, DV};
    check_status(SDPA(q, LQ * D, big, NULL), MICROATTN_ERR_SHAPE_OVERFLOW, "overflowing shape");

    microattn_sdpa_params_t p = {.has_scale = 1, .scale = NAN};
    check_status(SDPA(q, LQ * D, s, &p), MICROATTN_ERR_INVALID_SCALE, "NaN scale");
    p = (microattn_sdpa_params_t){.score = 42};
    check_status(SDPA(q, LQ * D, s, &p), MICROATTN_ERR_INVALID_ARGUMENT, "unknown score");
    microattn_mask_term_t dil0[] = {{.kind = MICROATTN_MASK_DILATED, .left = 1, .right = 1}};
    p = (microattn_sdpa_params_t){.mask = {dil0, 1, 0}};
    check_status(SDPA(q, LQ * D, s, &p), MICROATTN_ERR_INVALID_MASK, "zero dilation");
    microattn_mask_term_t unknown[] = {{.kind = 77}};
    p = (microattn_sdpa_params_t){.mask = {unknown, 1, 0}};
    check_status(SDPA(q, LQ * D, s, &p), MICROATTN_ERR_INVALID_MASK, "unknown mask kind");
    microattn_mask_term_t many[MICROATTN_MAX_MASK_TERMS + 1] = {{0}};
    p = (microattn_sdpa_params_t){.mask = {many, N(many), 0}};
    check_status(SDPA(q, LQ * D, s, &p), MICROATTN_ERR_INVALID_ARGUMENT, "too many mask terms");
    p = (microattn_sdpa_params_t){.mask = {NULL, 2, 0}};
    check_status(SDPA(q, LQ * D, s, &p), MICROATTN_ERR_NULL_POINTER, "null mask terms");
    microattn_mask_term_t gnull[] = {{.kind = MICROATTN_MASK_GLOBAL_SLIDING, .global_len = 2}};
    p = (microattn_sdpa_params_t){.mask = {gnull, 1, 0}};
    check_status(SDPA(q, LQ * D, s, &p), MICROATTN_ERR_NULL_POINTER, "null global list");
    float slopes[2] = {1, 1};
    p = (microattn_sdpa_params_t){.bias = {.kind = MICROATTN_BIAS_ALIBI, .values = slopes, .values_len = 2}};
    check_status(SDPA(q, LQ * D, s, &p), MICROATTN_ERR_INVALID_BIAS, "alibi slopes != heads");
    p = (microattn_sdpa_params_t){.bias = {.kind = 9}};
    check_status(SDPA(q, LQ * D, s, &p), MICROATTN_ERR_INVALID_BIAS, "unknown bias kind");
    float t5[8] = {0};
    p = (microattn_sdpa_params_t){.bias = {.kind = MICROATTN_BIAS_T5, .values = t5, .values_len = 8,
                                           .t5_bidirectional = 1, .t5_num_buckets = 8,
                                           .t5_max_distance = 1}};
    check_status(SDPA(q, LQ * D, s, &p), MICROATTN_ERR_INVALID_BIAS, "t5 max_distance too small");

    /* Output overlapping an input, and a misaligned pointer. */
    check_status(microattn_sdpa_f32(q, LQ * D, k, LK * D, v, LK * DV, q + 3, LQ * DV, s, NULL),
                 MICROATTN_ERR_BUFFER_OVERLAP, "output overlaps q");
    static alignas(8) unsigned char raw[LQ * D * sizeof(float) + 8];
    check_status(SDPA((const float *)(raw + 1), LQ * D, s, NULL), MICROATTN_ERR_INVALID_ARGUMENT,
                 "misaligned q");
    check_status(microattn_f32_to_f16(q, 4, qh, 3), MICROATTN_ERR_LENGTH_MISMATCH,
                 "f32_to_f16 length mismatch");
    check_status(microattn_s8_scale_from_max_abs(1.0f, NULL), MICROATTN_ERR_NULL_POINTER,
                 "scale_from_max_abs null output");
    check_status(microattn_quantize_s8(q, 4, -1.0f, q8, 4), MICROATTN_ERR_INVALID_SCALE,
                 "quantize negative scale");
    /* Zero-length buffers accept NULL pointers; the shape then fails on its own terms. */
    microattn_shape_t empty = {1, 1, 0, LK, D, DV};
    check_status(microattn_sdpa_f32(NULL, 0, k, LK * D, v, LK * DV, NULL, 0, empty, NULL),
                 MICROATTN_ERR_ZERO_DIMENSION, "NULL with length 0 is accepted");
    const char *text = microattn_status_str(12345);
    check(text != NULL && strcmp(text, "unknown status") == 0, "status_str of unknown code", "");
#undef SDPA
}

int main(void) {
    ref_fill(q, N(q), 1.0f);
    ref_fill(k, N(k), 1.0f);
    ref_fill(v, N(v), 1.0f);
    test_sdpa_f32();
    test_sdpa_f16();
    test_decode_step();
    test_sdpa_s8();
    test_mha();
    test_linear();
    test_quant();
    test_errors();
    printf("host_test: %d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
