//! `sdpa_typed` with f16, bf16 and f32 storage: shapes, parameters, scratch and values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microattn::attention::{sdpa_typed, SdpaParams};
use microattn::mask::Mask;
use microattn::{bf16, f16, Element, Error};
use microattn_fuzz::*;

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    match input.byte() % 3 {
        0 => run::<f16>(input, 1.0 / 2048.0),
        1 => run::<bf16>(input, 1.0 / 256.0),
        _ => run::<f32>(input, 0.0),
    }
});

/// `rounding`: relative rounding of one store to `E`.
fn run<E: Element>(mut input: Input<'_>, rounding: f64) {
    let dims = Dims::generate(&mut input);
    let lens = dims.lengths().map(|n| input.len(n));
    let spec = SdpaSpec::generate(&mut input, dims.heads);
    let mut elements = |n: usize| -> Vec<E> {
        input
            .values(n)
            .into_iter()
            .map(E::from_f32)
            .collect::<Vec<E>>()
    };
    let (q, k, v) = (elements(lens[0]), elements(lens[1]), elements(lens[2]));
    let scratch_len = input.len(Some(dims.dv));
    let mut scratch = vec![0.0f32; scratch_len];
    let sentinel = E::from_f32(12345.0);
    let mut out = vec![sentinel; lens[3]];

    let mut exp = Expected::default();
    dims.expect(&mut exp, lens);
    spec.expect(&mut exp, dims.heads, dims.d);
    exp.check(
        scratch_len < dims.dv,
        Error::ScratchTooSmall {
            needed: dims.dv,
            found: scratch_len,
        },
    );

    let terms = spec.mask.terms();
    let params = SdpaParams {
        scale: spec.scale,
        score: spec.score,
        mask: Mask::new(&terms).with_signed_offset(spec.mask.offset),
        bias: spec.bias.bias(),
    };
    let result = sdpa_typed(&q, &k, &v, &mut out, dims.shape(), &params, &mut scratch);
    if !exp.assert(&result, "sdpa_typed") {
        assert!(
            out.iter().all(|&x| x == sentinel),
            "sdpa_typed wrote output on Err"
        );
        return;
    }
    let wide = |x: &[E]| x.iter().map(|a| a.to_f32()).collect::<Vec<f32>>();
    let (q, k, v, out) = (wide(&q), wide(&k), wide(&v), wide(&out));
    if !(finite(&q) && finite(&k) && finite(&v) && spec.bias.finite()) {
        return;
    }
    // The f32 result rounded to E may leave E's range only if the values nearly do.
    if !sdpa_output_must_be_finite(dims.lk, max_abs(&v) / (1.0 - 2.0 * rounding).max(0.5)) {
        return;
    }
    if E::from_f32((max_abs(&v) * (1.0 + 4.0 * rounding)) as f32)
        .to_f32()
        .is_finite()
    {
        assert!(
            finite(&out),
            "sdpa_typed: non-finite output for finite inputs"
        );
    }
    let f64s = |x: &[f32]| x.iter().map(|&a| a as f64).collect::<Vec<_>>();
    let rows = sdpa_reference(dims, &spec, &f64s(&q), &f64s(&k), &f64s(&v));
    for (n, (row, r)) in out.chunks_exact(dims.dv).zip(&rows).enumerate() {
        if finite(row) {
            assert_row(row, r, rounding, &format!("sdpa_typed row {n}"));
        }
    }
}
