//! `luong_attention` (f32) and `luong_attention_typed` (f16) with the dot, general and
//! concat scores: shapes, weights, mask, scratch and values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microattn::attention::{
    luong_attention, luong_attention_typed, LuongParams, LuongScore, LuongShape,
};
use microattn::mask::Mask;
use microattn::{f16, Error};
use microattn_fuzz::*;

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let typed = input.bool();
    let kind = input.byte() % 3;
    let (l, d, dv, a) = (input.dim(36), input.dim(5), input.dim(3), input.dim(4));
    let w_expected = match kind {
        0 => Some(0),
        1 => product(&[d, d]),
        _ => product(&[a, 2, d]),
    };
    let v_expected = if kind == 2 { Some(a) } else { Some(0) };
    let expected = [
        Some(d),
        product(&[l, d]),
        product(&[l, dv]),
        w_expected,
        v_expected,
        Some(dv),
        Some(l),
    ];
    let lens = expected.map(|n| input.len(n));
    let pre = match kind {
        0 => 0,
        1 => d,
        _ => lens[4],
    };
    let needed = if typed {
        pre.saturating_add(l).saturating_add(dv)
    } else {
        pre
    };
    let scratch_len = input.len(Some(needed));
    let mask = MaskSpec::generate(&mut input);
    let mut t = [0, 1, 2, 3, 4].map(|i| input.values(lens[i]));
    if typed {
        for x in t.iter_mut().flatten() {
            *x = f16::from_f32(*x).to_f32();
        }
    }
    let [query, keys, values, w, v] = t;

    let mut exp = Expected::default();
    exp.check([l, d, dv].contains(&0), Error::ZeroDimension);
    exp.check(kind == 2 && v.is_empty(), Error::ZeroDimension);
    for (i, (&found, &want)) in lens.iter().zip(&expected).enumerate() {
        match (kind, i) {
            (0, 3 | 4) | (1, 4) => {} // weights the score does not take
            (2, 3) => check_len(&mut exp, found, product(&[v.len(), 2, d])),
            (2, 4) => {} // any length: it is the hidden size
            _ => check_len(&mut exp, found, want),
        }
    }
    exp.check(!mask.is_valid(), Error::InvalidMask);
    exp.check(
        scratch_len < needed,
        Error::ScratchTooSmall {
            needed,
            found: scratch_len,
        },
    );

    let terms = mask.terms();
    let m = Mask::new(&terms).with_signed_offset(mask.offset);
    let shape = LuongShape { l, d, dv };
    let mut scratch = vec![0.0f32; scratch_len];
    let (context, weights, result) = if typed {
        let h = |x: &[f32]| x.iter().map(|&a| f16::from_f32(a)).collect::<Vec<f16>>();
        let (hw, hv) = (h(&w), h(&v));
        let score = match kind {
            0 => LuongScore::Dot,
            1 => LuongScore::General { w: &hw },
            _ => LuongScore::Concat { w: &hw, v: &hv },
        };
        let params = LuongParams { score, mask: m };
        let mut c = vec![f16::NAN; lens[5]];
        let mut wt = vec![f16::NAN; lens[6]];
        let r = luong_attention_typed(
            &h(&query),
            &h(&keys),
            &h(&values),
            shape,
            &params,
            &mut c,
            &mut wt,
            &mut scratch,
        );
        let f = |x: &[f16]| x.iter().map(|a| a.to_f32()).collect::<Vec<f32>>();
        (f(&c), f(&wt), r)
    } else {
        let score = match kind {
            0 => LuongScore::Dot,
            1 => LuongScore::General { w: &w },
            _ => LuongScore::Concat { w: &w, v: &v },
        };
        let params = LuongParams { score, mask: m };
        let mut c = vec![f32::NAN; lens[5]];
        let mut wt = vec![f32::NAN; lens[6]];
        let r = luong_attention(
            &query,
            &keys,
            &values,
            shape,
            &params,
            &mut c,
            &mut wt,
            &mut scratch,
        );
        (c, wt, r)
    };
    if !exp.assert(&result, "luong_attention") {
        assert!(
            context.iter().chain(&weights).all(|x| x.is_nan()),
            "luong_attention wrote output on Err"
        );
        return;
    }
    let used_w: &[f32] = if kind == 0 { &[] } else { &w };
    let used_v: &[f32] = if kind == 2 { &v } else { &[] };
    if ![&query[..], &keys, &values, used_w, used_v]
        .iter()
        .all(|x| finite(x))
    {
        return;
    }
    if typed && max_abs(&values) > 60000.0 {
        return;
    }
    let scores: Vec<Option<(f64, f64)>> = (0..l)
        .map(|j| {
            let k = &keys[j * d..][..d];
            mask.allows(0, j).then(|| match kind {
                0 => {
                    let s: f64 = query
                        .iter()
                        .zip(k)
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum();
                    let m: f64 = query
                        .iter()
                        .zip(k)
                        .map(|(&a, &b)| (a as f64 * b as f64).abs())
                        .sum();
                    let err = if m > 1e37 {
                        f64::INFINITY
                    } else {
                        (d as f64 + 4.0) * 2.0 * EPS * m + 1e-44
                    };
                    (s, err)
                }
                1 => {
                    // u = Wᵀ q first, then u · k: both sums round.
                    let (mut s, mut m) = (0.0f64, 0.0f64);
                    for r in 0..d {
                        for c in 0..d {
                            let t = query[r] as f64 * w[r * d + c] as f64 * k[c] as f64;
                            s += t;
                            m += t.abs();
                        }
                    }
                    let err = if m > 1e37 {
                        f64::INFINITY
                    } else {
                        (2.0 * d as f64 + 4.0) * 2.0 * EPS * m + 1e-44
                    };
                    (s, err)
                }
                _ => {
                    let rows = w.chunks_exact(2 * d).map(|row| row.split_at(d));
                    tanh_score_f64(&v, rows, &query, k)
                }
            })
        })
        .collect();
    let rounding = if typed { 1.0 / 2048.0 } else { 0.0 };
    check_single_query(&weights, &context, &values, &scores, rounding, "luong");
}
