//! The layers: `layer_norm`, `rms_norm`, `ffn` and `gated_ffn` (f32): shapes, weights,
//! epsilon, scratch, activation and values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microattn::layers::{
    ffn, gated_ffn, layer_norm, rms_norm, Activation, FfnShape, FfnWeights, GatedFfnWeights,
};
use microattn::Error;
use microattn_fuzz::*;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    match input.byte() % 4 {
        0 | 1 => norm(input),
        _ => feed_forward(input),
    }
});

fn norm(mut input: Input<'_>) {
    let rms = input.bool();
    let dim = input.dim(8);
    let rows = input.dim(4);
    let x_len = input.len(product(&[rows, dim]));
    let w_len = input.len(Some(dim));
    let with_bias = !rms && input.bool();
    let b_len = input.len(Some(dim));
    let y_len = input.len(Some(x_len));
    let eps = match input.byte() % 4 {
        0 => 1e-5,
        1 => 0.0,
        _ => input.value(),
    };
    let (x, w, b) = (
        input.values(x_len),
        input.values(w_len),
        input.values(b_len),
    );
    let mut y = vec![f32::NAN; y_len];

    let mut exp = Expected::default();
    exp.check(dim == 0 || x_len == 0, Error::ZeroDimension);
    if dim != 0 && !x_len.is_multiple_of(dim) {
        exp.fail(Error::LengthMismatch {
            expected: 0,
            found: 0,
        });
    }
    check_len(&mut exp, w_len, Some(dim));
    if with_bias {
        check_len(&mut exp, b_len, Some(dim));
    }
    check_len(&mut exp, y_len, Some(x_len));
    exp.check(!(eps.is_finite() && eps >= 0.0), Error::InvalidScale);
    let result = if rms {
        rms_norm(&x, &w, &mut y, dim, eps)
    } else {
        layer_norm(&x, &w, with_bias.then_some(&b[..]), &mut y, dim, eps)
    };
    let what = if rms { "rms_norm" } else { "layer_norm" };
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        eprintln!("{what} dim {dim} eps {eps}\nx {x:?}\nw {w:?}\nb {b:?}\ny {y:?}");
    }
    if !exp.assert(&result, what) {
        assert!(y.iter().all(|v| v.is_nan()), "{what} wrote output on Err");
        return;
    }
    if !(finite(&x) && finite(&w) && (!with_bias || finite(&b))) {
        return;
    }
    // A normalized value is at most sqrt(dim) in magnitude: past that bound the true output
    // itself leaves f32's range (a weight near f32::MAX), so only below it must it be finite.
    let b_max = if with_bias { max_abs(&b) } else { 0.0 };
    // (Rows whose f32 sums overflow are recomputed on scaled values, tests/bad_input.rs
    // `layer_norm_of_huge_values_is_finite`: no condition on the inputs' size.)
    if max_abs(&w) * (dim as f64).sqrt() * 1.01 + b_max < f32::MAX as f64 {
        assert!(finite(&y), "{what}: non-finite output for finite inputs");
    }
    if input.wild() {
        return;
    }
    // Tame values: f64 reference; the f32 kernel's error is a few roundings per element,
    // relative to the spread of the row (its mean is subtracted in f32).
    for (xr, yr) in x.chunks_exact(dim).zip(y.chunks_exact(dim)) {
        let n = dim as f64;
        let xf: Vec<f64> = xr.iter().map(|&a| a as f64).collect();
        let (center, denom) = if rms {
            (
                0.0,
                (xf.iter().map(|a| a * a).sum::<f64>() / n + eps as f64).sqrt(),
            )
        } else {
            let mean = xf.iter().sum::<f64>() / n;
            let var = xf.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / n;
            (mean, (var + eps as f64).sqrt())
        };
        let spread = xf.iter().fold(0.0f64, |m, a| m.max(a.abs()));
        for c in 0..dim {
            let normalized = if denom > 0.0 {
                (xf[c] - center) / denom
            } else {
                0.0
            };
            let bias = if with_bias { b[c] as f64 } else { 0.0 };
            let want = normalized * w[c] as f64 + bias;
            let rel = (n + 8.0) * 4.0 * EPS;
            let tol = if denom > 0.0 {
                (w[c] as f64).abs() * rel * (spread / denom + normalized.abs()) + rel * bias.abs()
            } else {
                f64::INFINITY // zero variance and eps = 0: documented zeros
            };
            let got = yr[c] as f64;
            assert!(
                (got - want).abs() <= tol + 1e-30,
                "{what}[{c}]: got {got}, reference {want}, tolerance {tol}"
            );
        }
    }
}

