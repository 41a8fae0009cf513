//! Dense layers: `linear` (f32), `int8_ffn`, and the int8 norms `int8_layer_norm` and
//! `int8_add` with raw integer parameters of any value.
//!
//! Checks: no panic; `linear` and `int8_ffn` return `Err` exactly when a documented
//! precondition fails (output untouched); `linear` against an f64 reference within the
//! derived bound; `int8_ffn` documents its stages (`int8_dense`, the activation table,
//! `int8_dense`, a row at a time), so its bytes and stage peaks must equal that composition
//! of the public kernels exactly; the int8 norms (raw parameters) `Err` exactly outside
//! their documented ranges, and their outputs stay within [-127, 127].
#![no_main]

use libfuzzer_sys::fuzz_target;
use microattn::attention::int8::{int8_dense, Int8Dense, MAX_DENSE_IN};
use microattn::layers::int8::{
    int8_add, int8_ffn, Int8Add, Int8FfnParams, Int8FfnStats, Int8LayerNorm, Int8Lut, MAX_NORM_DIM,
};
use microattn::layers::{Activation, FfnShape};
use microattn::projection::{linear, LinearShape};
use microattn::quant::{FixedMultiplier, MAX_SHIFT, MIN_SHIFT};
use microattn::Error;
use microattn_fuzz::*;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    match input.byte() % 4 {
        0 => f32_linear(input),
        1 | 2 => ffn(input),
        _ => norms(input),
    }
});

fn int8s(input: &mut Input<'_>, n: usize) -> Vec<i8> {
    (0..n).map(|_| input.byte() as i8).collect()
}

fn raw_multiplier(input: &mut Input<'_>) -> FixedMultiplier {
    let m = i32::from_le_bytes([input.byte(), input.byte(), input.byte(), input.byte()]);
    let m = if m == i32::MIN { 1 } else { m.abs().max(1) };
    let shift = MIN_SHIFT + input.below((MAX_SHIFT - MIN_SHIFT + 1) as usize) as i32;
    FixedMultiplier::from_raw(m, shift).expect("valid raw multiplier")
}

fn f32_linear(mut input: Input<'_>) {
    let (rows, inputs, outputs) = (input.dim(4), input.dim(24), input.dim(6));
    let shape = LinearShape::new(rows, inputs, outputs);
    let expected = [
        product(&[rows, inputs]),
        product(&[outputs, inputs]),
        product(&[rows, outputs]),
    ];
    let x = input.values_for(expected[0]);
    let w = input.values_for(expected[1]);
    let b = input.bool().then(|| input.values_for(Some(outputs)));
    let y_len = input.len(expected[2]);

    let mut exp = Expected::default();
    exp.check([rows, inputs, outputs].contains(&0), Error::ZeroDimension);
    check_len(&mut exp, x.len(), expected[0]);
    check_len(&mut exp, w.len(), expected[1]);
    check_len(&mut exp, y_len, expected[2]);
    if let Some(b) = &b {
        check_len(&mut exp, b.len(), Some(outputs));
    }
    let mut y = vec![f32::NAN; y_len];
    let result = linear(&x, &w, b.as_deref(), &mut y, shape);
    if !exp.assert(&result, "linear") {
        assert!(y.iter().all(|v| v.is_nan()), "linear wrote output on Err");
        return;
    }
    let all_finite = finite(&x) && finite(&w) && b.as_deref().is_none_or(finite);
    if !all_finite {
        return;
    }
    for r in 0..rows {
        for c in 0..outputs {
            let (mut s, mut m) = (0.0f64, 0.0f64);
            for i in 0..inputs {
                let p = x[r * inputs + i] as f64 * w[c * inputs + i] as f64;
                s += p;
                m += p.abs();
            }
            let bias = b.as_ref().map_or(0.0, |b| b[c] as f64);
            let want = s + bias;
            let got = y[r * outputs + c] as f64;
            if want.abs() > f32::MAX as f64 / 2.0 || m > f32::MAX as f64 / 2.0 {
                continue; // f32 overflows: only "no panic" is promised
            }
            // f32 products and sums (any order, FMA or not), the bias add, subnormals.
            let tol = (inputs as f64 + 4.0) * 2.0 * EPS * (m + bias.abs()) + inputs as f64 * 2e-45;
            assert!(
                (got - want).abs() <= tol,
                "linear y[{r}, {c}]: got {got}, reference {want}, tolerance {tol}"
            );
        }
    }
}

