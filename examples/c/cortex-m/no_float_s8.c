/*
 * No float on the int8 path of the C API: scripts/capi-test links this file for a Cortex-M0+
 * (thumbv6m, no FPU: any float operation is a call into a soft-float routine) against the
 * thumbv6m staticlib, with --gc-sections, and checks that the image holds no soft-float
 * symbol. The prepared parameters come from stored integers, as on an FPU-less device; every
 * input is read through a volatile pointer so nothing is optimized away.
 *
 * Built with -DCONTROL_FLOAT it also runs microattn_s8_prepare (the float prepare step):
 * that image must contain soft-float symbols, which shows the check can fail.
 */
#include <stdint.h>

#include "microattn.h"

enum { H = 2, LQ = 4, LK = 6, D = 8, DV = 8 };

static int8_t q[H * LQ * D], k[H * LK * D], v[H * LK * DV], out[H * LQ * DV];
static int64_t scratch[DV];
static int32_t slopes[H];
static microattn_mask_term_t terms[2];
static microattn_s8_params_t params;
/* What a device would load from flash: raw integers. */
static volatile uint32_t raw[16];

int main(void) {
    for (unsigned i = 0; i < sizeof q; i++) q[i] = (int8_t)raw[i % 16];
    for (unsigned i = 0; i < sizeof k; i++) k[i] = (int8_t)raw[(i + 3) % 16];
    for (unsigned i = 0; i < sizeof v; i++) v[i] = (int8_t)raw[(i + 7) % 16];
    slopes[0] = (int32_t)raw[0];
    slopes[1] = (int32_t)raw[1];
    terms[0].kind = raw[2];
    terms[1].kind = raw[3];
    terms[1].left = raw[4];
    terms[1].dilation = raw[5];
    params.score = raw[6];
    params.logit.multiplier = (int32_t)raw[7];
    params.logit.shift = (int32_t)raw[8];
    params.key.multiplier = (int32_t)raw[9];
    params.key.shift = (int32_t)raw[10];
    params.q_weight = (int32_t)raw[11];
    params.k_weight = (int32_t)raw[12];
    params.out.multiplier = (int32_t)raw[13];
    params.out.shift = (int32_t)raw[14];
    params.mask.terms = terms;
    params.mask.num_terms = raw[15] & 3;
    params.bias.kind = raw[0] & 1 ? MICROATTN_BIAS_ALIBI : MICROATTN_BIAS_NONE;
    params.bias.values = slopes;
    params.bias.values_len = H;
#ifdef CONTROL_FLOAT
    microattn_s8_scales_t scales = {(float)raw[0], (float)raw[1], (float)raw[2], (float)raw[3]};
    microattn_s8_prepare(&scales, D, H, 0, 0, 0, 0, 0, &params);
#endif
    microattn_shape_t shape = {H, H, LQ, LK, D, DV};
    return microattn_sdpa_s8(q, sizeof q, k, sizeof k, v, sizeof v, out, sizeof out, shape,
                             &params, scratch, DV);
}
