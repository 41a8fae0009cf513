//! The f32 slice-tier entry points the other targets leave out: `add_layer_norm`,
//! `sinusoidal_add`, `gat_csr` and `gat_edges`, `selective_scan_step`, and `linear_typed` /
//! `linear_mixed` in f32, f16 and bf16.
//!
//! Checks: no panic; `Err` exactly when a documented precondition fails (zero dimensions,
//! lengths, parameters, the CSR rules), output untouched on `Err`; finite output for finite
//! inputs of moderate size (|v| <= 1e3, where the kernel's intermediates cannot overflow);
//! and the documented identities, bit for bit: `sinusoidal_add` = `x + sinusoidal_table`,
//! `gat_csr` = `gat` on the same edges as a target-sorted COO list (and `gat_edges` = both),
//! `selective_scan_step` = `selective_scan` of one token. `add_layer_norm` and the linear
//! layers are compared with an f64 reference on tame values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microattn::graph::{gat, gat_csr, gat_edges, gat_scratch_len, GatEdges, GatParams};
use microattn::graph::{GatShape, GatWeights};
use microattn::layers::add_layer_norm;
use microattn::position::{sinusoidal_add, sinusoidal_table};
use microattn::projection::{linear_mixed, linear_typed, LinearShape};
use microattn::ssm::{selective_scan, selective_scan_step};
use microattn::ssm::{ScanSequence, ScanShape, ScanToken, ScanWeights};
use microattn::{bf16, f16, Element, Error};
use microattn_fuzz::*;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    match input.byte() % 5 {
        0 => add_norm(input),
        1 => sinusoid(input),
        2 => graph(input),
        3 => scan_step(input),
        _ => match input.byte() % 5 {
            0 => linear_case::<f32, f32>(input, false),
            1 => linear_case::<f16, f32>(input, false),
            2 => linear_case::<bf16, bf16>(input, false),
            3 => linear_case::<bf16, f32>(input, true),
            _ => linear_case::<f16, f16>(input, true),
        },
    }
});

/// Whether every value is finite and at most 1e3 in magnitude.
fn moderate(tensors: &[&[f32]]) -> bool {
    tensors.iter().all(|t| finite(t) && max_abs(t) <= 1e3)
}

/// Equal bits, any NaN matching any NaN (a NaN's payload and sign are not specified).
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
}

fn add_norm(mut input: Input<'_>) {
    let dim = input.dim(8);
    let rows = input.dim(4);
    let x_len = input.len(product(&[rows, dim]));
    let r_len = input.len(Some(x_len));
    let w_len = input.len(Some(dim));
    let with_bias = input.bool();
    let b_len = input.len(Some(dim));
    let eps = match input.byte() % 4 {
        0 => 1e-5,
        1 => 0.0,
        _ => input.value(),
    };
    let (x0, r, w, b) = (
        input.values(x_len),
        input.values(r_len),
        input.values(w_len),
        input.values(b_len),
    );
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
    check_len(&mut exp, r_len, Some(x_len));
    exp.check(!(eps.is_finite() && eps >= 0.0), Error::InvalidScale);
    let mut x = x0.clone();
    let result = add_layer_norm(&mut x, &r, &w, with_bias.then_some(&b[..]), dim, eps);
    debug("add_layer_norm", &result);
    if !exp.assert(&result, "add_layer_norm") {
        assert!(same_bits(&x, &x0), "add_layer_norm wrote x on Err");
        return;
    }
    if !(finite(&x0) && finite(&r) && finite(&w) && (!with_bias || finite(&b))) {
        return;
    }
    // As layer_norm (fuzz target `layers`): normalized values are at most sqrt(dim), and the
    // sum x + residual is kept in f32 with overflowing rows rescaled, so any finite input
    // gives finite output while the affine step stays in range.
    let b_max = if with_bias { max_abs(&b) } else { 0.0 };
    if max_abs(&w) * (dim as f64).sqrt() * 1.01 + b_max < f32::MAX as f64 {
        assert!(
            finite(&x),
            "add_layer_norm: non-finite output for finite inputs"
        );
    }
    if input.wild() {
        return;
    }
    // Tame values: multiples of 1/16 below 8 in magnitude, so x + residual is exact in f32.
    for ((xr, rr), yr) in x0
        .chunks_exact(dim)
        .zip(r.chunks_exact(dim))
        .zip(x.chunks_exact(dim))
    {
        let n = dim as f64;
        let s: Vec<f64> = xr
            .iter()
            .zip(rr)
            .map(|(&a, &c)| a as f64 + c as f64)
            .collect();
        let mean = s.iter().sum::<f64>() / n;
        let var = s.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / n;
        let denom = (var + eps as f64).sqrt();
        let spread = s.iter().fold(0.0f64, |m, a| m.max(a.abs()));
        for c in 0..dim {
            let normalized = if denom > 0.0 {
                (s[c] - mean) / denom
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
                "add_layer_norm[{c}]: got {got}, reference {want}, tolerance {tol}"
            );
        }
    }
}

