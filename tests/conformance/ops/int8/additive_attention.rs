//! `additive_attention` in i8: `microattn::attention::int8::int8_additive_attention`.
//!
//! Inputs and `v` are quantized per tensor (max-abs), `W_q` and `W_k` per row (output
//! channel); the attention weights come back in Q15 and the context is calibrated like `sdpa`'s output.

use super::{calibrated_context, quantize_max_abs, quantize_rows};
use crate::case::Case;
use crate::ops::additive_attention::{dims, q_pos_offset};
use crate::ops::{kernel_error, Outputs};
use crate::params::MaskList;
use microattn::attention::int8::{
    int8_additive_attention, int8_additive_scratch_len, Int8AdditiveParams, Int8AdditiveScales,
};
use microattn::attention::AdditiveShape;
use microattn::mask::Mask;
use microattn::quant::FixedMultiplier;

/// Runs the case in i8.
pub fn run(case: &Case) -> Result<Outputs, String> {
    let [dq] = dims::<1>(case, "query")?;
    let [l, dk] = dims::<2>(case, "keys")?;
    let [lv, dv] = dims::<2>(case, "values")?;
    let [a, dq_w] = dims::<2>(case, "w_query")?;
    let [a_k, dk_w] = dims::<2>(case, "w_key")?;
    let [a_v] = dims::<1>(case, "v")?;
    if lv != l || dq_w != dq || dk_w != dk || a_k != a || a_v != a {
        return Err("inconsistent additive_attention shapes".into());
    }
    let shape = AdditiveShape { l, dq, dk, dv, a };
    let (query, qs) = quantize_max_abs(case.input_f32("query")?)?;
    let (keys, ks) = quantize_max_abs(case.input_f32("keys")?)?;
    let (values, vs) = quantize_max_abs(case.input_f32("values")?)?;
    let (w_query, wqs) = quantize_rows(case.input_f32("w_query")?, a)?;
    let (w_key, wks) = quantize_rows(case.input_f32("w_key")?, a)?;
    let (v, v_s) = quantize_max_abs(case.input_f32("v")?)?;

    let masks = MaskList::parse(&case.params, "mask")?;
    let terms = masks.terms();
    let mask = Mask::new(&terms).with_signed_offset(q_pos_offset(case)?);
    let mut scratch = vec![0i64; int8_additive_scratch_len(shape)];
    let mut weights = vec![0i16; l];
    let context = calibrated_context(vs.scale(), dv, |out_scale, context| {
        let scales = Int8AdditiveScales {
            query: qs.scale(),
            keys: ks.scale(),
            values: vs.scale(),
            w_query: &wqs,
            w_key: &wks,
            v: v_s.scale(),
            context: out_scale,
        };
        let mut storage = [FixedMultiplier::ONE; 2].repeat(a);
        let params = Int8AdditiveParams::new(&w_query, &w_key, &v, scales, mask, &mut storage)
            .map_err(|e| kernel_error("Int8AdditiveParams::new", e))?;
        int8_additive_attention(
            &query,
            &keys,
            &values,
            shape,
            &params,
            context,
            &mut weights,
            &mut scratch,
        )
        .map_err(|e| kernel_error("int8_additive_attention", e))
    })?;
    Ok(vec![
        ("context".to_string(), context),
        ("weights".to_string(), super::dequantize_q15(&weights)),
    ])
}
