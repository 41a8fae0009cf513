//! microattn `sdpa` against candle on the shapes, single thread, one criterion run:
//! candle-nn's composition `softmax(q·kᵀ·scale + mask)·v` (two `matmul`s and
//! `softmax_last_dim`) and candle-nn's CPU flash attention (`attention::flash_attn`).
//! Ends with a markdown table (GFLOP/s = `4·H·Lq·Lk·d` per call / time, best sample; the
//! ratios microattn / candle) and each candle output's largest difference from microattn's.
//!
//! candle threads through rayon and reads `RAYON_NUM_THREADS`; `main` sets it to 1 unless it is
//! already set, before any candle call.

use candle_core::{DType, Device, Tensor};
use candle_nn::attention::{flash_attn, AttnMask};
use criterion::{BenchmarkId, Criterion, Throughput};
use microattn::attention::{sdpa, AttentionShape, SdpaParams};
use microattn::mask::{Mask, MaskTerm};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Dense,
    Causal,
    /// One query at the last position: sees every key.
    Decode,
}

/// `(name, heads, lq, lk, d, kind)`, as in `benches/attention.rs`.
const CASES: &[(&str, usize, usize, usize, usize, Kind)] = &[
    ("1x128x128x64", 1, 128, 128, 64, Kind::Dense),
    ("8x128x128x64", 8, 128, 128, 64, Kind::Dense),
    ("1x1024x1024x64", 1, 1024, 1024, 64, Kind::Dense),
    ("1x1024x1024x64 causal", 1, 1024, 1024, 64, Kind::Causal),
    ("8x1x512x64 decode", 8, 1, 512, 64, Kind::Decode),
    ("1x64x64x16", 1, 64, 64, 16, Kind::Dense),
];

