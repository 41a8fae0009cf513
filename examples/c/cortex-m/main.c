/*
 * microattn from C on a Cortex-M core (run under QEMU by scripts/capi-test).
 *
 * Calls the kernels through include/microattn.h, linked against libmicroattn_capi.a for the
 * core's Rust target, and compares each result on the target with a plain-C f32 reference
 * (../reference.h). Prints over semihosting one line per check,
 *   PASS <name> rel_l2=<error> tol=<tolerance>   (or FAIL ...)
 * and closes with "DONE passed=<n> failed=<m>"; the exit status is 0 only when all pass.
 */
#include <stdint.h>
#include <string.h>

#include "board.h"
#include "microattn.h"
#include "reference.h"

static int passed, failed;

/* ---- output: no printf, a few string helpers ----------------------------------------------- */

static char *put_str(char *p, const char *s) {
    while (*s) *p++ = *s++;
    return p;
}

static char *put_int(char *p, long x) {
    char digits[24];
    int n = 0;
    unsigned long u = x < 0 ? (unsigned long)(-x) : (unsigned long)x;
    if (x < 0) *p++ = '-';
    do digits[n++] = (char)('0' + u % 10); while ((u /= 10) != 0);
    while (n) *p++ = digits[--n];
    return p;
}

/* x in scientific notation with 3 decimals, e.g. 1.234e-07. */
static char *put_sci(char *p, double x) {
    if (x != x) return put_str(p, "nan");
    if (x < 0) { *p++ = '-'; x = -x; }
    if (x > 1e300) return put_str(p, "inf");
    int e = 0;
    if (x != 0.0) {
        while (x >= 10.0) { x /= 10.0; e++; }
        while (x < 1.0) { x *= 10.0; e--; }
    }
    unsigned m = (unsigned)(x * 1000.0 + 0.5);
    if (m >= 10000) { m /= 10; e++; }
    *p++ = (char)('0' + m / 1000);
    *p++ = '.';
    *p++ = (char)('0' + m / 100 % 10);
    *p++ = (char)('0' + m / 10 % 10);
    *p++ = (char)('0' + m % 10);
    *p++ = 'e';
    *p++ = e < 0 ? '-' : '+';
    if (e < 0) e = -e;
    *p++ = (char)('0' + e / 10);
    *p++ = (char)('0' + e % 10);
    return p;
}

static void report(int ok, const char *name, double err, double tol, microattn_status_t st) {
    char line[160], *p = line;
    p = put_str(p, ok ? "PASS " : "FAIL ");
    p = put_str(p, name);
    p = put_str(p, " rel_l2=");
    p = put_sci(p, err);
    p = put_str(p, " tol=");
    p = put_sci(p, tol);
    if (st != MICROATTN_OK) {
        p = put_str(p, " status=");
        p = put_int(p, st);
    }
    p = put_str(p, "\n");
    *p = '\0';
    board_puts(line);
    if (ok) passed++; else failed++;
}

/* A kernel result against its reference: status OK, finite, rel-L2 within tolerance. */
static void check_close(microattn_status_t st, const float *got, const float *want, size_t n,
                        double tol, const char *name) {
    int finite = 1;
    for (size_t i = 0; i < n; i++) finite &= got[i] - got[i] == 0.0f;
    double err = ref_rel_l2(got, want, n);
    report(st == MICROATTN_OK && finite && err <= tol, name, err, tol, st);
}

