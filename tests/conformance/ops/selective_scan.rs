//! `selective_scan`: `microattn::ssm::selective_scan` from a zero state, in f32, f16 and bf16
//! storage.
//!
//! Inputs `u` [L,D], `delta` [L,D], `a` [D,N], `b` [L,N], `c` [L,N], `d` [D] (optional),
//! `z` [L,D] (optional), `delta_bias` [D] (optional); param `delta_softplus` (default false).
//! Output `y` [L,D].

use super::{kernel_error, narrow, widen, Outputs};
use crate::case::{Case, ElemType};
use crate::params::opt_bool;
use microattn::ssm::{scan_state_len, selective_scan, ScanSequence, ScanShape, ScanWeights};
use microattn::{bf16, f16, Element};

/// Runs the case in `ty` (f32, f16 or bf16).
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
    let weights = ScanWeights {
        a,
        d,
        delta_bias,
        delta_softplus,
    };
    let seq = ScanSequence { u, delta, b, c, z };
    let y = match ty {
        ElemType::F32 => {
            let mut x = vec![0.0f32; scan_state_len(shape)];
            let mut y = vec![0.0f32; u.len()];
            selective_scan(&mut x, &weights, &seq, &mut y, shape)
                .map_err(|e| kernel_error("selective_scan", e))?;
            y
        }
        ElemType::F16 => run_typed::<f16>(ty, &weights, &seq, shape)?,
        ElemType::Bf16 => run_typed::<bf16>(ty, &weights, &seq, shape)?,
        ElemType::I8 => return Err("selective_scan adapter runs f32, f16 and bf16 only".into()),
    };
    Ok(vec![("y".to_string(), y)])
}

/// `selective_scan` from a zero state with the weights and the sequence (given in f32) and
/// `y` stored as `E` (the storage of `ty`).
fn run_typed<E: Element>(
    ty: ElemType,
    w: &ScanWeights<'_, f32>,
    s: &ScanSequence<'_, f32>,
    shape: ScanShape,
) -> Result<Vec<f32>, String> {
    let (a, d, delta_bias) = (
        narrow::<E>(w.a),
        w.d.map(narrow::<E>),
        w.delta_bias.map(narrow::<E>),
    );
    let weights = ScanWeights {
        a: &a,
        d: d.as_deref(),
        delta_bias: delta_bias.as_deref(),
        delta_softplus: w.delta_softplus,
    };
    let (u, delta, b, c, z) = (
        narrow::<E>(s.u),
        narrow::<E>(s.delta),
        narrow::<E>(s.b),
        narrow::<E>(s.c),
        s.z.map(narrow::<E>),
    );
    let seq = ScanSequence {
        u: &u,
        delta: &delta,
        b: &b,
        c: &c,
        z: z.as_deref(),
    };
    let mut x = vec![0.0f32; scan_state_len(shape)];
    let mut y = vec![E::default(); u.len()];
    selective_scan(&mut x, &weights, &seq, &mut y, shape)
        .map_err(|e| kernel_error(&format!("selective_scan::<{ty}>"), e))?;
    Ok(widen(&y))
}
