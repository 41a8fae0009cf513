//! Int8 layers no other target calls: `int8_gat_csr` (with `int8_gat` and `int8_gat_edges`)
//! and `int8_patch_embed`, with raw integer parameters.
//!
//! Checks: no panic; `Err` exactly when a documented precondition fails (zero dimensions,
//! lengths, node ids and CSR rules, slope and multiplier limits, short scratch), output
//! untouched on `Err`; `int8_gat_csr` gives the same bytes and statistics as `int8_gat` on
//! the same edges as a target-sorted COO list (documented), and `int8_gat_edges` as both;
//! outputs in [-127, 127]; `int8_patch_embed` tokens equal an i64 reference built from the
//! documented layout (patch gathered in (channel, row, column) order, `offsets` added, one
//! requantization per output by the channel's multiplier), and the returned peak.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microattn::attention::int8::{Int8Dense, MAX_D, MAX_DENSE_IN};
use microattn::graph::{GatEdges, GatShape};
use microattn::graph_int8::{int8_gat, int8_gat_acc_len, int8_gat_csr, int8_gat_edges};
use microattn::graph_int8::{int8_gat_scratch_len, Int8GatParams, Int8GatStats};
use microattn::graph_int8::{MAX_GAT_LOGIT, MAX_GAT_SLOPE_Q16};
use microattn::layers::int8::{int8_patch_embed, Int8PatchEmbed};
use microattn::layers::PatchShape;
use microattn::quant::{FixedMultiplier, MAX_SHIFT, MIN_SHIFT};
use microattn::Error;
use microattn_fuzz::*;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    if input.bool() {
        graph(input)
    } else {
        patch(input)
    }
});

/// Sentinel that a kernel never writes on `Err` checks against.
const UNTOUCHED: i8 = 0x55;

fn int8s(input: &mut Input<'_>, n: usize) -> Vec<i8> {
    (0..n).map(|_| input.byte() as i8).collect()
}

/// `n` int8s for a slice that should hold `expected` (see [`Input::len`]).
fn int8s_for(input: &mut Input<'_>, expected: Option<usize>) -> Vec<i8> {
    let n = input.len(expected);
    int8s(input, n)
}

/// Small integers mostly (the ordinary case), sometimes any `i32`.
fn int32(input: &mut Input<'_>) -> i32 {
    let raw = i32::from_le_bytes([input.byte(), input.byte(), input.byte(), input.byte()]);
    if input.wild() && input.byte() < 32 {
        raw
    } else {
        raw >> 16
    }
}

/// Any valid multiplier (`from_raw` cannot make another).
fn multiplier(input: &mut Input<'_>) -> FixedMultiplier {
    let m = i32::from_le_bytes([input.byte(), input.byte(), input.byte(), input.byte()]);
    let m = if m == i32::MIN { 1 } else { m.abs().max(1) };
    let shift = if input.wild() {
        MIN_SHIFT + input.below((MAX_SHIFT - MIN_SHIFT + 1) as usize) as i32
    } else {
        -(input.below(20) as i32) // mostly below one
    };
    FixedMultiplier::from_raw(m, shift).expect("valid raw multiplier")
}

/// One or `n` multipliers (sometimes another count).
fn multipliers(input: &mut Input<'_>, n: usize) -> Vec<FixedMultiplier> {
    let count = match input.byte() % 4 {
        0 => 1,
        1 => input.len(Some(n)).min(64),
        _ => n.min(64),
    };
    (0..count).map(|_| multiplier(input)).collect()
}