/// A dense layer's storage: weights, optional bias, multipliers (one or per channel).
type Layer = (Vec<i8>, Option<Vec<i32>>, Vec<FixedMultiplier>);

fn layer(input: &mut Input<'_>, outputs: usize, inputs: usize) -> Layer {
    let n = input.len(product(&[outputs, inputs]));
    let w = int8s(input, n);
    let bias = input.bool().then(|| {
        let n = input.len(Some(outputs));
        (0..n)
            .map(|_| i16::from_le_bytes([input.byte(), input.byte()]) as i32)
            .collect()
    });
    let n_mult = if input.bool() {
        input.len(Some(outputs))
    } else {
        1
    };
    let mults = (0..n_mult)
        .map(|_| {
            if input.wild() {
                raw_multiplier(input)
            } else {
                FixedMultiplier::from_real((input.byte() as f64 + 1.0) / 4096.0)
                    .expect("ordinary multiplier")
            }
        })
        .collect();
    (w, bias, mults)
}

fn dense(l: &Layer) -> Int8Dense<'_> {
    Int8Dense {
        weight: &l.0,
        bias: l.1.as_deref(),
        multipliers: &l.2,
    }
}

fn expect_layer(exp: &mut Expected, l: &Layer, outputs: usize, inputs: usize) {
    check_len(exp, l.0.len(), product(&[outputs, inputs]));
    if let Some(b) = &l.1 {
        check_len(exp, b.len(), Some(outputs));
    }
    exp.check(
        l.2.len() != outputs && l.2.len() != 1,
        Error::LengthMismatch {
            expected: 0,
            found: 0,
        },
    );
    exp.check(inputs > MAX_DENSE_IN, Error::InvalidParameter);
}

fn ffn(mut input: Input<'_>) {
    let (rows, dim, hidden) = (input.dim(4), input.dim(12), input.dim(24));
    let shape = FfnShape::new(rows, dim, hidden);
    let n = product(&[rows, dim]);
    let x_len = input.len(n);
    let x = int8s(&mut input, x_len);
    let y_len = input.len(n);
    let scratch_len = input.len(Some(hidden));
    let l1 = layer(&mut input, hidden, dim);
    let l2 = layer(&mut input, dim, hidden);
    let activation = [
        Activation::Relu,
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::Silu,
    ][input.below(4)];
    let Ok(lut) = Int8Lut::prepare(
        activation,
        (input.byte() as f32 + 1.0) / 256.0,
        (input.byte() as f32 + 1.0) / 256.0,
    ) else {
        panic!("Int8Lut::prepare with ordinary scales failed");
    };
    let params = Int8FfnParams {
        linear1: dense(&l1),
        activation: lut,
        linear2: dense(&l2),
    };

    let mut exp = Expected::default();
    exp.check([rows, dim, hidden].contains(&0), Error::ZeroDimension);
    check_len(&mut exp, x_len, n);
    check_len(&mut exp, y_len, n);
    exp.check(
        scratch_len < hidden,
        Error::ScratchTooSmall {
            needed: 0,
            found: 0,
        },
    );
    expect_layer(&mut exp, &l1, hidden, dim);
    expect_layer(&mut exp, &l2, dim, hidden);
    let mut y = vec![99i8; y_len];
    let mut scratch = vec![0i8; scratch_len];
    let result = int8_ffn(&x, &params, &mut y, shape, &mut scratch);
    if !exp.assert(&result, "int8_ffn") {
        assert!(y.iter().all(|&v| v == 99), "int8_ffn wrote output on Err");
        return;
    }
    let stats = result.unwrap_or_default();

    // The documented stages, a row at a time.
    let mut want = vec![0i8; rows * dim];
    let mut peaks = Int8FfnStats::default();
    let mut h = vec![0i8; hidden];
    for r in 0..rows {
        let p1 = int8_dense(
            &x[r * dim..][..dim],
            &params.linear1,
            &mut h,
            LinearShape::new(1, dim, hidden),
        )
        .expect("linear1");
        for v in h.iter_mut() {
            *v = lut.table[*v as u8 as usize];
        }
        let p2 = int8_dense(
            &h,
            &params.linear2,
            &mut want[r * dim..][..dim],
            LinearShape::new(1, hidden, dim),
        )
        .expect("linear2");
        peaks.hidden = peaks.hidden.max(p1);
        peaks.out = peaks.out.max(p2);
    }
    assert_eq!(y, want, "int8_ffn output differs from its stages");
    assert_eq!(stats, peaks, "int8_ffn stage peaks");
}

