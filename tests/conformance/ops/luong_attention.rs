//! `luong_attention`: `microattn::attention::luong_attention` (f32) and
//! `luong_attention_typed::<E>` (f16 and bf16).
//!
//! Inputs `query` [D], `keys` [L,D], `values` [L,Dv]; `w` [D,D] for `general`; `w` [A,2D]
//! and `v` [A] for `concat`. Params `score` (`dot`, the default, `general`, `concat`),
//! `mask` (the query is row 0) and `q_pos_offset`; outputs `context` [Dv], `weights` [L].

use super::additive_attention::{dims, inputs, q_pos_offset};
use super::{kernel_error, narrow, widen, Outputs};
use crate::case::{Case, ElemType};
use crate::params::{opt_str, MaskList};
use microattn::attention::{
    luong_attention, luong_attention_scratch_len, luong_attention_typed,
    luong_attention_typed_scratch_len, LuongParams, LuongScore, LuongShape,
};
use microattn::mask::Mask;
use microattn::{bf16, f16, Element};

/// Which score, with its weights as f32 (converted per element type below).
enum Kind<'c> {
    Dot,
    General(&'c [f32]),
    Concat(&'c [f32], &'c [f32]),
}

/// Runs the case in `ty` (f32, f16 or bf16).
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
        ElemType::F16 => run_typed::<f16>(ty, [query, keys, values], shape, kind, mask)?,
        ElemType::Bf16 => run_typed::<bf16>(ty, [query, keys, values], shape, kind, mask)?,
        ElemType::I8 => return Err("luong_attention adapter runs f32, f16 and bf16 only".into()),
    };
    Ok(vec![
        ("context".to_string(), context),
        ("weights".to_string(), weights),
    ])
}

/// `luong_attention_typed` with the inputs, the score weights of `kind` (given in f32) and
/// the outputs stored as `E` (the storage of `ty`); returns `(context, weights)`.
fn run_typed<E: Element>(
    ty: ElemType,
    [query, keys, values]: [&[f32]; 3],
    shape: LuongShape,
    kind: Kind<'_>,
    mask: Mask<'_>,
) -> Result<(Vec<f32>, Vec<f32>), String> {
    let (w, v) = match kind {
        Kind::Dot => (Vec::new(), Vec::new()),
        Kind::General(w) => (narrow::<E>(w), Vec::new()),
        Kind::Concat(w, v) => (narrow::<E>(w), narrow::<E>(v)),
    };
    let score = match kind {
        Kind::Dot => LuongScore::Dot,
        Kind::General(_) => LuongScore::General { w: &w },
        Kind::Concat(..) => LuongScore::Concat { w: &w, v: &v },
    };
    let params = LuongParams { score, mask };
    let (mut context, mut weights) = (vec![E::default(); shape.dv], vec![E::default(); shape.l]);
    let mut scratch = vec![0.0f32; luong_attention_typed_scratch_len(shape, &score)];
    luong_attention_typed(
        &narrow::<E>(query),
        &narrow::<E>(keys),
        &narrow::<E>(values),
        shape,
        &params,
        &mut context,
        &mut weights,
        &mut scratch,
    )
    .map_err(|e| kernel_error(&format!("luong_attention_typed::<{ty}>"), e))?;
    Ok((widen(&context), widen(&weights)))
}