fn sinusoid(mut input: Input<'_>) {
    let (len, dim) = (input.dim(6), input.dim(9));
    let n = input.len(product(&[len, dim]));
    let x0 = input.values(n);
    let pos_offset = input.small(100);
    let base = match input.byte() % 3 {
        0 => 10000.0,
        _ => input.value(),
    };
    let mut exp = Expected::default();
    exp.check(len == 0 || dim == 0, Error::ZeroDimension);
    exp.check(!(base.is_finite() && base > 0.0), Error::InvalidParameter);
    check_len(&mut exp, n, product(&[len, dim]));
    let mut x = x0.clone();
    let result = sinusoidal_add(&mut x, len, dim, pos_offset, base);
    debug("sinusoidal_add", &result);
    if !exp.assert(&result, "sinusoidal_add") {
        assert!(same_bits(&x, &x0), "sinusoidal_add wrote x on Err");
        return;
    }
    // Documented: the same values as the table, added in f32.
    let mut pe = vec![f32::NAN; n];
    sinusoidal_table(&mut pe, len, dim, pos_offset, base).expect("table after a valid add");
    let want: Vec<f32> = x0.iter().zip(&pe).map(|(a, p)| a + p).collect();
    assert!(
        same_bits(&x, &want),
        "sinusoidal_add differs from x + sinusoidal_table: {x:?} vs {want:?}"
    );
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        eprintln!(
            "sinusoidal_add len {len} dim {dim} pos_offset {pos_offset} base {base:e}\npe {pe:?}"
        );
    }
    if moderate(&[&x0]) {
        assert!(finite(&x), "sinusoidal_add: non-finite output for finite x");
    }
}

