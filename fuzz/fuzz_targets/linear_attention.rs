//! `linear_attention` (f32): shapes, causal or not, eps, scratch and values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microattn::attention::{linear_attention, LinearAttentionParams};
use microattn::Error;
use microattn_fuzz::*;

fuzz_target!(|data: &[u8]| run(data));

/// `elu(x) + 1`.
fn phi(x: f64) -> f64 {
    if x > 0.0 {
        x + 1.0
    } else {
        x.exp()
    }
}

fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let dims = Dims::generate(&mut input);
    let lens = dims.lengths().map(|n| input.len(n));
    let causal = input.bool();
    let eps = match input.byte() % 4 {
        0 => 1e-6,
        1 => 0.0,
        _ => input.value(),
    };
    let state = dims
        .d
        .checked_mul(dims.dv)
        .and_then(|n| n.checked_add(dims.d))
        .and_then(|n| n.checked_add(dims.dv));
    let scratch_len = input.len(state);
    let (q, k, v) = (
        input.values(lens[0]),
        input.values(lens[1]),
        input.values(lens[2]),
    );
    let mut out = vec![f32::NAN; lens[3]];
    let mut scratch = vec![0.0f32; scratch_len];

    let mut exp = Expected::default();
    dims.expect(&mut exp, lens);
    exp.check(!(eps.is_finite() && eps >= 0.0), Error::InvalidScale);
    exp.check(causal && dims.lq != dims.lk, Error::InvalidParameter);
    match state {
        None => exp.fail(Error::ShapeOverflow),
        Some(needed) => exp.check(
            scratch_len < needed,
            Error::ScratchTooSmall {
                needed,
                found: scratch_len,
            },
        ),
    }

    let params = LinearAttentionParams { causal, eps };
    let result = linear_attention(&q, &k, &v, &mut out, dims.shape(), &params, &mut scratch);
    if !exp.assert(&result, "linear_attention") {
        assert!(
            out.iter().all(|x| x.is_nan()),
            "linear_attention wrote output on Err"
        );
        return;
    }
    if !(finite(&q) && finite(&k) && finite(&v)) {
        return;
    }
    // Documented: finite, with rows whose sums overflow written as zeros.
    assert!(
        finite(&out),
        "linear_attention: non-finite output for finite inputs"
    );
    if input.wild() {
        return;
    }
    // Tame values: every phi(q)·phi(k) is a sum of positive terms far from f32's limits, so
    // the kernel's relative error stays within a few roundings per term.
    let Dims {
        heads,
        kv_heads,
        lq,
        lk,
        d,
        dv,
    } = dims;
    let group = heads / kv_heads;
    for h in 0..heads {
        let kvh = h / group;
        for i in 0..lq {
            let qi = &q[(h * lq + i) * d..][..d];
            let keys = if causal { i + 1 } else { lk };
            let mut num = vec![0.0f64; dv];
            let mut den = eps as f64;
            let mut vmax = 0.0f64;
            for j in 0..keys {
                let kj = &k[(kvh * lk + j) * d..][..d];
                let vj = &v[(kvh * lk + j) * dv..][..dv];
                let w: f64 = qi
                    .iter()
                    .zip(kj)
                    .map(|(&a, &b)| phi(a as f64) * phi(b as f64))
                    .sum();
                den += w;
                for c in 0..dv {
                    num[c] += w * vj[c] as f64;
                    vmax = vmax.max((vj[c] as f64).abs());
                }
            }
            for c in 0..dv {
                let want = num[c] / den;
                let got = out[(h * lq + i) * dv + c] as f64;
                let tol = (d + keys + 16) as f64 * 8.0 * EPS * vmax + 1e-30;
                assert!(
                    (got - want).abs() <= tol,
                    "linear_attention out[{h}][{i}][{c}]: got {got}, reference {want}, tolerance {tol}"
                );
            }
        }
    }
}
