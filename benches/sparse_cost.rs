//! The cost of a sparse mask is proportional to its allowed keys.
//!
//! Single-head f32 self-attention with d = 64 over 4096 tokens: a causal sliding window of
//! 32 keys against dense attention (no mask). The window visits 32/4096 of the dense keys, so
//! it should cost about that fraction; dense over 1024 tokens (1/16 of the pairs) shows the
//! dense cost scaling with Lq·Lk.
//!
//! `cargo bench --bench sparse_cost -- --warm-up-time 1 --measurement-time 3`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use microattn::attention::{sdpa, visited_keys, AttentionShape, SdpaParams};
use microattn::mask::{Mask, MaskTerm};
use std::hint::black_box;

const D: usize = 64;
const WINDOW: usize = 32;

/// Deterministic inputs in [-1, 1).
fn inputs(n: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).max(1);
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("sdpa_f32_d64");
    // Dense 4096² takes about a second per call: ten samples of equal iteration counts are
    // plenty (the default linear sampling would run 55 calls).
    group.sample_size(10).sampling_mode(SamplingMode::Flat);
    // The window keeps the last 32 keys up to and including the query's own position.
    let window = [MaskTerm::Sliding {
        left: WINDOW - 1,
        right: 0,
    }];
    for (name, len, terms) in [
        ("causal_window_32", 4096, &window[..]),
        ("dense", 4096, &[][..]),
        ("dense", 1024, &[][..]),
    ] {
        let shape = AttentionShape::single(len, len, D, D);
        let (q, k, v) = (inputs(len * D, 1), inputs(len * D, 2), inputs(len * D, 3));
        let mut out = vec![0.0f32; len * D];
        let params = SdpaParams {
            mask: Mask::new(terms),
            ..Default::default()
        };
        let keys = visited_keys(shape, &params.mask).expect("valid shape");
        eprintln!("{name}/{len}: {keys} keys visited");
        group.bench_with_input(BenchmarkId::new(name, len), &len, |b, _| {
            b.iter(|| {
                sdpa(
                    black_box(&q),
                    black_box(&k),
                    black_box(&v),
                    &mut out,
                    shape,
                    &params,
                )
                .expect("valid call");
                black_box(&out);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