fn graph(mut input: Input<'_>) {
    let shape = GatShape::new(input.dim(6), input.dim(4), input.dim(4), input.dim(3));
    let nodes = shape.nodes;
    let params = GatParams {
        concat: input.bool(),
        negative_slope: match input.byte() % 4 {
            0 => 0.2,
            _ => input.value(),
        },
        add_self_loops: input.bool(),
    };
    let hf = product(&[shape.heads, shape.out_features]);
    let x = input.values_for(product(&[nodes, shape.in_features]));
    let w = input.values_for(hf.and_then(|n| n.checked_mul(shape.in_features)));
    let (att_src, att_dst) = (input.values_for(hf), input.values_for(hf));
    let out_features = shape.output_features(params.concat);
    let bias = input.values_for(hf.is_some().then_some(out_features));
    let with_bias = input.bool();
    // Valid edges (source, target), then grouped by target keeping their order: the CSR of
    // the transposed adjacency and the equivalent COO list.
    let count = input.byte() as usize % 12;
    let mut pairs: Vec<(usize, usize)> = (0..count)
        .map(|_| {
            let m = nodes.clamp(1, 64);
            (input.below(m), input.below(m))
        })
        .collect();
    pairs.sort_by_key(|&(_, t)| t); // stable
    let rows = nodes.min(64);
    let mut row_ptr: Vec<i64> = vec![0];
    for t in 0..rows {
        row_ptr.push(pairs.iter().filter(|&&(_, tt)| tt <= t).count() as i64);
    }
    let mut col_idx: Vec<i64> = pairs.iter().map(|&(s, _)| s as i64).collect();
    let coo: Vec<i64> = pairs
        .iter()
        .map(|&(s, _)| s as i64)
        .chain(pairs.iter().map(|&(_, t)| t as i64))
        .collect();
    // Sometimes break one CSR rule.
    let mut csr_bad = false;
    match input.byte() % 8 {
        0 => {
            row_ptr.pop(); // one entry short
        }
        1 => {
            row_ptr.push(col_idx.len() as i64);
        }
        2 if !col_idx.is_empty() => {
            col_idx[0] = if input.bool() { -1 } else { nodes as i64 };
            csr_bad = true;
        }
        3 => {
            row_ptr[0] = 1;
            csr_bad = true;
        }
        4 => {
            // The end not at col_idx.len().
            if let Some(last) = row_ptr.last_mut() {
                *last += 1;
            }
            csr_bad = true;
        }
        5 if row_ptr.len() > 2 => {
            // Decreasing (or past the end when all rows are empty).
            row_ptr[1] = col_idx.len() as i64 + 1;
            csr_bad = true;
        }
        _ => {}
    }
    let csr_len_ok = nodes.checked_add(1) == Some(row_ptr.len());
    let out_len = input.len(product(&[nodes, out_features]).filter(|_| hf.is_some()));
    let scratch_len = input.len(Some(gat_scratch_len(shape).min(4096)));

    let mut exp = Expected::default();
    let dims = [nodes, shape.in_features, shape.out_features, shape.heads];
    exp.check(dims.contains(&0), Error::ZeroDimension);
    check_len(&mut exp, x.len(), product(&[nodes, shape.in_features]));
    check_len(
        &mut exp,
        w.len(),
        hf.and_then(|n| n.checked_mul(shape.in_features)),
    );
    check_len(&mut exp, att_src.len(), hf);
    check_len(&mut exp, att_dst.len(), hf);
    if with_bias {
        check_len(&mut exp, bias.len(), hf.map(|_| out_features));
    }
    check_len(&mut exp, out_len, hf.and(product(&[nodes, out_features])));
    match nodes.checked_add(1) {
        None => exp.fail(Error::ShapeOverflow),
        Some(_) if !csr_len_ok => exp.fail(Error::LengthMismatch {
            expected: 0,
            found: 0,
        }),
        _ => {}
    }
    exp.check(csr_bad, Error::InvalidParameter);
    exp.check(!params.negative_slope.is_finite(), Error::InvalidParameter);
    exp.check(
        scratch_len < gat_scratch_len(shape),
        Error::ScratchTooSmall {
            needed: 0,
            found: 0,
        },
    );
    let weights = GatWeights {
        lin_weight: &w,
        att_src: &att_src,
        att_dst: &att_dst,
        bias: with_bias.then_some(&bias[..]),
    };
    let mut scratch = vec![0.0f32; scratch_len];
    let mut out = vec![f32::NAN; out_len];
    let result = gat_csr(
        &x,
        &row_ptr,
        &col_idx,
        &weights,
        &mut out,
        shape,
        &params,
        &mut scratch,
    );
    // gat_edges with the same CSR (u32 ids when they fit, so another id type is exercised).
    let mut out_edges = vec![f32::NAN; out_len];
    let (rp32, ci32): (Vec<u32>, Vec<u32>) = (
        row_ptr.iter().map(|&v| v as u32).collect(),
        col_idx.iter().map(|&v| v as u32).collect(),
    );
    let ids_fit = row_ptr
        .iter()
        .chain(&col_idx)
        .all(|&v| (0..1 << 31).contains(&v));
    if ids_fit {
        let edges = GatEdges::Csr {
            row_ptr: &rp32,
            col_idx: &ci32,
        };
        let r2 = gat_edges(
            &x,
            edges,
            &weights,
            &mut out_edges,
            shape,
            &params,
            &mut scratch,
        );
        assert_eq!(
            r2.is_ok(),
            result.is_ok(),
            "gat_edges(Csr) {r2:?} vs gat_csr {result:?}"
        );
        assert!(same_bits(&out, &out_edges), "gat_edges(Csr) != gat_csr");
    }
    debug("gat_csr", &result);
    if !exp.assert(&result, "gat_csr") {
        assert!(
            out.iter().all(|v| v.is_nan()),
            "gat_csr wrote output on Err"
        );
        return;
    }
    // The same edges as a COO list sorted by target: documented to give the same result;
    // each target's edges come in the same order, so the same bits.
    let mut out_coo = vec![f32::NAN; out_len];
    gat(
        &x,
        &coo,
        &weights,
        &mut out_coo,
        shape,
        &params,
        &mut scratch,
    )
    .expect("gat on the COO form of a valid CSR");
    assert!(
        same_bits(&out, &out_coo),
        "gat_csr != gat on the sorted COO list: {out:?} vs {out_coo:?}"
    );
    let mut out_coo2 = vec![f32::NAN; out_len];
    gat_edges(
        &x,
        GatEdges::Coo(&coo),
        &weights,
        &mut out_coo2,
        shape,
        &params,
        &mut scratch,
    )
    .expect("gat_edges on a valid COO list");
    assert!(same_bits(&out_coo, &out_coo2), "gat_edges(Coo) != gat");
    let mut used: Vec<&[f32]> = vec![&x, &w, &att_src, &att_dst];
    if with_bias {
        used.push(&bias);
    }
    if moderate(&used) && params.negative_slope.abs() <= 1e3 {
        assert!(
            finite(&out),
            "gat_csr: non-finite output for moderate inputs"
        );
    }
}