static void check_status(microattn_status_t got, microattn_status_t want, const char *name) {
    report(got == want, name, 0.0, 0.0, got == want ? MICROATTN_OK : got);
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

/* ---- data: 4 query heads over 2 KV heads, 16 queries, 24 keys ----------------------------- */

enum { H = 4, HKV = 2, LQ = 16, LK = 24, D = 16, DV = 16 };
static float q[H * LQ * D], k[HKV * LK * D], v[HKV * LK * DV];
static float out[H * LQ * DV], want[H * LQ * DV], logits[LK + 32];
static float qr[N(q)], kr[N(k)], vr[N(v)];
static const float slopes[H] = {0.5f, 0.25f, 0.125f, 0.0625f};

static void sdpa_f32_checks(void) {
    microattn_shape_t s = {H, HKV, LQ, LK, D, DV};
    microattn_mask_term_t terms[] = {
        {.kind = MICROATTN_MASK_CAUSAL},
        {.kind = MICROATTN_MASK_SLIDING, .left = 7, .right = 0},
    };
    microattn_sdpa_params_t p = {
        .mask = {.terms = terms, .num_terms = N(terms), .q_pos_offset = LK - LQ},
        .bias = {.kind = MICROATTN_BIAS_ALIBI, .values = slopes, .values_len = H},
    };
    microattn_status_t st = microattn_sdpa_f32(q, N(q), k, N(k), v, N(v), out, N(out), s, &p);
    ref_sdpa(q, k, v, want, s, 1.0f / sqrtf(D), &p.mask, slopes, logits);
    check_close(st, out, want, N(out), 1e-5, "sdpa_f32_gqa_causal_window_alibi");

    size_t global_blocks[] = {0};
    microattn_block_pair_t random[] = {{1, 5}, {3, 0}, {2, 4}};
    microattn_mask_term_t bigbird[] = {{.kind = MICROATTN_MASK_BLOCK_SPARSE, .block = 4,
                                        .window = 0, .global = global_blocks, .global_len = 1,
                                        .random = random, .random_len = N(random)}};
    microattn_sdpa_params_t pb = {.mask = {.terms = bigbird, .num_terms = 1}};
    st = microattn_sdpa_f32(q, N(q), k, N(k), v, N(v), out, N(out), s, &pb);
    ref_sdpa(q, k, v, want, s, 1.0f / sqrtf(D), &pb.mask, NULL, logits);
    check_close(st, out, want, N(out), 1e-5, "sdpa_f32_block_sparse");
}

static uint16_t qh[N(q)], kh[N(k)], vh[N(v)], oh[N(out)];

static void sdpa_f16_check(void) {
    microattn_shape_t s = {H, HKV, LQ, LK, D, DV};
    microattn_status_t st = microattn_f32_to_f16(q, N(q), qh, N(qh));
    st |= microattn_f32_to_f16(k, N(k), kh, N(kh));
    st |= microattn_f32_to_f16(v, N(v), vh, N(vh));
    st |= microattn_f16_to_f32(qh, N(qh), qr, N(qr));
    st |= microattn_f16_to_f32(kh, N(kh), kr, N(kr));
    st |= microattn_f16_to_f32(vh, N(vh), vr, N(vr));
    microattn_mask_term_t causal[] = {{.kind = MICROATTN_MASK_CAUSAL}};
    microattn_sdpa_params_t p = {.mask = {.terms = causal, .num_terms = 1, .q_pos_offset = LK - LQ}};
    float scratch[DV];
    if (st == MICROATTN_OK)
        st = microattn_sdpa_f16(qh, N(qh), kh, N(kh), vh, N(vh), oh, N(oh), s, &p, scratch,
                                microattn_sdpa_f16_scratch_len(s));
    microattn_f16_to_f32(oh, N(oh), out, N(out));
    /* Reference on the f16-rounded inputs: only the kernel's own error is measured. */
    ref_sdpa(qr, kr, vr, want, s, 1.0f / sqrtf(D), &p.mask, NULL, logits);
    check_close(st, out, want, N(out), 2e-3, "sdpa_f16_gqa_causal");
}

static int8_t q8[N(q)], k8[N(k)], v8[N(v)], o8[N(out)], o8_packed[N(out)];
/* microattn_sdpa_s8_packed_scratch_len of this shape: DV + (LK/4 * 2*D + LK/2 * DV) / 2. */
static int64_t packed_scratch[DV + (LK / 4 * 2 * D + LK / 2 * DV) / 2];

static float max_abs(const float *x, size_t n) {
    float m = 0.0f;
    for (size_t i = 0; i < n; i++) m = fabsf(x[i]) > m ? fabsf(x[i]) : m;
    return m;
}

static void sdpa_s8_check(void) {
    microattn_shape_t s = {H, HKV, LQ, LK, D, DV};
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
    microattn_mask_term_t causal[] = {{.kind = MICROATTN_MASK_CAUSAL}};
    microattn_sdpa_params_t fp = {
        .mask = {.terms = causal, .num_terms = 1, .q_pos_offset = LK - LQ},
        .bias = {.kind = MICROATTN_BIAS_ALIBI, .values = slopes, .values_len = H},
    };
    int32_t bias_storage[H];
    microattn_s8_params_t prepared;
    if (st == MICROATTN_OK)
        st = microattn_s8_prepare(&sc, D, H, &fp, bias_storage, N(bias_storage), NULL, 0,
                                  &prepared);
    int64_t scratch[DV];
    if (st == MICROATTN_OK)
        st = microattn_sdpa_s8(q8, N(q8), k8, N(k8), v8, N(v8), o8, N(o8), s, &prepared,
                               scratch, microattn_sdpa_s8_scratch_len(s));
    microattn_dequantize_s8(o8, N(o8), sc.out, out, N(out));
    ref_sdpa(qr, kr, vr, want, s, 1.0f / sqrtf(D), &fp.mask, slopes, logits);
    check_close(st, out, want, N(out), 2e-2, "sdpa_s8_gqa_causal_alibi");
    /* With room to pack keys and values (the M4's SMLAD path): the same int8 bytes. */
    microattn_status_t st2 = MICROATTN_ERR_INVALID_ARGUMENT;
    if (st == MICROATTN_OK && microattn_sdpa_s8_packed_scratch_len(s) <= N(packed_scratch))
        st2 = microattn_sdpa_s8(q8, N(q8), k8, N(k8), v8, N(v8), o8_packed, N(o8_packed), s,
                                &prepared, packed_scratch, microattn_sdpa_s8_packed_scratch_len(s));
    report(st2 == MICROATTN_OK && memcmp(o8, o8_packed, sizeof(o8)) == 0,
           "sdpa_s8_packed_scratch_same_bytes", 0.0, 0.0, st2);
}

enum { CAP = 32, FILLED = 19 };
static float kc[HKV * CAP * D], vc[HKV * CAP * DV], kd[HKV * FILLED * D], vd[HKV * FILLED * DV];

static void decode_step_check(void) {
    ref_fill(kc, N(kc), 1.0f);
    ref_fill(vc, N(vc), 1.0f);
    for (size_t g = 0; g < HKV; g++) {
        memcpy(kd + g * FILLED * D, kc + g * CAP * D, FILLED * D * sizeof(float));
        memcpy(vd + g * FILLED * DV, vc + g * CAP * DV, FILLED * DV * sizeof(float));
    }
    microattn_decode_shape_t ds = {H, HKV, D, DV, FILLED, CAP};
    microattn_mask_term_t window[] = {{.kind = MICROATTN_MASK_SLIDING, .left = 8, .right = 0}};
    microattn_sdpa_params_t p = {
        .mask = {.terms = window, .num_terms = 1},
        .bias = {.kind = MICROATTN_BIAS_ALIBI, .values = slopes, .values_len = H},
    };
    microattn_status_t st = microattn_decode_step_f32(q, H * D, kc, N(kc), vc, N(vc), out,
                                                      H * DV, ds, FILLED - 1, &p);
    microattn_shape_t s = {H, HKV, 1, FILLED, D, DV};
    microattn_mask_t m = {window, 1, FILLED - 1};
    ref_sdpa(q, kd, vd, want, s, 1.0f / sqrtf(D), &m, slopes, logits);
    check_close(st, out, want, H * DV, 1e-5, "decode_step_f32_strided_cache");
}

enum { E = 16, HEADS = 4, MLQ = 8, MLK = 12 };
static float xq[MLQ * E], xkv[MLK * E], in_w[3 * E * E], in_b[3 * E], out_w[E * E], out_b[E];
static float mout[MLQ * E], mwant[MLQ * E], mwork[4 * (MLQ + MLK) * E + MLK];
static float mscratch[2 * (MLQ + MLK) * E];

static void mha_check(void) {
    ref_fill(xq, N(xq), 1.0f);
    ref_fill(xkv, N(xkv), 1.0f);
    ref_fill(in_w, N(in_w), 0.3f);
    ref_fill(in_b, N(in_b), 0.1f);
    ref_fill(out_w, N(out_w), 0.3f);
    ref_fill(out_b, N(out_b), 0.1f);
    microattn_mha_shape_t s = {MLQ, MLK, E, HEADS};
    microattn_mha_weights_t w = {in_w, N(in_w), in_b, N(in_b), out_w, N(out_w), out_b, N(out_b)};
    microattn_status_t st = microattn_mha_f32(xq, N(xq), xkv, N(xkv), xkv, N(xkv), &w, mout,
                                              N(mout), s, NULL, mscratch,
                                              microattn_mha_scratch_len(s));
    ref_mha(xq, xkv, xkv, in_w, in_b, out_w, out_b, mwant, s, mwork);
    check_close(st, mout, mwant, N(mout), 1e-5, "mha_f32_cross_attention");
}

static void linear_state_check(void) {
    enum { L = 12, LD = 8, LDV = 6 };
    static float lq[L * LD], lk[L * LD], lv[L * LDV], steps[L * LDV], lw[L * LDV];
    static float buffer[LD * LDV + LD + LDV];
    ref_fill(lq, N(lq), 1.0f);
    ref_fill(lk, N(lk), 1.0f);
    ref_fill(lv, N(lv), 1.0f);
    microattn_linear_state_t state;
    microattn_status_t st = microattn_linear_state_init(
        &state, buffer, microattn_linear_state_len(LD, LDV), LD, LDV, 1e-6f);
    for (size_t t = 0; t < L && st == MICROATTN_OK; t++)
        st = microattn_linear_state_step_f32(&state, lq + t * LD, LD, lk + t * LD, LD,
                                             lv + t * LDV, LDV, steps + t * LDV, LDV);
    ref_linear_attention(lq, lk, lv, lw, L, L, LD, LDV, 1, 1e-6f);
    check_close(st, steps, lw, N(steps), 1e-5, "linear_state_causal_steps");
}

/* Quantization helpers, including the one double argument of the API (hard-float ABI). */
static void quant_checks(void) {
    microattn_fixed_multiplier_t m = {0, 0};
    int8_t r = 0;
    microattn_status_t st = microattn_fixed_multiplier_from_real(0.25, &m);
    if (st == MICROATTN_OK) st = microattn_requantize_s8(-10, m, &r);
    int ok = st == MICROATTN_OK && m.multiplier == (1 << 30) && m.shift == -1 && r == -3;
    report(ok, "quant_fixed_multiplier_requantize", 0.0, 0.0, st);
}

static void error_checks(void) {
    microattn_shape_t s = {H, HKV, LQ, LK, D, DV};
    check_status(microattn_sdpa_f32(NULL, N(q), k, N(k), v, N(v), out, N(out), s, NULL),
                 MICROATTN_ERR_NULL_POINTER, "error_null_pointer");
    check_status(microattn_sdpa_f32(q, N(q) - 1, k, N(k), v, N(v), out, N(out), s, NULL),
                 MICROATTN_ERR_LENGTH_MISMATCH, "error_length_mismatch");
    s.kv_heads = 3;
    check_status(microattn_sdpa_f32(q, N(q), k, N(k), v, N(v), out, N(out), s, NULL),
                 MICROATTN_ERR_HEADS_MISMATCH, "error_heads_mismatch");
}

int main(void) {
    board_puts("microattn C example: " MICROATTN_EXAMPLE_MACHINE "\n");
    ref_fill(q, N(q), 1.0f);
    ref_fill(k, N(k), 1.0f);
    ref_fill(v, N(v), 1.0f);
    sdpa_f32_checks();
    sdpa_f16_check();
    sdpa_s8_check();
    decode_step_check();
    mha_check();
    linear_state_check();
    quant_checks();
    error_checks();
    char line[64], *p = line;
    p = put_str(p, "DONE passed=");
    p = put_int(p, passed);
    p = put_str(p, " failed=");
    p = put_int(p, failed);
    p = put_str(p, "\n");
    *p = '\0';
    board_puts(line);
    return failed == 0 ? 0 : 1;
}
