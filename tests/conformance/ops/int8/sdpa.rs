//! `sdpa` in i8: `microattn::attention::int8::int8_sdpa`.
//!
//! `q`, `k`, `v` are quantized per tensor (max-abs). The output scale is calibrated with the
//! int8 kernel itself, as dynamic quantization does: a first run with `out_scale = v_scale`
//! (never saturates: each output is a convex combination of value rows) gives the output's
//! max-abs in value steps, and a second run uses the scale that maps that max-abs to 127.

use super::{max_abs_i8, quantize_max_abs};
use crate::case::Case;
use crate::ops::{kernel_error, Outputs};
use crate::params::{opt_f64, q_pos_offset, score, BiasSpec, MaskList};
use microattn::attention::int8::{
    int8_sdpa, int8_sdpa_scratch_len, Int8Bias, Int8Scales, Int8SdpaParams,
};
use microattn::attention::AttentionShape;
use microattn::mask::Mask;

/// Runs the case in i8.
pub fn run(case: &Case) -> Result<Outputs, String> {
    let shape = shape_of(
        &case.input("q")?.shape,
        &case.input("k")?.shape,
        &case.input("v")?.shape,
    )?;
    let (q, qp) = quantize_max_abs(case.input_f32("q")?)?;
    let (k, kp) = quantize_max_abs(case.input_f32("k")?)?;
    let (v, vp) = quantize_max_abs(case.input_f32("v")?)?;

    let p = &case.params;
    let masks = MaskList::parse(p, "mask")?;
    let terms = masks.terms();
    let offset = q_pos_offset(p)?;
    let mask = Mask::new(&terms).with_signed_offset(offset);
    let score = score(p, "score")?;
    let scale = opt_f64(p, "scale")?.map(|s| s as f32);

    // Biases become integer logit offsets once, before the kernel runs.
    let bias_spec = BiasSpec::parse(p, "bias")?;
    let bias = bias_spec.bias();
    let mut storage = vec![0i32; Int8Bias::storage_len(&bias)];
    let mut thresholds = vec![0u32; Int8Bias::t5_threshold_count(&bias)];
    let bias = Int8Bias::from_bias(&bias, shape.heads, &mut storage, &mut thresholds)
        .map_err(|e| kernel_error("Int8Bias::from_bias", e))?;

    let out_len = [shape.heads, shape.lq, shape.dv]
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or("output size overflows")?;
    let mut out = vec![0i8; out_len];
    let mut scratch = vec![0i64; int8_sdpa_scratch_len(shape)];
    let mut run_with = |out_scale: f32, out: &mut [i8]| {
        let scales = Int8Scales {
            q: qp.scale(),
            k: kp.scale(),
            v: vp.scale(),
            out: out_scale,
        };
        let params = Int8SdpaParams::new(scales, shape.d, score, scale, mask, bias)
            .map_err(|e| kernel_error("Int8SdpaParams::new", e))?;
        int8_sdpa(&q, &k, &v, out, shape, &params, &mut scratch)
            .map_err(|e| kernel_error("int8_sdpa", e))
    };

    let mut out_scale = vp.scale();
    run_with(out_scale, &mut out)?;
    let steps = max_abs_i8(&out);
    if steps > 0 && steps < 127 {
        // The true max-abs is below (steps + 0.5) value steps.
        out_scale = vp.scale() * (steps as f32 + 0.5) / 127.0;
        run_with(out_scale, &mut out)?;
    }
    let out = out.iter().map(|&x| x as f32 * out_scale).collect();
    Ok(vec![("out".to_string(), out)])
}

/// The attention shape of 2-D (one head) or 3-D (heads) `q`, `k`, `v`.
pub(super) fn shape_of(q: &[usize], k: &[usize], v: &[usize]) -> Result<AttentionShape, String> {
    let shape = match (q, k, v) {
        (&[lq, d], &[lk, dk], &[lkv, dv]) if d == dk && lk == lkv => {
            AttentionShape::single(lq, lk, d, dv)
        }
        (&[h, lq, d], &[hkv, lk, dk], &[hv, lkv, dv]) if d == dk && lk == lkv && hkv == hv => {
            AttentionShape::multi_head(h, hkv, lq, lk, d, dv)
        }
        _ => return Err(format!("inconsistent shapes q {q:?}, k {k:?}, v {v:?}")),
    };
    Ok(shape)
}