const CAUSAL: [MaskTerm<'static>; 1] = [MaskTerm::Causal];

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
static DIFFS: Mutex<BTreeMap<String, f32>> = Mutex::new(BTreeMap::new());

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

fn best(key: &str) -> Option<f64> {
    let samples = SAMPLES.lock().unwrap_or_else(|e| e.into_inner());
    samples.get(key)?.iter().copied().reduce(f64::min)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// candle's composition: `softmax(q·kᵀ·scale + mask)·v` on `[1, H, L, d]` tensors.
fn composition(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    mask: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let logits = (q.matmul(&k.t()?)? * scale)?;
    let logits = match mask {
        Some(m) => logits.broadcast_add(m)?,
        None => logits,
    };
    candle_nn::ops::softmax_last_dim(&logits)?.matmul(v)
}

fn bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    let mut group = c.benchmark_group("peer");
    for &(name, heads, lq, lk, d, kind) in CASES {
        let shape = AttentionShape::multi_head(heads, heads, lq, lk, d, d);
        let (ql, kl, vl, ol) = shape.lengths().expect("valid shape");
        let (q, k, v) = (inputs(ql, 1), inputs(kl, 2), inputs(vl, 3));
        let mask = match kind {
            Kind::Dense => Mask::NONE,
            Kind::Causal => Mask::new(&CAUSAL),
            Kind::Decode => Mask::new(&CAUSAL).with_offset(lk - lq),
        };
        let params = SdpaParams {
            mask,
            ..Default::default()
        };
        let scale = 1.0 / (d as f64).sqrt();
        group.throughput(Throughput::Elements((4 * heads * lq * lk * d) as u64));
        if lq * lk >= 1 << 20 {
            group.sample_size(10);
        }

        let mut out = vec![0.0f32; ol];
        sdpa(&q, &k, &v, &mut out, shape, &params).expect("valid call");
        let reference = out.clone();
        let key = format!("microattn {name}");
        group.bench_function(BenchmarkId::new("microattn", name), |b| {
            timed(b, &key, || {
                sdpa(black_box(&q), &k, &v, &mut out, shape, &params).expect("valid call");
                black_box(&out);
            })
        });

        // [1, H, L, d] head-major, as microattn's layout.
        let qt = Tensor::from_slice(&q, (1, heads, lq, d), &dev).expect("tensor");
        let kt = Tensor::from_slice(&k, (1, heads, lk, d), &dev).expect("tensor");
        let vt = Tensor::from_slice(&v, (1, heads, lk, d), &dev).expect("tensor");
        let causal_mask = (kind == Kind::Causal).then(|| {
            let m: Vec<f32> = (0..lq * lk)
                .map(|x| {
                    if x % lk <= x / lk {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
                .collect();
            Tensor::from_slice(&m, (lq, lk), &dev).expect("tensor")
        });
        let check = |t: Tensor| -> f32 {
            let got: Vec<f32> = t
                .to_dtype(DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1())
                .expect("candle output");
            max_diff(&got, &reference)
        };
        let diff = check(
            composition(&qt, &kt, &vt, scale, causal_mask.as_ref()).expect("candle composition"),
        );
        DIFFS
            .lock()
            .unwrap()
            .insert(format!("composition {name}"), diff);
        let key = format!("composition {name}");
        group.bench_function(BenchmarkId::new("candle-composition", name), |b| {
            timed(b, &key, || {
                black_box(
                    composition(&qt, &kt, &vt, scale, causal_mask.as_ref())
                        .expect("candle composition"),
                );
            })
        });

        // Flash attention takes [B, S, H, d] and returns [B, H, S, d].
        let to_bshd = |t: &Tensor| {
            t.transpose(1, 2)
                .and_then(|t| t.contiguous())
                .expect("tensor")
        };
        let (qf, kf, vf) = (to_bshd(&qt), to_bshd(&kt), to_bshd(&vt));
        let attn_mask = || match kind {
            Kind::Causal => AttnMask::causal(),
            _ => AttnMask::None,
        };
        match flash_attn::<f32>(&qf, &kf, &vf, scale as f32, attn_mask(), None, None) {
            Ok(o) => {
                let o = if o.dims()[1] == heads {
                    o
                } else {
                    o.transpose(1, 2).expect("transpose")
                };
                let diff = check(o.contiguous().expect("contiguous"));
                DIFFS.lock().unwrap().insert(format!("flash {name}"), diff);
                let key = format!("flash {name}");
                group.bench_function(BenchmarkId::new("candle-flash", name), |b| {
                    timed(b, &key, || {
                        black_box(
                            flash_attn::<f32>(&qf, &kf, &vf, scale as f32, attn_mask(), None, None)
                                .expect("candle flash attention"),
                        );
                    })
                });
            }
            Err(e) => eprintln!("{name}: candle flash attention: {e}"),
        }
    }
    group.finish();
}

fn main() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        // Before any thread exists: single-threaded like microattn.
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(10)
        .configure_from_args();
    bench(&mut c);
    c.final_summary();
    println!("\n## Peer comparison: candle (single thread)\n");
    println!(
        "microattn backend `{}`; candle 0.11 (RAYON_NUM_THREADS={}). GFLOP/s = 4·H·Lq·Lk·d per \
         call over the best sample; max |diff| = largest difference of candle's output from \
         microattn's.\n",
        microattn::arch::backend().name(),
        std::env::var("RAYON_NUM_THREADS").unwrap_or_default()
    );
    println!(
        "| shape | microattn GFLOP/s | candle matmul→softmax→matmul GFLOP/s | candle flash_attn \
         GFLOP/s | microattn × composition | microattn × flash | max abs diff (comp. / flash) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &(name, heads, lq, lk, d, _) in CASES {
        let flops = (4 * heads * lq * lk * d) as f64;
        let rate = |t: Option<f64>| t.map(|t| flops / t / 1e9);
        let fmt = |r: Option<f64>| r.map_or("–".to_string(), |r| format!("{r:.1}"));
        let ours = rate(best(&format!("microattn {name}")));
        let comp = rate(best(&format!("composition {name}")));
        let flash = rate(best(&format!("flash {name}")));
        let ratio = |x: Option<f64>| match (ours, x) {
            (Some(a), Some(b)) => format!("{:.1}×", a / b),
            _ => "–".into(),
        };
        let diffs = DIFFS.lock().unwrap();
        let diff = |k: &str| diffs.get(k).map_or("–".into(), |d| format!("{d:.1e}"));
        println!(
            "| {name} | {} | {} | {} | {} | {} | {} / {} |",
            fmt(ours),
            fmt(comp),
            fmt(flash),
            ratio(comp),
            ratio(flash),
            diff(&format!("composition {name}")),
            diff(&format!("flash {name}")),
        );
    }
}