fn graph(mut input: Input<'_>) {
    let shape = GatShape::new(input.dim(6), input.dim(4), input.dim(4), input.dim(3));
    let (nodes, fin, f) = (shape.nodes, shape.in_features, shape.out_features);
    let hf = product(&[shape.heads, f]);
    let concat = input.bool();
    let out_features = if concat { hf } else { Some(f) };
    let x = int8s_for(&mut input, product(&[nodes, fin]));
    let weight = int8s_for(&mut input, hf.and_then(|n| n.checked_mul(fin)));
    let lin_bias: Vec<i32> = (0..input.len(hf)).map(|_| int32(&mut input)).collect();
    let with_lin_bias = input.byte().is_multiple_of(4);
    let lin_mults = multipliers(&mut input, hf.unwrap_or(1));
    let att_src = int8s_for(&mut input, hf);
    let att_dst = int8s_for(&mut input, hf);
    let bias: Vec<i32> = (0..input.len(out_features.filter(|_| hf.is_some())))
        .map(|_| int32(&mut input))
        .collect();
    let with_bias = input.bool();
    let slope_q16 = match input.byte() % 4 {
        0 => 13107, // 0.2
        1 => int32(&mut input) << (input.byte() % 16),
        _ => int32(&mut input),
    };
    let (src_logit, dst_logit, out_mult) = (
        multiplier(&mut input),
        multiplier(&mut input),
        multiplier(&mut input),
    );
    let add_self_loops = input.bool();
    // Valid edges grouped by target (stable), as CSR and as the equivalent COO list.
    let count = input.byte() as usize % 12;
    let m = nodes.clamp(1, 64);
    let mut pairs: Vec<(usize, usize)> = (0..count)
        .map(|_| (input.below(m), input.below(m)))
        .collect();
    pairs.sort_by_key(|&(_, t)| t);
    let rows = nodes.min(64);
    let mut row_ptr: Vec<i32> = vec![0];
    for t in 0..rows {
        row_ptr.push(pairs.iter().filter(|&&(_, tt)| tt <= t).count() as i32);
    }
    let mut col_idx: Vec<i32> = pairs.iter().map(|&(s, _)| s as i32).collect();
    let coo: Vec<i32> = pairs
        .iter()
        .map(|&(s, _)| s as i32)
        .chain(pairs.iter().map(|&(_, t)| t as i32))
        .collect();
    let mut csr_bad = false;
    match input.byte() % 8 {
        0 => {
            row_ptr.pop();
        }
        1 if !col_idx.is_empty() => {
            col_idx[0] = if input.bool() { -1 } else { nodes as i32 };
            csr_bad = nodes <= i32::MAX as usize || col_idx[0] < 0;
        }
        2 => {
            if let Some(last) = row_ptr.last_mut() {
                *last += 1;
            }
            csr_bad = true;
        }
        3 => {
            row_ptr[0] = -1;
            csr_bad = true;
        }
        _ => {}
    }
    let out_len = input.len(out_features.and_then(|o| o.checked_mul(nodes)));
    let scratch_len = input.len(Some(int8_gat_scratch_len(shape).min(4096)));
    let acc_len = input.len(Some(int8_gat_acc_len(shape).min(4096)));
    let with_stats = input.bool();

    let mut exp = Expected::default();
    exp.check(
        [nodes, fin, f, shape.heads].contains(&0),
        Error::ZeroDimension,
    );
    check_len(&mut exp, x.len(), product(&[nodes, fin]));
    check_len(&mut exp, att_src.len(), hf);
    check_len(&mut exp, att_dst.len(), hf);
    if with_bias {
        check_len(&mut exp, bias.len(), out_features.filter(|_| hf.is_some()));
    }
    check_len(
        &mut exp,
        out_len,
        out_features.and_then(|o| o.checked_mul(nodes)),
    );
    match nodes.checked_add(1) {
        None => exp.fail(Error::ShapeOverflow),
        Some(n1) if n1 != row_ptr.len() => exp.fail(Error::LengthMismatch {
            expected: 0,
            found: 0,
        }),
        _ => {}
    }
    exp.check(csr_bad, Error::InvalidParameter);
    exp.check(
        slope_q16.unsigned_abs() > MAX_GAT_SLOPE_Q16 as u32,
        Error::InvalidParameter,
    );
    exp.check(f > MAX_D, Error::InvalidParameter);
    // The score multipliers: `|m| · 2^14 · F` in logit units against MAX_GAT_LOGIT; at the
    // limit itself the integer rounding decides, so both outcomes are allowed there.
    for lm in [src_logit, dst_logit] {
        let worst = lm.multiplier() as f64 * 2f64.powi(lm.shift() - 31) * 16384.0 * f as f64;
        if worst > MAX_GAT_LOGIT as f64 * 1.001 {
            exp.fail(Error::InvalidScale);
        } else if worst > MAX_GAT_LOGIT as f64 * 0.999 {
            exp.allow(Error::InvalidScale);
        }
    }
    exp.check(
        scratch_len < int8_gat_scratch_len(shape) || acc_len < int8_gat_acc_len(shape),
        Error::ScratchTooSmall {
            needed: 0,
            found: 0,
        },
    );
    // The projection `lin` (an int8_dense of `H*F` outputs).
    exp.check(fin > MAX_DENSE_IN, Error::InvalidParameter);
    check_len(&mut exp, weight.len(), hf.and_then(|n| n.checked_mul(fin)));
    if with_lin_bias {
        check_len(&mut exp, lin_bias.len(), hf);
    }
    if lin_mults.len() != 1 && Some(lin_mults.len()) != hf {
        exp.fail(Error::LengthMismatch {
            expected: 0,
            found: 0,
        });
    }
    let params = Int8GatParams {
        lin: Int8Dense {
            weight: &weight,
            bias: with_lin_bias.then_some(&lin_bias[..]),
            multipliers: &lin_mults,
        },
        att_src: &att_src,
        att_dst: &att_dst,
        src_logit,
        dst_logit,
        slope_q16,
        out: out_mult,
        bias: with_bias.then_some(&bias[..]),
        concat,
        add_self_loops,
    };
    let mut scratch = vec![0i8; scratch_len];
    let mut acc = vec![0i64; acc_len];
    let run = |form: u8, scratch: &mut [i8], acc: &mut [i64]| {
        let mut out = vec![UNTOUCHED; out_len];
        let mut stats = Int8GatStats::default();
        let st = with_stats.then_some(&mut stats);
        let result = match form {
            0 => int8_gat_csr(
                &x, &row_ptr, &col_idx, &params, &mut out, shape, scratch, acc, st,
            ),
            1 => {
                let edges = GatEdges::Csr {
                    row_ptr: &row_ptr[..],
                    col_idx: &col_idx[..],
                };
                int8_gat_edges(&x, edges, &params, &mut out, shape, scratch, acc, st)
            }
            2 => int8_gat(&x, &coo, &params, &mut out, shape, scratch, acc, st),
            _ => {
                let edges = GatEdges::Coo(&coo[..]);
                int8_gat_edges(&x, edges, &params, &mut out, shape, scratch, acc, st)
            }
        };
        (result, out, stats)
    };
    let (result, out, stats) = run(0, &mut scratch, &mut acc);
    let again = run(1, &mut scratch, &mut acc);
    assert_eq!(
        (result, &out, stats),
        (again.0, &again.1, again.2),
        "int8_gat_edges(Csr) differs from int8_gat_csr"
    );
    debug("int8_gat_csr", &result);
    if !exp.assert(&result, "int8_gat_csr") {
        assert!(
            out.iter().all(|&v| v == UNTOUCHED),
            "int8_gat_csr wrote output on Err"
        );
        return;
    }
    assert!(
        out.iter().all(|&v| v >= -127),
        "int8_gat_csr: -128 in the output"
    );
    for form in [2, 3] {
        let coo_run = run(form, &mut scratch, &mut acc);
        assert_eq!(
            (result, &out, stats),
            (coo_run.0, &coo_run.1, coo_run.2),
            "int8_gat_csr differs from the COO form ({form}) of the same edges"
        );
    }
}

