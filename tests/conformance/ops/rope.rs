//! `rope`: `microattn::position::rope` on `x` [L,D] or [H,L,D], in f32 and f16 storage.
//!
//! Params `base` (default 10000), `pos_offset` (default 0), `layout` (`interleaved` or
//! `half`). Output `out`, same shape as `x`.

use super::{kernel_error, to_f16, widen_f16, Outputs};
use crate::case::{Case, ElemType};
use crate::params::{opt_f64, opt_str, opt_usize};
use microattn::position::{rope, RopeLayout, RopeParams};

/// Runs the case in `ty` (f32 or f16).
pub fn run(case: &Case, ty: ElemType) -> Result<Outputs, String> {
    let x = case.input("x")?;
    let (heads, len, dim) = match x.shape[..] {
        [l, d] => (1, l, d),
        [h, l, d] => (h, l, d),
        ref s => return Err(format!("x has shape {s:?}: [L,D] or [H,L,D] expected")),
    };
    let p = &case.params;
    let layout = match opt_str(p, "layout")? {
        Some("interleaved") => RopeLayout::Interleaved,
        Some("half") => RopeLayout::Half,
        other => {
            return Err(format!(
                "param `layout`: {other:?} is not interleaved or half"
            ))
        }
    };
    let params = RopeParams {
        layout,
        base: opt_f64(p, "base")?.unwrap_or(10000.0) as f32,
        pos_offset: opt_usize(p, "pos_offset")?.unwrap_or(0),
    };
    let x = case.input_f32("x")?;
    let out = match ty {
        ElemType::F32 => {
            let mut y = x.to_vec();
            rope(&mut y, heads, len, dim, &params).map_err(|e| kernel_error("rope", e))?;
            y
        }
        ElemType::F16 => {
            let mut y = to_f16(x);
            rope(&mut y, heads, len, dim, &params).map_err(|e| kernel_error("rope::<f16>", e))?;
            widen_f16(&y)
        }
        ElemType::I8 => return Err("rope adapter runs f32 and f16 only".into()),
    };
    Ok(vec![("out".to_string(), out)])
}