fn act_f64(a: Activation, x: f64) -> f64 {
    match a {
        Activation::Relu => x.max(0.0),
        Activation::Gelu => 0.5 * x * libm::erfc(-x / core::f64::consts::SQRT_2),
        Activation::GeluTanh => {
            let inner = (2.0 / core::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            0.5 * x * (1.0 + inner.tanh())
        }
        Activation::Silu => x / (1.0 + (-x).exp()),
    }
}

fn feed_forward(mut input: Input<'_>) {
    let gated = input.bool();
    let activation = [
        Activation::Relu,
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::Silu,
    ][input.below(4)];
    let (rows, dim, hidden) = (input.dim(12), input.dim(6), input.dim(6));
    let io = product(&[rows, dim]);
    let wl = product(&[dim, hidden]);
    let lens = [
        input.len(io),
        input.len(io),
        input.len(wl),
        input.len(wl),
        input.len(wl),
        input.len(Some(hidden)),
        input.len(Some(dim)),
    ];
    let (with_b1, with_b2) = (input.bool(), input.bool());
    let per_row = if gated {
        hidden.saturating_mul(2)
    } else {
        hidden
    };
    // Sometimes room for several rows per pass over the weights.
    let scratch_len = input.len(Some(per_row)) * (1 + input.byte() as usize % 3);
    let [x, _, w1, w2, w3, b1, b2] = [0, 1, 2, 3, 4, 5, 6].map(|i| input.values(lens[i]));
    let mut y = vec![f32::NAN; lens[1]];
    let mut scratch = vec![0.0f32; scratch_len];

    let mut exp = Expected::default();
    exp.check([rows, dim, hidden].contains(&0), Error::ZeroDimension);
    check_len(&mut exp, lens[0], io);
    check_len(&mut exp, lens[1], io);
    check_len(&mut exp, lens[2], wl);
    check_len(&mut exp, lens[3], wl);
    if gated {
        check_len(&mut exp, lens[4], wl);
    } else {
        if with_b1 {
            check_len(&mut exp, lens[5], Some(hidden));
        }
        if with_b2 {
            check_len(&mut exp, lens[6], Some(dim));
        }
    }
    exp.check(
        scratch_len < per_row,
        Error::ScratchTooSmall {
            needed: per_row,
            found: scratch_len,
        },
    );
    let shape = FfnShape::new(rows, dim, hidden);
    let result = if gated {
        let w = GatedFfnWeights {
            gate: &w1,
            up: &w3,
            down: &w2,
        };
        gated_ffn(&x, &w, activation, &mut y, shape, &mut scratch)
    } else {
        let w = FfnWeights {
            w1: &w1,
            b1: with_b1.then_some(&b1[..]),
            w2: &w2,
            b2: with_b2.then_some(&b2[..]),
        };
        ffn(&x, &w, activation, &mut y, shape, &mut scratch)
    };
    let what = if gated { "gated_ffn" } else { "ffn" };
    if !exp.assert(&result, what) {
        assert!(y.iter().all(|v| v.is_nan()), "{what} wrote output on Err");
        return;
    }
    let used: Vec<&[f32]> = if gated {
        vec![&x, &w1, &w2, &w3]
    } else {
        let mut u: Vec<&[f32]> = vec![&x, &w1, &w2];
        if with_b1 {
            u.push(&b1);
        }
        if with_b2 {
            u.push(&b2);
        }
        u
    };
    if !used.iter().all(|t| finite(t)) {
        return;
    }
    // Bounds on every intermediate (|act(g)| <= 1.2 |g|): within them the true output and
    // everything on the way is representable, so the kernel's output must be finite.
    let b1_max = if with_b1 { max_abs(&b1) } else { 0.0 };
    let b2_max = if with_b2 { max_abs(&b2) } else { 0.0 };
    let g_max = dim as f64 * max_abs(&x) * max_abs(&w1) + b1_max;
    let mut h_max = 1.2 * g_max;
    if gated {
        h_max *= dim as f64 * max_abs(&x) * max_abs(&w3);
    }
    let y_max = hidden as f64 * max_abs(&w2) * h_max + b2_max;
    if g_max.max(h_max).max(y_max) < 1e37 {
        assert!(finite(&y), "{what}: non-finite output for finite inputs");
    }
    if input.wild() {
        return;
    }
    for r in 0..rows {
        let xr = &x[r * dim..][..dim];
        let mut h = vec![0.0f64; hidden];
        let mut h_err = vec![0.0f64; hidden];
        for o in 0..hidden {
            let pre = |w: &[f32], b: f64| {
                let row = &w[o * dim..][..dim];
                let s: f64 = row
                    .iter()
                    .zip(xr)
                    .map(|(&a, &c)| a as f64 * c as f64)
                    .sum::<f64>()
                    + b;
                let m: f64 = row
                    .iter()
                    .zip(xr)
                    .map(|(&a, &c)| (a as f64 * c as f64).abs())
                    .sum::<f64>()
                    + b.abs();
                (s, (dim as f64 + 4.0) * 2.0 * EPS * m)
            };
            let b = if !gated && with_b1 { b1[o] as f64 } else { 0.0 };
            let (g, ge) = pre(&w1, b);
            let a = act_f64(activation, g);
            // Activation slopes stay below 1.2; its own few ulp.
            let ae = 1.2 * ge + 8.0 * EPS * a.abs() + 1e-38;
            if gated {
                let (u, ue) = pre(&w3, 0.0);
                h[o] = a * u;
                h_err[o] = ae * u.abs() + a.abs() * ue + 2.0 * EPS * (a * u).abs();
            } else {
                h[o] = a;
                h_err[o] = ae;
            }
        }
        for c in 0..dim {
            let row = &w2[c * hidden..][..hidden];
            let b = if !gated && with_b2 { b2[c] as f64 } else { 0.0 };
            let want: f64 = row.iter().zip(&h).map(|(&w, &v)| w as f64 * v).sum::<f64>() + b;
            let mag: f64 = row
                .iter()
                .zip(&h)
                .map(|(&w, &v)| (w as f64 * v).abs())
                .sum::<f64>()
                + b.abs();
            let err: f64 = row
                .iter()
                .zip(&h_err)
                .map(|(&w, &e)| (w as f64).abs() * e)
                .sum::<f64>();
            let tol = err + (hidden as f64 + 4.0) * 2.0 * EPS * mag + 1e-30;
            let got = y[r * dim + c] as f64;
            assert!(
                (got - want).abs() <= tol,
                "{what} y[{r}][{c}]: got {got}, reference {want}, tolerance {tol}"
            );
        }
    }
}
