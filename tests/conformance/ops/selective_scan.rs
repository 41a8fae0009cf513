//! `selective_scan`: `microattn::ssm::selective_scan` from a zero state, f32 and f16 storage.
//!
//! Inputs `u` [L,D], `delta` [L,D], `a` [D,N], `b` [L,N], `c` [L,N], `d` [D] (optional),
//! `z` [L,D] (optional), `delta_bias` [D] (optional); param `delta_softplus` (default false).
//! Output `y` [L,D].

use super::{kernel_error, to_f16, widen_f16, Outputs};
use crate::case::{Case, ElemType};
use crate::params::opt_bool;
use microattn::f16;
use microattn::ssm::{scan_state_len, selective_scan, ScanSequence, ScanShape, ScanWeights};

/// Runs the case in `ty` (f32 or f16).
pub fn run(case: &Case, ty: ElemType) -> Result<Outputs, String> {
    let a = case.input("a")?;
    let [channels, state] = a.shape[..] else {
        return Err(format!("a has shape {:?}: [D,N] expected", a.shape));
    };
    let shape = ScanShape::new(channels, state);
    let delta_softplus = opt_bool(&case.params, "delta_softplus")?.unwrap_or(false);
    let optional = |name: &str| -> Result<Option<&[f32]>, String> {
        match case.optional_input(name) {
            Some(t) => t.f32s().map(Some).map_err(|e| format!("{name}: {e}")),
            None => Ok(None),
        }
    };
    let (u, delta) = (case.input_f32("u")?, case.input_f32("delta")?);
    let (a, b, c) = (
        case.input_f32("a")?,
        case.input_f32("b")?,
        case.input_f32("c")?,
    );
    let (d, z, delta_bias) = (optional("d")?, optional("z")?, optional("delta_bias")?);
    let mut x = vec![0.0f32; scan_state_len(shape)];
    let y = match ty {
        ElemType::F32 => {
            let weights = ScanWeights {
                a,
                d,
                delta_bias,
                delta_softplus,
            };
            let seq = ScanSequence { u, delta, b, c, z };
            let mut y = vec![0.0f32; u.len()];
            selective_scan(&mut x, &weights, &seq, &mut y, shape)
                .map_err(|e| kernel_error("selective_scan", e))?;
            y
        }
        ElemType::F16 => {
            let (a, d, delta_bias) = (to_f16(a), d.map(to_f16), delta_bias.map(to_f16));
            let weights = ScanWeights {
                a: &a,
                d: d.as_deref(),
                delta_bias: delta_bias.as_deref(),
                delta_softplus,
            };
            let (u, delta, b, c, z) = (
                to_f16(u),
                to_f16(delta),
                to_f16(b),
                to_f16(c),
                z.map(to_f16),
            );
            let seq = ScanSequence {
                u: &u,
                delta: &delta,
                b: &b,
                c: &c,
                z: z.as_deref(),
            };
            let mut y = vec![f16::ZERO; u.len()];
            selective_scan(&mut x, &weights, &seq, &mut y, shape)
                .map_err(|e| kernel_error("selective_scan::<f16>", e))?;
            widen_f16(&y)
        }
        ElemType::I8 => return Err("selective_scan adapter runs f32 and f16 only".into()),
    };
    Ok(vec![("y".to_string(), y)])
}
