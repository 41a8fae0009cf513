//! `int8_sdpa` and its prepare step (`Int8SdpaParams::new`, `Int8Bias::from_bias`): shapes,
//! quantization scales (zero, negative, NaN, subnormal, huge), masks, biases, scratch and
//! every int8 value including -128. Single-head dot-score runs also go through the packed KV
//! cache (`Int8PackedKv`, `int8_sdpa_packed_kv`), which must give the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microattn::attention::int8::{
    int8_packed_kv_words, int8_sdpa, int8_sdpa_packed_kv, Int8Bias, Int8PackedKv, Int8Scales,
    Int8SdpaParams,
};
use microattn::attention::Score;
use microattn::mask::Mask;
use microattn::Error;
use microattn_fuzz::*;

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let dims = Dims::generate(&mut input);
    let lens = dims.lengths().map(|n| input.len(n));
    let spec = SdpaSpec::generate(&mut input, dims.heads);
    let scale = |input: &mut Input<'_>| -> f32 {
        if input.wild() && input.byte() < 64 {
            input.value()
        } else {
            (input.byte() as f32 + 1.0) / 512.0
        }
    };
    let scales = Int8Scales {
        q: scale(&mut input),
        k: scale(&mut input),
        v: scale(&mut input),
        out: scale(&mut input),
    };
    let mut int8s = |n: usize| -> Vec<i8> { (0..n).map(|_| input.byte() as i8).collect() };
    let (q, k, v) = (int8s(lens[0]), int8s(lens[1]), int8s(lens[2]));
    let scratch_len = input.len(Some(dims.dv));

    // Prepare the bias.
    let bias = spec.bias.bias();
    let (storage_len, threshold_count) = (
        Int8Bias::storage_len(&bias),
        Int8Bias::t5_threshold_count(&bias),
    );
    let mut storage = vec![0i32; storage_len.min(4096)];
    let mut thresholds = vec![0u32; threshold_count.min(4096)];
    let mut exp = Expected::default();
    if storage_len > 4096 || threshold_count > 4096 {
        // Huge bucket counts: the buffers here are capped.
        exp.fail(Error::ScratchTooSmall {
            needed: 0,
            found: 0,
        });
    }
    if !spec.bias.is_valid(dims.heads) {
        exp.fail(Error::InvalidBias);
        exp.fail(Error::ShapeOverflow);
    }
    let values: &[f32] = match &spec.bias {
        BiasSpec::Alibi(s) => s,
        BiasSpec::T5 { table, .. } => table,
        BiasSpec::None => &[],
    };
    // NaN or |b| >= 1488 (documented, approximate): no integer logit.
    if values.iter().any(|x| x.is_nan() || x.abs() >= 1500.0) {
        exp.fail(Error::InvalidBias);
    } else if values.iter().any(|x| x.abs() >= 1400.0) {
        exp.allow(Error::InvalidBias);
    }
    if std::env::var_os("FUZZ_DEBUG").is_some() {
        eprintln!(
            "{dims:?}\n{bias:?} storage {} thresholds {}",
            storage.len(),
            thresholds.len()
        );
    }
    let int8_bias = Int8Bias::from_bias(&bias, dims.heads, &mut storage, &mut thresholds);
    exp.assert(&int8_bias, "Int8Bias::from_bias");
    let Ok(int8_bias) = int8_bias else { return };

    // Prepare the multipliers.
    let logit_scale = spec.resolved_scale(dims.d);
    let mut exp = Expected::default();
    let positive = |s: f32| s.is_finite() && s > 0.0;
    exp.check(
        ![scales.q, scales.k, scales.v, scales.out, logit_scale]
            .into_iter()
            .all(positive),
        Error::InvalidScale,
    );
    let terms = spec.mask.terms();
    let mask = Mask::new(&terms).with_signed_offset(spec.mask.offset);
    let params = Int8SdpaParams::new(scales, dims.d, spec.score, spec.scale, mask, int8_bias);
    if exp.ok() {
        // Documented: finite positive scales can still give multipliers out of range.
        assert!(
            matches!(params, Ok(_) | Err(Error::InvalidScale)),
            "Int8SdpaParams::new: {params:?}"
        );
    } else {
        exp.assert(&params, "Int8SdpaParams::new");
    }
    let Ok(params) = params else { return };

    // Run.
    let mut exp = Expected::default();
    dims.expect(&mut exp, lens);
    exp.check(!spec.mask.is_valid(), Error::InvalidMask);
    exp.check(
        scratch_len < dims.dv,
        Error::ScratchTooSmall {
            needed: dims.dv,
            found: scratch_len,
        },
    );
    let mut out = vec![99i8; lens[3]];
    let mut scratch = vec![0i64; scratch_len];
    let result = int8_sdpa(&q, &k, &v, &mut out, dims.shape(), &params, &mut scratch);
    if let Err(Error::InvalidScale) = result {
        // Documented: multipliers that could overflow for this d.
        assert!(
            out.iter().all(|&x| x == 99),
            "int8_sdpa wrote output on Err"
        );
        return;
    }
    if !exp.assert(&result, "int8_sdpa") {
        assert!(
            out.iter().all(|&x| x == 99),
            "int8_sdpa wrote output on Err"
        );
        return;
    }
    assert!(
        out.iter().all(|&x| x != -128),
        "int8_sdpa: output outside [-127, 127]"
    );

    // The same keys and values appended to a packed cache: the same bytes.
    let shape = dims.shape();
    let packable = shape.heads == 1 && shape.d % 4 == 0 && shape.dv % 4 == 0;
    if packable && spec.score == Score::Dot {
        let mut storage = vec![0u32; int8_packed_kv_words(shape.lk, shape.d, shape.dv)];
        let mut cache = Int8PackedKv::new(&mut storage, shape.lk, shape.d, shape.dv).unwrap();
        for (kr, vr) in k.chunks_exact(shape.d).zip(v.chunks_exact(shape.dv)) {
            cache.push(kr, vr).unwrap();
        }
        let mut packed_out = vec![99i8; lens[3]];
        int8_sdpa_packed_kv(&q, &cache, &mut packed_out, &params, &mut scratch).unwrap();
        assert_eq!(packed_out, out, "int8_sdpa_packed_kv differs from int8_sdpa");
    }

    // Fully masked rows are zero; with tame parameters the output is the f64 reference on
    // the dequantized inputs, requantized, within a few steps.
    let deq = |x: &[i8], s: f32| x.iter().map(|&a| a as f64 * s as f64).collect::<Vec<f64>>();
    let rows = sdpa_reference(
        dims,
        &spec,
        &deq(&q, scales.q),
        &deq(&k, scales.k),
        &deq(&v, scales.v),
    );
    let tame = !input.wild() && spec.mask.offset.unsigned_abs() < 1 << 20;
    for (n, (row, r)) in out.chunks_exact(dims.dv).zip(&rows).enumerate() {
        if !r.any {
            assert!(
                row.iter().all(|&x| x == 0),
                "int8_sdpa row {n}: fully masked row {row:?}"
            );
            continue;
        }
        if !tame || spec.score == Score::Cosine {
            continue;
        }
        // Logits carry 20 fractional bits and multipliers 31; Q16 weights add 2^-16 each.
        let vmax = r.lo.iter().chain(&r.hi).fold(0.0f64, |m, x| m.max(x.abs()));
        let out_scale = scales.out as f64;
        for (c, &got) in row.iter().enumerate() {
            let want = (r.out[c] / out_scale).clamp(-127.0, 127.0);
            let tol = 1.0 + (r.tol + (dims.lk as f64 + 4.0) * vmax / 16384.0) / out_scale;
            assert!(
                (got as f64 - want).abs() <= tol,
                "int8_sdpa row {n}[{c}]: got {got}, reference {want:.3}, tolerance {tol:.3}"
            );
        }
    }
}