fn scan_step(mut input: Input<'_>) {
    let shape = ScanShape::new(input.dim(4), input.dim(4));
    let (d, n) = (shape.channels, shape.state);
    let dn = product(&[d, n]);
    let state0 = input.values_for(dn);
    let a = input.values_for(dn);
    let dd = input.values_for(Some(d));
    let db = input.values_for(Some(d));
    let (u, delta) = (input.values_for(Some(d)), input.values_for(Some(d)));
    let (b, c) = (input.values_for(Some(n)), input.values_for(Some(n)));
    let z = input.values_for(Some(d));
    let y_len = input.len(Some(d));
    let (with_d, with_db, with_z) = (input.bool(), input.bool(), input.bool());
    let weights = ScanWeights {
        a: &a,
        d: with_d.then_some(&dd[..]),
        delta_bias: with_db.then_some(&db[..]),
        delta_softplus: input.bool(),
    };
    let token = ScanToken {
        u: &u,
        delta: &delta,
        b: &b,
        c: &c,
        z: with_z.then_some(&z[..]),
    };
    let mut exp = Expected::default();
    exp.check(d == 0 || n == 0, Error::ZeroDimension);
    check_len(&mut exp, a.len(), dn);
    check_len(&mut exp, state0.len(), dn);
    if with_d {
        check_len(&mut exp, dd.len(), Some(d));
    }
    if with_db {
        check_len(&mut exp, db.len(), Some(d));
    }
    for (len, want) in [(u.len(), d), (delta.len(), d), (b.len(), n), (c.len(), n)] {
        check_len(&mut exp, len, Some(want));
    }
    if with_z {
        check_len(&mut exp, z.len(), Some(d));
    }
    check_len(&mut exp, y_len, Some(d));
    let mut state = state0.clone();
    let mut y = vec![f32::NAN; y_len];
    let result = selective_scan_step(&mut state, &weights, &token, &mut y, shape);
    debug("selective_scan_step", &result);
    if !exp.assert(&result, "selective_scan_step") {
        assert!(
            y.iter().all(|v| v.is_nan()),
            "selective_scan_step wrote y on Err"
        );
        assert!(
            same_bits(&state, &state0),
            "selective_scan_step wrote state on Err"
        );
        return;
    }
    // One token of the sequence scan is the step: same state and output bits.
    let mut state_seq = state0.clone();
    let mut y_seq = vec![f32::NAN; y_len];
    let seq = ScanSequence {
        u: &u,
        delta: &delta,
        b: &b,
        c: &c,
        z: with_z.then_some(&z[..]),
    };
    selective_scan(&mut state_seq, &weights, &seq, &mut y_seq, shape)
        .expect("selective_scan of one valid token");
    assert!(same_bits(&y, &y_seq), "step y {y:?} != scan y {y_seq:?}");
    assert!(same_bits(&state, &state_seq), "step state != scan state");
    // Finite: bound every intermediate in f64 (dt, e^(dt a), the new state, y); where all
    // stay far below f32::MAX the kernel must not produce inf or NaN.
    let mut used: Vec<&[f32]> = vec![&state0, &a, &u, &delta, &b, &c];
    for (on, t) in [(with_d, &dd), (with_db, &db), (with_z, &z)] {
        if on {
            used.push(t);
        }
    }
    if !moderate(&used) {
        return;
    }
    let dt_max = max_abs(&delta) + if with_db { max_abs(&db) } else { 0.0 } + 1.0;
    let growth = (dt_max * max_abs(&a)).min(700.0).exp();
    let x_max = growth * max_abs(&state0) + dt_max * max_abs(&u) * max_abs(&b);
    let y_max = (n as f64 * x_max * max_abs(&c)
        + if with_d { max_abs(&dd) } else { 0.0 } * max_abs(&u))
        * if with_z { max_abs(&z) * 1.2 } else { 1.0 };
    if dt_max * max_abs(&a) < 80.0 && x_max.max(y_max) < 1e37 {
        assert!(finite(&state), "selective_scan_step: non-finite state");
        assert!(finite(&y), "selective_scan_step: non-finite y");
    }
}

