//! Runs the conformance cases embedded by `build.rs` with the library on target and prints
//! one line per case and type:
//!
//! ```text
//! case NAME type f32 rel_l2 1.2e-7 tol 1e-5
//! case NAME type f16 error REASON
//! skip NAME REASON
//! ```
//!
//! The host (`scripts/qemu-test`) decides pass/fail from these lines; the firmware only
//! measures. `rel_l2 = |y - y_ref| / max(|y_ref|, 1e-12)` in f64, printed as `nan` when an
//! output is not finite.

use defmt::println;
use microattn::attention::{sdpa, sdpa_typed, AttentionShape, Bias, Score, SdpaParams};
use microattn::mask::{Mask, MaskTerm};
use microattn::{f16, Element, Error};

/// One SDPA conformance case: tensors row-major, `[heads, lq, d]` etc.
pub struct SdpaCase {
    /// Case name.
    pub name: &'static str,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Query rows.
    pub lq: usize,
    /// Keys.
    pub lk: usize,
    /// Query/key width.
    pub d: usize,
    /// Value width.
    pub dv: usize,
    /// Queries.
    pub q: &'static [f32],
    /// Keys.
    pub k: &'static [f32],
    /// Values.
    pub v: &'static [f32],
    /// Reference output.
    pub expected: &'static [f32],
    /// Logit scale (`None`: `1/sqrt(d)`).
    pub scale: Option<f32>,
    /// Score function.
    pub score: Score,
    /// Mask terms.
    pub mask: &'static [MaskTerm<'static>],
    /// Position of query row 0; may be negative (then the mask is causal).
    pub q_pos_offset: i64,
    /// Additive bias.
    pub bias: Bias<'static>,
    /// f32 tolerance, when the case is run in f32.
    pub tol_f32: Option<f64>,
    /// f16 tolerance, when the case is run in f16.
    pub tol_f16: Option<f64>,
}

/// A generated case.
pub enum Case {
    /// A single- or multi-head SDPA case.
    Sdpa(SdpaCase),
    /// A case of a supported op the generator could not express: reported as failed.
    Unsupported {
        /// Case name.
        name: &'static str,
        /// Why.
        reason: &'static str,
    },
}

#[allow(missing_docs)]
mod generated {
    use super::{Case, SdpaCase};
    use microattn::attention::{Bias, Score};
    use microattn::mask::MaskTerm;
    include!(concat!(env!("OUT_DIR"), "/cases.rs"));
}

pub use generated::{CASES, MAX_DV, MAX_INPUT, MAX_OUTPUT, SKIPPED};

/// Working memory for the typed runs, sized by the generator for this machine's cases.
pub struct Buffers {
    input_f16: [f16; MAX_INPUT],
    out_f32: [f32; MAX_OUTPUT],
    out_f16: [f16; MAX_OUTPUT],
    scratch: [f32; MAX_DV],
}

impl Buffers {
    /// Zeroed buffers (const, so they can live in a `static`).
    pub const fn new() -> Self {
        Buffers {
            input_f16: [f16::ZERO; MAX_INPUT],
            out_f32: [0.0; MAX_OUTPUT],
            out_f16: [f16::ZERO; MAX_OUTPUT],
            scratch: [0.0; MAX_DV],
        }
    }
}

impl Default for Buffers {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs every embedded case in every type it names; prints the plan, one line per result,
/// the skipped cases and a closing `done` line. Returns the number of result lines.
pub fn run_all(buffers: &mut Buffers) -> usize {
    let planned: usize = CASES
        .iter()
        .map(|c| match c {
            Case::Sdpa(s) => s.tol_f32.is_some() as usize + s.tol_f16.is_some() as usize,
            Case::Unsupported { .. } => 1,
        })
        .sum();
    println!("machine {=str} plan {=usize} skipped {=usize}", crate::MACHINE, planned, SKIPPED.len());
    let mut lines = 0;
    for case in CASES {
        match case {
            Case::Sdpa(c) => {
                if let Some(tol) = c.tol_f32 {
                    let out = &mut buffers.out_f32[..c.expected.len()];
                    let result = run_sdpa(c, c.q, c.k, c.v, out, &mut buffers.scratch);
                    report(c.name, "f32", tol, result.map(|()| rel_l2(out, c.expected)));
                    lines += 1;
                }
                if let Some(tol) = c.tol_f16 {
                    let (nq, nk) = (c.q.len(), c.k.len());
                    let input = &mut buffers.input_f16[..nq + nk + c.v.len()];
                    let (q, rest) = input.split_at_mut(nq);
                    let (k, v) = rest.split_at_mut(nk);
                    to_f16(c.q, q);
                    to_f16(c.k, k);
                    to_f16(c.v, v);
                    let out = &mut buffers.out_f16[..c.expected.len()];
                    let result = run_sdpa(c, q, k, v, out, &mut buffers.scratch);
                    report(c.name, "f16", tol, result.map(|()| rel_l2(out, c.expected)));
                    lines += 1;
                }
            }
            Case::Unsupported { name, reason } => {
                println!("case {=str} type f32 error {=str}", name, reason);
                lines += 1;
            }
        }
    }
    for (name, reason) in SKIPPED {
        println!("skip {=str} {=str}", name, reason);
    }
    println!("done {=usize}", lines);
    lines
}

fn to_f16(src: &[f32], dst: &mut [f16]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = f16::from_f32(s);
    }
}

