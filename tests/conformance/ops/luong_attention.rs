//! `luong_attention`: `microattn::attention::luong_attention` (f32) and
//! `luong_attention_typed::<f16>` (f16).
//!
//! Inputs `query` [D], `keys` [L,D], `values` [L,Dv]; `w` [D,D] for `general`; `w` [A,2D]
//! and `v` [A] for `concat`. Params `score` (`dot`, the default, `general`, `concat`),
//! `mask` (the query is row 0) and `q_pos_offset`; outputs `context` [Dv], `weights` [L].

use super::additive_attention::{dims, inputs, q_pos_offset};
use super::{kernel_error, to_f16, widen_f16, Outputs};
use crate::case::{Case, ElemType};
use crate::params::{opt_str, MaskList};
use microattn::attention::{
    luong_attention, luong_attention_scratch_len, luong_attention_typed,
    luong_attention_typed_scratch_len, LuongParams, LuongScore, LuongShape,
};
use microattn::f16;
use microattn::mask::Mask;

/// Which score, with its weights as f32 (converted per element type below).
enum Kind<'c> {
    Dot,
    General(&'c [f32]),
    Concat(&'c [f32], &'c [f32]),
}

/// Runs the case in `ty` (f32 or f16).
pub fn run(case: &Case, ty: ElemType) -> Result<Outputs, String> {
    let [d] = dims::<1>(case, "query")?;
    let [l, dk] = dims::<2>(case, "keys")?;
    let [lv, dv] = dims::<2>(case, "values")?;
    if dk != d || lv != l {
        return Err(format!(
            "inconsistent shapes: query [{d}], keys [{l},{dk}], values [{lv},{dv}]"
        ));
    }
    let shape = LuongShape { l, d, dv };
    let kind = match opt_str(&case.params, "score")? {
        None | Some("dot") => Kind::Dot,
        Some("general") => {
            let [r, c] = dims::<2>(case, "w")?;
            if (r, c) != (d, d) {
                return Err(format!("general: w is [{r},{c}], expected [{d},{d}]"));
            }
            Kind::General(case.input_f32("w")?)
        }
        Some("concat") => {
            let [a, c] = dims::<2>(case, "w")?;
            let [a_v] = dims::<1>(case, "v")?;
            if a_v != a || Some(c) != d.checked_mul(2) {
                return Err(format!("concat: w is [{a},{c}] and v [{a_v}], D is {d}"));
            }
            Kind::Concat(case.input_f32("w")?, case.input_f32("v")?)
        }
        Some(other) => return Err(format!("unknown luong score {other:?}")),
    };

    let masks = MaskList::parse(&case.params, "mask")?;
    let terms = masks.terms();
    let mask = Mask::new(&terms).with_signed_offset(q_pos_offset(case)?);

    let [query, keys, values] = inputs(case, ["query", "keys", "values"])?;
    let (context, weights) = match ty {
        ElemType::F32 => {
            let score = match kind {
                Kind::Dot => LuongScore::Dot,
                Kind::General(w) => LuongScore::General { w },
                Kind::Concat(w, v) => LuongScore::Concat { w, v },
            };
            let params = LuongParams { score, mask };
            let (mut context, mut weights) = (vec![0.0f32; dv], vec![0.0f32; l]);
            let mut scratch = vec![0.0f32; luong_attention_scratch_len(shape, &score)];
            luong_attention(
                query,
                keys,
                values,
                shape,
                &params,
                &mut context,
                &mut weights,
                &mut scratch,
            )
            .map_err(|e| kernel_error("luong_attention", e))?;
            (context, weights)
        }
        ElemType::F16 => {
            let (w16, v16) = match kind {
                Kind::Dot => (Vec::new(), Vec::new()),
                Kind::General(w) => (to_f16(w), Vec::new()),
                Kind::Concat(w, v) => (to_f16(w), to_f16(v)),
            };
            let score = match kind {
                Kind::Dot => LuongScore::Dot,
                Kind::General(_) => LuongScore::General { w: &w16 },
                Kind::Concat(..) => LuongScore::Concat { w: &w16, v: &v16 },
            };
            let params = LuongParams { score, mask };
            let (mut context, mut weights) = (vec![f16::ZERO; dv], vec![f16::ZERO; l]);
            let mut scratch = vec![0.0f32; luong_attention_typed_scratch_len(shape, &score)];
            luong_attention_typed(
                &to_f16(query),
                &to_f16(keys),
                &to_f16(values),
                shape,
                &params,
                &mut context,
                &mut weights,
                &mut scratch,
            )
            .map_err(|e| kernel_error("luong_attention_typed::<f16>", e))?;
            (widen_f16(&context), widen_f16(&weights))
        }
        ElemType::I8 => return Err("luong_attention adapter runs f32 and f16 only".into()),
    };
    Ok(vec![
        ("context".to_string(), context),
        ("weights".to_string(), weights),
    ])
}
