//! Heads in parallel (`par::sdpa_par`, feature `rayon`) against the serial `sdpa`, at
//! (H, Lq, Lk, d) = (8,128,128,64) and the decode step (8,1,512,64), on rayon pools of 1 and
//! 2 threads; ends with a markdown table of µs per call and the speedup over serial.
//!
//! `cargo bench --features rayon --bench parallel -- --warm-up-time 0.3 --measurement-time 1`
//! (`scripts/bench-host` runs it after the single-thread benchmarks).

use criterion::{BenchmarkId, Criterion, Throughput};
use microattn::attention::{sdpa, AttentionShape, SdpaParams};
use microattn::mask::{Mask, MaskTerm};
use microattn::par::sdpa_par;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const CAUSAL: [MaskTerm<'static>; 1] = [MaskTerm::Causal];

/// `(name, heads, lq, lk, d)`; the decode step is the last query position, causal.
const CASES: &[(&str, usize, usize, usize, usize)] = &[
    ("8x128x128x64", 8, 128, 128, 64),
    ("8x1x512x64 decode", 8, 1, 512, 64),
];

const THREADS: &[usize] = &[1, 2];

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

static SAMPLES: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());

fn timed(b: &mut criterion::Bencher<'_>, key: &str, mut f: impl FnMut()) {
    b.iter_custom(|iters| {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        let elapsed = start.elapsed();
        let mut samples = SAMPLES.lock().unwrap_or_else(|e| e.into_inner());
        samples
            .entry(key.to_string())
            .or_default()
            .push(elapsed.as_secs_f64() / iters.max(1) as f64);
        elapsed
    });
}

/// (best, median) seconds per call.
fn stats(key: &str) -> Option<(f64, f64)> {
    let samples = SAMPLES.lock().unwrap_or_else(|e| e.into_inner());
    let mut v = samples.get(key)?.clone();
    v.sort_by(f64::total_cmp);
    Some((v[0], v[v.len() / 2]))
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("heads_parallel");
    for &(name, heads, lq, lk, d) in CASES {
        let shape = AttentionShape::multi_head(heads, heads, lq, lk, d, d);
        let (ql, kl, vl, ol) = shape.lengths().expect("valid shape");
        let (q, k, v) = (inputs(ql, 1), inputs(kl, 2), inputs(vl, 3));
        let mask = if lq == 1 {
            Mask::new(&CAUSAL).with_offset(lk - 1)
        } else {
            Mask::NONE
        };
        let params = SdpaParams {
            mask,
            ..Default::default()
        };
        let mut out = vec![0.0f32; ol];
        group.throughput(Throughput::Elements((4 * heads * lq * lk * d) as u64));
        let key = format!("serial {name}");
        group.bench_function(BenchmarkId::new("serial", name), |b| {
            timed(b, &key, || {
                sdpa(black_box(&q), &k, &v, &mut out, shape, &params).expect("valid call");
                black_box(&out);
            })
        });
        for &threads in THREADS {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("thread pool");
            let key = format!("par{threads} {name}");
            group.bench_function(BenchmarkId::new(format!("par/{threads}"), name), |b| {
                pool.install(|| {
                    timed(b, &key, || {
                        sdpa_par(black_box(&q), &k, &v, &mut out, shape, &params)
                            .expect("valid call");
                        black_box(&out);
                    })
                })
            });
        }
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(10)
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
    println!("\n## Heads in parallel (sdpa_par)\n");
    println!(
        "backend `{}`; µs per call, best sample (median in parentheses); speedup of the best \
         over the serial `sdpa`.\n",
        microattn::arch::backend().name()
    );
    print!("| shape | serial µs |");
    for t in THREADS {
        print!(
            " {t} thread{} µs | × serial |",
            if *t == 1 { "" } else { "s" }
        );
    }
    println!();
    print!("|---|---|");
    for _ in THREADS {
        print!("---|---|");
    }
    println!();
    for &(name, ..) in CASES {
        let Some((serial, serial_median)) = stats(&format!("serial {name}")) else {
            continue;
        };
        print!(
            "| {name} | {:.1} ({:.1}) |",
            serial * 1e6,
            serial_median * 1e6
        );
        for t in THREADS {
            match stats(&format!("par{t} {name}")) {
                Some((best, median)) => print!(
                    " {:.1} ({:.1}) | {:.2}× |",
                    best * 1e6,
                    median * 1e6,
                    serial / best
                ),
                None => print!(" – | – |"),
            }
        }
        println!();
    }
}