fn patch(mut input: Input<'_>) {
    let shape = PatchShape::new(
        input.dim(3),
        input.dim(9),
        input.dim(9),
        input.dim(4),
        input.dim(6),
    );
    let PatchShape {
        channels: c,
        height,
        width,
        patch: p,
        embed: e,
    } = shape;
    let grid = match (height.checked_div(p), width.checked_div(p)) {
        (Some(gh), Some(gw)) => Some((gh, gw)),
        _ => None,
    };
    let patches = grid.and_then(|(gh, gw)| gh.checked_mul(gw));
    let patch_len = product(&[c, p, p]);
    let image = int8s_for(&mut input, product(&[c, height, width]));
    let weight = int8s_for(&mut input, patch_len.and_then(|l| l.checked_mul(e)));
    let offsets: Vec<i32> = (0..input.len(patches.and_then(|n| n.checked_mul(e))))
        .map(|_| int32(&mut input))
        .collect();
    let mults = multipliers(&mut input, e);
    let cls = int8s_for(&mut input, Some(e));
    let with_cls = input.bool();
    let first = usize::from(with_cls);
    let tokens_len = input.len(patches.and_then(|n| n.checked_add(first)?.checked_mul(e)));
    let scratch_len = input.len(patch_len.map(|l| l.min(4096)));

    let mut exp = Expected::default();
    exp.check([c, height, width, p, e].contains(&0), Error::ZeroDimension);
    exp.check(
        grid.is_some_and(|(gh, gw)| gh == 0 || gw == 0),
        Error::ZeroDimension,
    );
    match patch_len {
        None => exp.fail(Error::ShapeOverflow),
        Some(l) => exp.check(l > MAX_DENSE_IN, Error::InvalidParameter),
    }
    check_len(&mut exp, image.len(), product(&[c, height, width]));
    check_len(
        &mut exp,
        weight.len(),
        patch_len.and_then(|l| l.checked_mul(e)),
    );
    check_len(
        &mut exp,
        offsets.len(),
        patches.and_then(|n| n.checked_mul(e)),
    );
    if mults.len() != 1 && mults.len() != e {
        exp.fail(Error::LengthMismatch {
            expected: 0,
            found: 0,
        });
    }
    if with_cls {
        check_len(&mut exp, cls.len(), Some(e));
    }
    check_len(
        &mut exp,
        tokens_len,
        patches.and_then(|n| n.checked_add(first)?.checked_mul(e)),
    );
    exp.check(
        patch_len.is_some_and(|l| scratch_len < l),
        Error::ScratchTooSmall {
            needed: 0,
            found: 0,
        },
    );
    let params = Int8PatchEmbed {
        weight: &weight,
        offsets: &offsets,
        multipliers: &mults,
        cls: with_cls.then_some(&cls[..]),
    };
    let mut tokens = vec![UNTOUCHED; tokens_len];
    let mut scratch = vec![0i8; scratch_len];
    let result = int8_patch_embed(&image, &params, &mut tokens, shape, &mut scratch);
    debug("int8_patch_embed", &result);
    if !exp.assert(&result, "int8_patch_embed") {
        assert!(
            tokens.iter().all(|&v| v == UNTOUCHED),
            "int8_patch_embed wrote tokens on Err"
        );
        return;
    }
    // Reference: every size is small here (the call succeeded on real slices).
    let (gh, gw) = grid.expect("grid of a valid shape");
    let pl = c * p * p;
    let mut peak = 0i64;
    if with_cls {
        assert_eq!(&tokens[..e], &cls[..], "int8_patch_embed: class token row");
        peak = cls.iter().map(|&v| (v as i64).abs()).max().unwrap_or(0);
    }
    for gy in 0..gh {
        for gx in 0..gw {
            let index = gy * gw + gx;
            for o in 0..e {
                let mut dot = 0i64;
                for ch in 0..c {
                    for dy in 0..p {
                        for dx in 0..p {
                            let pixel = image[(ch * height + gy * p + dy) * width + gx * p + dx];
                            let w = weight[o * pl + (ch * p + dy) * p + dx];
                            dot += pixel as i64 * w as i64;
                        }
                    }
                }
                let sum = dot + offsets[index * e + o] as i64;
                let Ok(sum) = i32::try_from(sum) else {
                    continue; // past i32: the accumulator's saturation, not documented
                };
                let m = if mults.len() == 1 { mults[0] } else { mults[o] };
                let v = m.mul_round(sum);
                peak = peak.max(v.abs());
                let want = v.clamp(-127, 127) as i8;
                let got = tokens[(first + index) * e + o];
                assert_eq!(got, want, "int8_patch_embed token {index} channel {o}");
            }
        }
    }
    let got_peak = result.expect("Ok");
    // (An accumulator past i32 was skipped above, so only a lower bound then.)
    assert!(
        got_peak >= peak,
        "int8_patch_embed peak {got_peak} < {peak}"
    );
}

/// With `FUZZ_DEBUG` set, prints which call ran and whether it passed validation (to see
/// how often a corpus gets past the checks).
fn debug<T: core::fmt::Debug>(what: &str, result: &Result<T, Error>) {
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        eprintln!("FUZZ {what} {}", if result.is_ok() { "Ok" } else { "Err" });
    }
}