fn norms(mut input: Input<'_>) {
    let dim = input.dim(16);
    let rows = input.dim(4);
    let n = input.len(product(&[rows, dim]));
    let x = int8s(&mut input, n);
    let s_len = input.len(Some(n));
    let sub = int8s(&mut input, s_len);
    let y_len = input.len(Some(n));
    let (gl, bl) = (input.len(Some(dim)), input.len(Some(dim)));
    let big = |input: &mut Input<'_>| -> i32 {
        i32::from_le_bytes([input.byte(), input.byte(), input.byte(), input.byte()])
    };
    let gamma: Vec<i32> = (0..gl).map(|_| big(&mut input)).collect();
    let beta: Vec<i32> = (0..bl).map(|_| big(&mut input)).collect();
    let eps = i64::from_le_bytes([
        input.byte(),
        input.byte(),
        input.byte(),
        input.byte(),
        input.byte(),
        input.byte(),
        0,
        if input.wild() { input.byte() } else { 0 },
    ]);
    let norm = Int8LayerNorm {
        gamma: &gamma,
        beta: &beta,
        eps,
        input: raw_multiplier(&mut input),
        sublayer: raw_multiplier(&mut input),
    };
    let with_sub = input.bool();
    let mut y = vec![99i8; y_len];
    let result = microattn::layers::int8::int8_layer_norm(
        &x,
        with_sub.then_some(&sub[..]),
        &norm,
        &mut y,
        dim,
    );
    // The documented preconditions (Int8LayerNorm: eps in [0, 2^45), shifts at most 12).
    let mut exp = Expected::default();
    exp.check(dim == 0 || x.is_empty(), Error::ZeroDimension);
    let whole_rows = dim != 0 && x.len().is_multiple_of(dim);
    exp.check(
        !whole_rows,
        Error::LengthMismatch {
            expected: 0,
            found: 0,
        },
    );
    if with_sub {
        check_len(&mut exp, sub.len(), Some(x.len()));
    }
    check_len(&mut exp, y_len, Some(x.len()));
    exp.check(dim > MAX_NORM_DIM, Error::InvalidParameter);
    check_len(&mut exp, gamma.len(), Some(dim));
    check_len(&mut exp, beta.len(), Some(dim));
    exp.check(!(0..1i64 << 45).contains(&eps), Error::InvalidScale);
    exp.check(
        norm.input.shift() > 12 || norm.sublayer.shift() > 12,
        Error::InvalidScale,
    );
    if exp.assert(&result, "int8_layer_norm") {
        assert!(
            y.iter().all(|&v| v != -128),
            "int8_layer_norm: output outside [-127, 127]"
        );
    } else {
        assert!(
            y.iter().all(|&v| v == 99),
            "int8_layer_norm wrote output on Err"
        );
    }
    let add = Int8Add {
        input: raw_multiplier(&mut input),
        sublayer: raw_multiplier(&mut input),
    };
    let mut y = vec![99i8; y_len];
    let mut exp = Expected::default();
    check_len(&mut exp, sub.len(), Some(x.len()));
    check_len(&mut exp, y_len, Some(x.len()));
    let result = int8_add(&x, &sub, &add, &mut y);
    if exp.assert(&result, "int8_add") {
        assert!(
            y.iter().all(|&v| v != -128),
            "int8_add: output outside [-127, 127]"
        );
    }
}
