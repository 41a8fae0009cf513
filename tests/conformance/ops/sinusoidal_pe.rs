//! `sinusoidal_pe`: `microattn::position::sinusoidal_table` in f32 and f16 storage.
//!
//! No inputs; params `length`, `dim`, `pos_offset` (default 0), `base` (default 10000).
//! Output `pe` [length, dim].

use super::{kernel_error, widen_f16, Outputs};
use crate::case::{Case, ElemType};
use crate::params::{opt_f64, opt_usize, req_usize};
use microattn::f16;
use microattn::position::sinusoidal_table;

/// Runs the case in `ty` (f32 or f16).
pub fn run(case: &Case, ty: ElemType) -> Result<Outputs, String> {
    let p = &case.params;
    let len = req_usize(p, "length")?;
    let dim = req_usize(p, "dim")?;
    let pos_offset = opt_usize(p, "pos_offset")?.unwrap_or(0);
    let base = opt_f64(p, "base")?.unwrap_or(10000.0) as f32;
    let n = len.checked_mul(dim).ok_or("table size overflows")?;
    let pe = match ty {
        ElemType::F32 => {
            let mut pe = vec![0.0f32; n];
            sinusoidal_table(&mut pe, len, dim, pos_offset, base)
                .map_err(|e| kernel_error("sinusoidal_table", e))?;
            pe
        }
        ElemType::F16 => {
            let mut pe = vec![f16::ZERO; n];
            sinusoidal_table(&mut pe, len, dim, pos_offset, base)
                .map_err(|e| kernel_error("sinusoidal_table::<f16>", e))?;
            widen_f16(&pe)
        }
        ElemType::I8 => return Err("sinusoidal_pe adapter runs f32 and f16 only".into()),
    };
    Ok(vec![("pe".to_string(), pe)])
}
