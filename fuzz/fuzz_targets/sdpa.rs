//! `sdpa` (f32): any shape, mask, score, bias, scale and values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microattn::attention::{sdpa, SdpaParams};
use microattn::mask::Mask;
use microattn_fuzz::*;

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let dims = Dims::generate(&mut input);
    let lens = dims.lengths().map(|n| input.len(n));
    let spec = SdpaSpec::generate(&mut input, dims.heads);
    let (q, k, v) = (
        input.values(lens[0]),
        input.values(lens[1]),
        input.values(lens[2]),
    );
    let mut out = vec![f32::NAN; lens[3]];

    let mut exp = Expected::default();
    dims.expect(&mut exp, lens);
    spec.expect(&mut exp, dims.heads, dims.d);

    let terms = spec.mask.terms();
    let params = SdpaParams {
        scale: spec.scale,
        score: spec.score,
        mask: Mask::new(&terms).with_signed_offset(spec.mask.offset),
        bias: spec.bias.bias(),
    };
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        // Decoded case, for reading a crash: FUZZ_DEBUG=1 cargo fuzz run sdpa <file>.
        eprintln!("{dims:?}\n{params:?}\nq {q:?}\nk {k:?}\nv {v:?}");
    }
    let result = sdpa(&q, &k, &v, &mut out, dims.shape(), &params);
    if !exp.assert(&result, "sdpa") {
        assert!(out.iter().all(|x| x.is_nan()), "sdpa wrote output on Err");
        return;
    }
    if !(finite(&q) && finite(&k) && finite(&v) && spec.bias.finite()) {
        return; // only "no panic" is promised
    }
    if !sdpa_output_must_be_finite(dims.lk, max_abs(&v)) {
        return;
    }
    assert!(
        finite(&out),
        "sdpa: non-finite output for finite inputs: {out:?}"
    );
    let wide = |x: &[f32]| x.iter().map(|&a| a as f64).collect::<Vec<_>>();
    let rows = sdpa_reference(dims, &spec, &wide(&q), &wide(&k), &wide(&v));
    for (n, (row, r)) in out.chunks_exact(dims.dv).zip(&rows).enumerate() {
        assert_row(row, r, 0.0, &format!("sdpa row {n}"));
    }
}
