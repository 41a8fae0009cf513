//! `luong_attention` in i8: `microattn::attention::int8::int8_luong_attention`.
//!
//! `query`, `keys`, `values`, `v` and `general`'s `w` are quantized per tensor (max-abs),
//! `concat`'s `w` per row (output channel); the attention weights come back in Q15 and the context is calibrated like `sdpa`'s output (a first
//! int8 run at the values' scale, then the scale of the observed max-abs).

use super::{calibrated_context, quantize_max_abs, quantize_rows};
use crate::case::Case;
use crate::ops::additive_attention::{dims, q_pos_offset};
use crate::ops::{kernel_error, Outputs};
use crate::params::{opt_str, MaskList};
use microattn::attention::int8::{
    int8_luong_attention, int8_luong_scratch_len, Int8LuongParams, Int8LuongScore,
};
use microattn::attention::LuongShape;
use microattn::mask::Mask;
use microattn::quant::FixedMultiplier;

/// Runs the case in i8.
pub fn run(case: &Case) -> Result<Outputs, String> {
    let [d] = dims::<1>(case, "query")?;
    let [l, dk] = dims::<2>(case, "keys")?;
    let [lv, dv] = dims::<2>(case, "values")?;
    if dk != d || lv != l {
        return Err(format!(
            "inconsistent shapes: query [{d}], keys [{l},{dk}], values [{lv},{dv}]"
        ));
    }
    let shape = LuongShape { l, d, dv };
    let (query, qs) = quantize_max_abs(case.input_f32("query")?)?;
    let (keys, ks) = quantize_max_abs(case.input_f32("keys")?)?;
    let (values, vs) = quantize_max_abs(case.input_f32("values")?)?;
    let kind = opt_str(&case.params, "score")?.unwrap_or("dot");
    // `general` contracts W on both sides: one scale. `concat`: one scale per row of W.
    let (w, ws) = match kind {
        "general" => {
            let (w, p) = quantize_max_abs(case.input_f32("w")?)?;
            (w, vec![p.scale()])
        }
        "concat" => quantize_rows(case.input_f32("w")?, dims::<2>(case, "w")?[0])?,
        _ => (Vec::new(), Vec::new()),
    };
    let mut storage = vec![FixedMultiplier::ONE; 2 * ws.len()];
    let (v, v_s) = match kind {
        "concat" => quantize_max_abs(case.input_f32("v")?)?,
        _ => (Vec::new(), qs),
    };
    let score = match kind {
        "dot" => Int8LuongScore::dot(qs.scale(), ks.scale()),
        "general" => Int8LuongScore::general(&w, qs.scale(), ws[0], ks.scale()),
        "concat" => Int8LuongScore::concat(
            &w,
            &v,
            qs.scale(),
            ks.scale(),
            &ws,
            v_s.scale(),
            &mut storage,
        ),
        other => return Err(format!("unknown luong score {other:?}")),
    }
    .map_err(|e| kernel_error("Int8LuongScore", e))?;

    let masks = MaskList::parse(&case.params, "mask")?;
    let terms = masks.terms();
    let mask = Mask::new(&terms).with_signed_offset(q_pos_offset(case)?);
    let mut scratch = vec![0i64; int8_luong_scratch_len(shape, &score)];
    let mut weights = vec![0i16; l];
    let context = calibrated_context(vs.scale(), dv, |out_scale, context| {
        let out = FixedMultiplier::from_real(vs.scale() as f64 / out_scale as f64)
            .map_err(|e| kernel_error("FixedMultiplier::from_real", e))?;
        let params = Int8LuongParams { score, out, mask };
        int8_luong_attention(
            &query,
            &keys,
            &values,
            shape,
            &params,
            context,
            &mut weights,
            &mut scratch,
        )
        .map_err(|e| kernel_error("int8_luong_attention", e))
    })?;
    Ok(vec![
        ("context".to_string(), context),
        ("weights".to_string(), super::dequantize_q15(&weights)),
    ])
}