fn report(name: &str, ty: &str, tol: f64, result: Result<f64, Error>) {
    match result {
        Ok(err) if err.is_finite() => {
            println!("case {=str} type {=str} rel_l2 {=f64} tol {=f64}", name, ty, err, tol)
        }
        Ok(_) => println!("case {=str} type {=str} rel_l2 nan tol {=f64}", name, ty, tol),
        Err(e) => println!("case {=str} type {=str} error {}", name, ty, e),
    }
}

/// `|y - y_ref|_2 / max(|y_ref|_2, 1e-12)` in f64; NaN when any output is not finite.
fn rel_l2<E: Element>(out: &[E], expected: &[f32]) -> f64 {
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&y, &r) in out.iter().zip(expected) {
        let y = y.to_f32();
        if !y.is_finite() {
            return f64::NAN;
        }
        let e = y as f64 - r as f64;
        diff += e * e;
        norm += r as f64 * r as f64;
    }
    let norm = libm::sqrt(norm).max(1e-12);
    libm::sqrt(diff) / norm
}

/// The library call for one element type: `sdpa` for f32, `sdpa_typed` for the others.
trait Kernel: Element {
    fn attend(
        q: &[Self],
        k: &[Self],
        v: &[Self],
        out: &mut [Self],
        shape: AttentionShape,
        params: &SdpaParams<'_>,
        scratch: &mut [f32],
    ) -> Result<(), Error>;
}

impl Kernel for f32 {
    fn attend(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        out: &mut [f32],
        shape: AttentionShape,
        params: &SdpaParams<'_>,
        _scratch: &mut [f32],
    ) -> Result<(), Error> {
        sdpa(q, k, v, out, shape, params)
    }
}

impl Kernel for f16 {
    fn attend(
        q: &[f16],
        k: &[f16],
        v: &[f16],
        out: &mut [f16],
        shape: AttentionShape,
        params: &SdpaParams<'_>,
        scratch: &mut [f32],
    ) -> Result<(), Error> {
        sdpa_typed(q, k, v, out, shape, params, scratch)
    }
}

fn run_sdpa<E: Kernel>(
    c: &SdpaCase,
    q: &[E],
    k: &[E],
    v: &[E],
    out: &mut [E],
    scratch: &mut [f32],
) -> Result<(), Error> {
    let shape = AttentionShape::multi_head(c.heads, c.kv_heads, c.lq, c.lk, c.d, c.dv);
    if c.q_pos_offset >= 0 {
        let params = SdpaParams {
            scale: c.scale,
            score: c.score,
            mask: Mask::new(c.mask).with_offset(c.q_pos_offset as usize),
            bias: c.bias,
        };
        return E::attend(q, k, v, out, shape, &params, scratch);
    }
    // Negative offset (the generator guarantees a causal mask): rows at negative positions
    // see no key and are zero; the others are the rows from `skip` on with offset 0, run head
    // by head because they are not contiguous across heads.
    let skip = c.q_pos_offset.unsigned_abs() as usize;
    out.fill(E::default());
    if skip >= c.lq {
        return Ok(());
    }
    let rows = c.lq - skip;
    let group = c.heads / c.kv_heads.max(1);
    for h in 0..c.heads {
        let kvh = h / group.max(1);
        let bias = match c.bias {
            Bias::Alibi { slopes } => Bias::Alibi {
                slopes: slopes.get(h..h + 1).ok_or(Error::InvalidBias)?,
            },
            Bias::T5 {
                bidirectional,
                num_buckets,
                max_distance,
                table,
            } => Bias::T5 {
                bidirectional,
                num_buckets,
                max_distance,
                table: table
                    .get(h * num_buckets..(h + 1) * num_buckets)
                    .ok_or(Error::InvalidBias)?,
            },
            other => other,
        };
        let params = SdpaParams {
            scale: c.scale,
            score: c.score,
            mask: Mask::new(c.mask),
            bias,
        };
        let q_h = &q[(h * c.lq + skip) * c.d..(h + 1) * c.lq * c.d];
        let k_h = &k[kvh * c.lk * c.d..(kvh + 1) * c.lk * c.d];
        let v_h = &v[kvh * c.lk * c.dv..(kvh + 1) * c.lk * c.dv];
        let out_h = &mut out[(h * c.lq + skip) * c.dv..(h + 1) * c.lq * c.dv];
        let one = AttentionShape::single(rows, c.lk, c.d, c.dv);
        E::attend(q_h, k_h, v_h, out_h, one, &params, scratch)?;
    }
    Ok(())
}
