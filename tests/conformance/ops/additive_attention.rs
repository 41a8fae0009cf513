//! `additive_attention` (Bahdanau): `microattn::attention::additive_attention` (f32) and
//! `additive_attention_typed::<f16>` (f16).
//!
//! Inputs `query` [Dq], `keys` [L,Dk], `values` [L,Dv], `w_query` [A,Dq], `w_key` [A,Dk],
//! `v` [A]; params `mask` (the query is row 0) and `q_pos_offset`; outputs `context` [Dv]
//! and `weights` [L].

use super::{kernel_error, to_f16, widen_f16, Outputs};
use crate::case::{Case, ElemType};
use crate::params::MaskList;
use microattn::attention::{
    additive_attention, additive_attention_scratch_len, additive_attention_typed,
    additive_attention_typed_scratch_len, AdditiveParams, AdditiveShape,
};
use microattn::f16;
use microattn::mask::Mask;

/// Runs the case in `ty` (f32 or f16).
pub fn run(case: &Case, ty: ElemType) -> Result<Outputs, String> {
    let [dq] = dims::<1>(case, "query")?;
    let [l, dk] = dims::<2>(case, "keys")?;
    let [lv, dv] = dims::<2>(case, "values")?;
    let [a, dq_w] = dims::<2>(case, "w_query")?;
    let [a_k, dk_w] = dims::<2>(case, "w_key")?;
    let [a_v] = dims::<1>(case, "v")?;
    if lv != l || dq_w != dq || dk_w != dk || a_k != a || a_v != a {
        return Err(format!(
            "inconsistent shapes: query [{dq}], keys [{l},{dk}], values [{lv},{dv}], \
             w_query [{a},{dq_w}], w_key [{a_k},{dk_w}], v [{a_v}]"
        ));
    }
    let shape = AdditiveShape { l, dq, dk, dv, a };

    let masks = MaskList::parse(&case.params, "mask")?;
    let terms = masks.terms();
    let mask = Mask::new(&terms).with_signed_offset(q_pos_offset(case)?);

    let names = ["query", "keys", "values", "w_query", "w_key", "v"];
    let [query, keys, values, w_query, w_key, v] = inputs(case, names)?;
    let (context, weights) = match ty {
        ElemType::F32 => {
            let params = AdditiveParams {
                w_query,
                w_key,
                v,
                mask,
            };
            let (mut context, mut weights) = (vec![0.0f32; dv], vec![0.0f32; l]);
            let mut scratch = vec![0.0f32; additive_attention_scratch_len(shape)];
            additive_attention(
                query,
                keys,
                values,
                shape,
                &params,
                &mut context,
                &mut weights,
                &mut scratch,
            )
            .map_err(|e| kernel_error("additive_attention", e))?;
            (context, weights)
        }
        ElemType::F16 => {
            let (w_query, w_key, v) = (to_f16(w_query), to_f16(w_key), to_f16(v));
            let params = AdditiveParams {
                w_query: &w_query,
                w_key: &w_key,
                v: &v,
                mask,
            };
            let (mut context, mut weights) = (vec![f16::ZERO; dv], vec![f16::ZERO; l]);
            let mut scratch = vec![0.0f32; additive_attention_typed_scratch_len(shape)];
            additive_attention_typed(
                &to_f16(query),
                &to_f16(keys),
                &to_f16(values),
                shape,
                &params,
                &mut context,
                &mut weights,
                &mut scratch,
            )
            .map_err(|e| kernel_error("additive_attention_typed::<f16>", e))?;
            (widen_f16(&context), widen_f16(&weights))
        }
        ElemType::I8 => return Err("additive_attention adapter runs f32 and f16 only".into()),
    };
    Ok(vec![
        ("context".to_string(), context),
        ("weights".to_string(), weights),
    ])
}

/// The dimensions of input `name`, which must have rank `N`.
pub(super) fn dims<const N: usize>(case: &Case, name: &str) -> Result<[usize; N], String> {
    let shape = &case.input(name)?.shape;
    shape
        .as_slice()
        .try_into()
        .map_err(|_| format!("input `{name}` has shape {shape:?}, expected rank {N}"))
}

/// The f32 values of the named inputs.
pub(super) fn inputs<'c, const N: usize>(
    case: &'c Case,
    names: [&str; N],
) -> Result<[&'c [f32]; N], String> {
    let mut out = [&[][..]; N];
    for (o, name) in out.iter_mut().zip(names) {
        *o = case.input_f32(name)?;
    }
    Ok(out)
}

/// Param `q_pos_offset` (default 0), the absolute position of the query.
pub(super) fn q_pos_offset(case: &Case) -> Result<i64, String> {
    crate::params::q_pos_offset(&case.params)
}
