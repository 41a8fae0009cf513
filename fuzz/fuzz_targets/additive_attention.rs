//! `additive_attention` (f32) and `additive_attention_typed` (f16): shapes, weights, mask,
//! scratch and values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microattn::attention::{
    additive_attention, additive_attention_typed, AdditiveParams, AdditiveShape,
};
use microattn::mask::Mask;
use microattn::{f16, Error};
use microattn_fuzz::*;

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let typed = input.bool();
    let (l, dq, dk, dv, a) = (
        input.dim(36),
        input.dim(4),
        input.dim(4),
        input.dim(3),
        input.dim(4),
    );
    let expected = [
        Some(dq),
        product(&[l, dk]),
        product(&[l, dv]),
        product(&[a, dq]),
        product(&[a, dk]),
        Some(a),
        Some(dv),
        Some(l),
    ];
    let lens = expected.map(|n| input.len(n));
    let needed = if typed {
        a.saturating_add(l).saturating_add(dv)
    } else {
        a
    };
    let scratch_len = input.len(Some(needed));
    let mask = MaskSpec::generate(&mut input);
    let mut t = [0, 1, 2, 3, 4, 5].map(|i| input.values(lens[i]));
    if typed {
        // The kernel sees f16 values: round them first, so the checks see the same.
        for x in t.iter_mut().flatten() {
            *x = f16::from_f32(*x).to_f32();
        }
    }
    let [query, keys, values, wq, wk, v] = t;

    let mut exp = Expected::default();
    exp.check([l, dq, dk, dv, a].contains(&0), Error::ZeroDimension);
    for (&found, &want) in lens.iter().zip(&expected) {
        check_len(&mut exp, found, want);
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
    let mut scratch = vec![0.0f32; scratch_len];
    let (context, weights, result) = if typed {
        let h = |x: &[f32]| x.iter().map(|&a| f16::from_f32(a)).collect::<Vec<f16>>();
        let (hwq, hwk, hv) = (h(&wq), h(&wk), h(&v));
        let params = AdditiveParams {
            w_query: &hwq,
            w_key: &hwk,
            v: &hv,
            mask: m,
        };
        let mut c = vec![f16::NAN; lens[6]];
        let mut w = vec![f16::NAN; lens[7]];
        let r = additive_attention_typed(
            &h(&query),
            &h(&keys),
            &h(&values),
            AdditiveShape { l, dq, dk, dv, a },
            &params,
            &mut c,
            &mut w,
            &mut scratch,
        );
        let f = |x: &[f16]| x.iter().map(|a| a.to_f32()).collect::<Vec<f32>>();
        (f(&c), f(&w), r)
    } else {
        let params = AdditiveParams {
            w_query: &wq,
            w_key: &wk,
            v: &v,
            mask: m,
        };
        let mut c = vec![f32::NAN; lens[6]];
        let mut w = vec![f32::NAN; lens[7]];
        let r = additive_attention(
            &query,
            &keys,
            &values,
            AdditiveShape { l, dq, dk, dv, a },
            &params,
            &mut c,
            &mut w,
            &mut scratch,
        );
        (c, w, r)
    };
    if !exp.assert(&result, "additive_attention") {
        assert!(
            context.iter().chain(&weights).all(|x| x.is_nan()),
            "additive_attention wrote output on Err"
        );
        return;
    }
    if ![&query, &keys, &values, &wq, &wk, &v]
        .iter()
        .all(|x| finite(x))
    {
        return;
    }
    if typed && max_abs(&values) > 60000.0 {
        return; // a context rounded to f16 could round past 65504
    }
    let scores: Vec<Option<(f64, f64)>> = (0..l)
        .map(|j| {
            mask.allows(0, j).then(|| {
                let rows = wq.chunks_exact(dq).zip(wk.chunks_exact(dk));
                tanh_score_f64(&v, rows, &query, &keys[j * dk..][..dk])
            })
        })
        .collect();
    let rounding = if typed { 1.0 / 2048.0 } else { 0.0 };
    check_single_query(&weights, &context, &values, &scores, rounding, "additive");
}
