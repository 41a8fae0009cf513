//! `linear_attention` in i8: `microattn::attention::int8::int8_linear_attention`.
//!
//! `q`, `k`, `v` are quantized per tensor (max-abs); the output is calibrated like `sdpa`'s
//! (linear attention outputs are convex combinations of value rows as well).

use super::{calibrated_context, quantize_max_abs};
use crate::case::Case;
use crate::ops::{kernel_error, Outputs};
use crate::params::{opt_bool, opt_f64, opt_str};
use microattn::attention::int8::{
    int8_linear_attention, int8_linear_attention_scratch_len, Int8LinearAttentionParams,
};
use microattn::attention::{AttentionShape, LinearAttentionParams};

/// Runs the case in i8.
pub fn run(case: &Case) -> Result<Outputs, String> {
    let p = &case.params;
    match opt_str(p, "feature_map")? {
        None | Some("elu_plus_one") => {}
        Some(other) => return Err(format!("feature_map {other:?}: only elu_plus_one exists")),
    }
    let causal = opt_bool(p, "causal")?.unwrap_or(false);
    let eps = opt_f64(p, "eps")?.map_or(LinearAttentionParams::default().eps, |e| e as f32);
    let shape = super::sdpa::shape_of(
        &case.input("q")?.shape,
        &case.input("k")?.shape,
        &case.input("v")?.shape,
    )?;
    let (q, qp) = quantize_max_abs(case.input_f32("q")?)?;
    let (k, kp) = quantize_max_abs(case.input_f32("k")?)?;
    let (v, vp) = quantize_max_abs(case.input_f32("v")?)?;
    let AttentionShape { heads, lq, dv, .. } = shape;
    let len = [heads, lq, dv]
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or("output size overflows")?;
    let mut scratch = vec![0i64; int8_linear_attention_scratch_len(shape)];
    let out = calibrated_context(vp.scale(), len, |out_scale, out| {
        let params = Int8LinearAttentionParams::new(
            qp.scale(),
            kp.scale(),
            vp.scale(),
            out_scale,
            causal,
            eps,
        )
        .map_err(|e| kernel_error("Int8LinearAttentionParams::new", e))?;
        int8_linear_attention(&q, &k, &v, out, shape, &params, &mut scratch)
            .map_err(|e| kernel_error("int8_linear_attention", e))
    })?;
    Ok(vec![("out".to_string(), out)])
}
