//! `mha` (f32): shapes, weights (with and without biases), scratch, parameters and values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microattn::attention::SdpaParams;
use microattn::mask::Mask;
use microattn::mha::{mha, MhaShape, MhaWeights};
use microattn::Error;
use microattn_fuzz::*;

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let (lq, lk, e, heads) = (input.dim(4), input.dim(5), input.dim(8), input.dim(4));
    let lens = [
        input.len(product(&[lq, e])),
        input.len(product(&[lk, e])),
        input.len(product(&[lk, e])),
        input.len(product(&[3, e, e])),
        input.len(product(&[3, e])),
        input.len(product(&[e, e])),
        input.len(Some(e)),
        input.len(product(&[lq, e])),
    ];
    let (with_in_bias, with_out_bias) = (input.bool(), input.bool());
    let needed = lq.saturating_add(lk).saturating_mul(e).saturating_mul(2);
    let scratch_len = input.len(Some(needed));
    let spec = SdpaSpec::generate(&mut input, heads);
    let [x, key, value, in_w, in_b, out_w, out_b] =
        [0, 1, 2, 3, 4, 5, 6].map(|i| input.values(lens[i]));
    let mut out = vec![f32::NAN; lens[7]];
    let mut scratch = vec![0.0f32; scratch_len];

    let mut exp = Expected::default();
    exp.check([lq, lk, e, heads].contains(&0), Error::ZeroDimension);
    exp.check(heads != 0 && e % heads != 0, Error::HeadsMismatch);
    let biases = [
        (with_in_bias, 4, product(&[3, e])),
        (with_out_bias, 6, Some(e)),
    ];
    for (i, expected) in [
        (0, product(&[lq, e])),
        (1, product(&[lk, e])),
        (2, product(&[lk, e])),
        (3, product(&[3, e, e])),
        (5, product(&[e, e])),
        (7, product(&[lq, e])),
    ] {
        check_len(&mut exp, lens[i], expected);
    }
    for (present, i, expected) in biases {
        if present {
            check_len(&mut exp, lens[i], expected);
        }
    }
    exp.check(
        scratch_len < needed,
        Error::ScratchTooSmall {
            needed,
            found: scratch_len,
        },
    );
    let hd = e.checked_div(heads).unwrap_or(0);
    spec.expect(&mut exp, heads, hd);

    let weights = MhaWeights {
        in_proj_weight: &in_w,
        in_proj_bias: with_in_bias.then_some(&in_b[..]),
        out_proj_weight: &out_w,
        out_proj_bias: with_out_bias.then_some(&out_b[..]),
    };
    let terms = spec.mask.terms();
    let params = SdpaParams {
        scale: spec.scale,
        score: spec.score,
        mask: Mask::new(&terms).with_signed_offset(spec.mask.offset),
        bias: spec.bias.bias(),
    };
    let shape = MhaShape::new(lq, lk, e, heads);
    let result = mha(
        &x,
        &key,
        &value,
        &weights,
        &mut out,
        shape,
        &params,
        &mut scratch,
    );
    if !exp.assert(&result, "mha") {
        assert!(out.iter().all(|v| v.is_nan()), "mha wrote output on Err");
        return;
    }
    let tensors = [&x, &key, &value, &in_w, &in_b, &out_w, &out_b];
    if !(tensors.iter().all(|t| finite(t)) && spec.bias.finite()) {
        return;
    }
    // Projections of values up to 1e15 stay below 1e32, so attention cannot overflow (see
    // sdpa_output_must_be_finite); the output projection saturates instead of overflowing.
    if tensors.iter().all(|t| max_abs(t) <= 1e15) {
        assert!(finite(&out), "mha: non-finite output for finite inputs");
    }
    if input.wild() {
        return;
    }
    // Tame values (multiples of 1/16 below 8, e <= 8): every projection is exact in f32, so
    // the reference below sees the kernel's own Q, K, V.
    let f = |t: &[f32]| t.iter().map(|&a| a as f64).collect::<Vec<f64>>();
    let project = |rows: &[f32], part: usize| -> Vec<f64> {
        let n = rows.len() / e;
        // Head-major [heads, n, hd].
        let mut outp = vec![0.0f64; n * e];
        for r in 0..n {
            for o in 0..e {
                let w = &in_w[(part * e + o) * e..][..e];
                let b = if with_in_bias {
                    in_b[part * e + o] as f64
                } else {
                    0.0
                };
                let s: f64 = rows[r * e..][..e]
                    .iter()
                    .zip(w)
                    .map(|(&a, &c)| a as f64 * c as f64)
                    .sum();
                let (h, c) = (o / hd, o % hd);
                outp[(h * n + r) * hd + c] = s + b;
            }
        }
        outp
    };
    let (qp, kp, vp) = (project(&x, 0), project(&key, 1), project(&value, 2));
    let dims = Dims {
        heads,
        kv_heads: heads,
        lq,
        lk,
        d: hd,
        dv: hd,
    };
    let rows = sdpa_reference(dims, &spec, &qp, &kp, &vp);
    let wo = f(&out_w);
    for i in 0..lq {
        for o in 0..e {
            let mut want = if with_out_bias { out_b[o] as f64 } else { 0.0 };
            let mut tol = 0.0;
            let mut magnitude = want.abs();
            for h in 0..heads {
                let r = &rows[h * lq + i];
                for c in 0..hd {
                    let w = wo[o * e + h * hd + c];
                    want += w * r.out[c];
                    tol += w.abs() * r.tol;
                    magnitude += (w * r.out[c]).abs();
                }
            }
            tol += (e as f64 + 4.0) * 2.0 * EPS * magnitude + 1e-30;
            let got = out[i * e + o] as f64;
            assert!(
                (got - want).abs() <= tol,
                "mha out[{i}][{o}]: got {got}, reference {want}, tolerance {tol}"
            );
        }
    }
}