fn linear_case<W: Element, Y: Element>(mut input: Input<'_>, mixed: bool) {
    let (rows, inputs, outputs) = (input.dim(4), input.dim(12), input.dim(6));
    let shape = LinearShape::new(rows, inputs, outputs);
    let lens = [
        product(&[rows, inputs]),
        product(&[outputs, inputs]),
        product(&[rows, outputs]),
    ];
    let x = input.values_for(lens[0]);
    let w = input.values_for(lens[1]);
    let b = input.bool().then(|| input.values_for(Some(outputs)));
    let y_len = input.len(lens[2]);
    let mut exp = Expected::default();
    exp.check([rows, inputs, outputs].contains(&0), Error::ZeroDimension);
    check_len(&mut exp, x.len(), lens[0]);
    check_len(&mut exp, w.len(), lens[1]);
    check_len(&mut exp, y_len, lens[2]);
    if let Some(b) = &b {
        check_len(&mut exp, b.len(), Some(outputs));
    }
    let conv = |v: &[f32]| -> Vec<W> { v.iter().map(|&a| W::from_f32(a)).collect() };
    let (xw, ww, bw) = (conv(&x), conv(&w), b.as_deref().map(conv));
    let nan = Y::from_f32(f32::NAN);
    let mut y = vec![nan; y_len];
    let what = if mixed {
        "linear_mixed"
    } else {
        "linear_typed"
    };
    let result = if mixed {
        // f32 activations: x as given, weights stored as W.
        linear_mixed(&x, &ww, bw.as_deref(), &mut y, shape)
    } else {
        linear_typed(&xw, &ww, bw.as_deref(), &mut y, shape)
    };
    debug("linear", &result);
    if !exp.assert(&result, what) {
        assert!(
            y.iter().all(|v| v.to_f32().is_nan()),
            "{what} wrote output on Err"
        );
        return;
    }
    // The stored values (what the kernel sees), widened to f64.
    let xs: Vec<f32> = if mixed {
        x.clone()
    } else {
        xw.iter().map(|v| v.to_f32()).collect()
    };
    let ws: Vec<f32> = ww.iter().map(|v| v.to_f32()).collect();
    let bs: Option<Vec<f32>> = bw.map(|b| b.iter().map(|v| v.to_f32()).collect());
    let got: Vec<f32> = y.iter().map(|v| v.to_f32()).collect();
    let used_moderate = moderate(&[&xs, &ws, bs.as_deref().unwrap_or(&[])]);
    // Y's largest finite value and unit roundoff.
    let (y_max, y_eps) = if Y::from_f32(70000.0).to_f32().is_infinite() {
        (65504.0, 1.0 / 2048.0)
    } else if Y::from_f32(1.0 + 1.0 / 512.0).to_f32() == 1.0 {
        (f32::MAX as f64, 1.0 / 256.0) // bf16: 8 significant bits
    } else {
        (f32::MAX as f64, EPS)
    };
    for r in 0..rows {
        for o in 0..outputs {
            let (mut s, mut m) = (0.0f64, 0.0f64);
            for i in 0..inputs {
                let p = xs[r * inputs + i] as f64 * ws[o * inputs + i] as f64;
                s += p;
                m += p.abs();
            }
            if let Some(b) = &bs {
                s += b[o] as f64;
                m += (b[o] as f64).abs();
            }
            let g = got[r * outputs + o] as f64;
            if used_moderate && m * (1.0 + 1e-3) < y_max {
                assert!(
                    g.is_finite(),
                    "{what}: non-finite output for moderate inputs"
                );
            }
            if !input.wild() {
                // f32 sums of `inputs + 1` terms, then one rounding to Y.
                let tol = (inputs as f64 + 4.0) * 2.0 * EPS * m + y_eps * s.abs() * 1.01 + 1e-30;
                assert!(
                    (g - s).abs() <= tol,
                    "{what} y[{r}][{o}]: got {g}, reference {s}, tolerance {tol}"
                );
            }
        }
    }
}

/// With `FUZZ_DEBUG` set, prints which call ran and whether it passed validation (to see
/// how often a corpus gets past the checks).
fn debug<T: core::fmt::Debug>(what: &str, result: &Result<T, Error>) {
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        eprintln!("FUZZ {what} {}", if result.is_ok() { "Ok" } else { "Err" });
    }
}
