//! `additive_attention` (Bahdanau): `microattn::attention::additive_attention` (f32) and
//! `additive_attention_typed::<E>` (f16 and bf16).
//!
//! Inputs `query` [Dq], `keys` [L,Dk], `values` [L,Dv], `w_query` [A,Dq], `w_key` [A,Dk],
//! `v` [A]; params `mask` (the query is row 0) and `q_pos_offset`; outputs `context` [Dv]
//! and `weights` [L].

use super::{kernel_error, narrow, widen, Outputs};
use crate::case::{Case, ElemType};
use crate::params::MaskList;
use microattn::attention::{
    additive_attention, additive_attention_scratch_len, additive_attention_typed,
    additive_attention_typed_scratch_len, AdditiveParams, AdditiveShape,
};
use microattn::mask::Mask;
use microattn::{bf16, f16, Element};

/// Runs the case in `ty` (f32, f16 or bf16).
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
    let params = AdditiveParams {
        w_query,
        w_key,
        v,
        mask,
    };
    let (context, weights) = match ty {
        ElemType::F32 => {
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
        ElemType::F16 => run_typed::<f16>(ty, [query, keys, values], shape, &params)?,
        ElemType::Bf16 => run_typed::<bf16>(ty, [query, keys, values], shape, &params)?,
        ElemType::I8 => return Err("additive_attention adapter runs f32, f16 and bf16 only".into()),
    };
    Ok(vec![
        ("context".to_string(), context),
        ("weights".to_string(), weights),
    ])
}

/// `additive_attention_typed` with the inputs, the weights of `p` (given in f32) and the
/// outputs stored as `E` (the storage of `ty`); returns `(context, weights)`.
fn run_typed<E: Element>(
    ty: ElemType,
    [query, keys, values]: [&[f32]; 3],
    shape: AdditiveShape,
    p: &AdditiveParams<'_, f32>,
) -> Result<(Vec<f32>, Vec<f32>), String> {
    let (w_query, w_key, v) = (
        narrow::<E>(p.w_query),
        narrow::<E>(p.w_key),
        narrow::<E>(p.v),
    );
    let params = AdditiveParams {
        w_query: &w_query,
        w_key: &w_key,
        v: &v,
        mask: p.mask,
    };
    let (mut context, mut weights) = (vec![E::default(); shape.dv], vec![E::default(); shape.l]);
    let mut scratch = vec![0.0f32; additive_attention_typed_scratch_len(shape)];
    additive_attention_typed(
        &narrow::<E>(query),
        &narrow::<E>(keys),
        &narrow::<E>(values),
        shape,
        &params,
        &mut context,
        &mut weights,
        &mut scratch,
    )
    .map_err(|e| kernel_error(&format!("additive_attention_typed::<{ty}>"), e))?;
    Ok((widen(&context), widen(&weights)))
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
