//! Host attention benchmarks: SDPA in f32 (every SIMD backend), f16 and bf16, a sliding
//! window, linear attention and multi-head attention, at the shapes (H, Lq, Lk, d).
//!
//! Besides criterion's own report, the run measures in the same process a naive reference
//! SDPA (plain loops, two-pass softmax), the core's FMA peak (independent FMA chains of the
//! best backend) and the read bandwidth for the decode shape's working set, and ends with a
//! markdown table of GFLOP/s (`4·H·Lq·Lk·d` per call; for masked calls also the work actually
//! done, `4·d·visited keys`), the ratios to peak and to the naive loop, and for the decode
//! shape the GB/s of K+V read. Single thread.
//!
//! `scripts/bench-host` runs it with short measurement times:
//! `cargo bench --features std --bench attention -- --warm-up-time 0.3 --measurement-time 1`

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use microattn::arch;
use microattn::attention::int8::{
    int8_sdpa, int8_sdpa_scratch_len, Int8Bias, Int8Scales, Int8SdpaParams,
};
use microattn::attention::{
    linear_attention, linear_attention_scratch_len, sdpa, sdpa_scratch_len, sdpa_typed,
    visited_keys, AttentionShape, LinearAttentionParams, SdpaParams,
};
use microattn::mask::{Mask, MaskTerm};
use microattn::mha::{mha, mha_scratch_len, MhaShape, MhaWeights};
use microattn::{bf16, f16, Element};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One benchmarked SDPA configuration.
#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    heads: usize,
    lq: usize,
    lk: usize,
    d: usize,
    mask: MaskKind,
}

#[derive(Clone, Copy, PartialEq)]
enum MaskKind {
    None,
    Causal,
    /// A decode step: the query at the last position, causal (sees every key).
    Decode,
    /// Causal sliding window of this many keys.
    Window(usize),
}

const CASES: &[Case] = &[
    Case {
        name: "1x128x128x64",
        heads: 1,
        lq: 128,
        lk: 128,
        d: 64,
        mask: MaskKind::None,
    },
    Case {
        name: "8x128x128x64",
        heads: 8,
        lq: 128,
        lk: 128,
        d: 64,
        mask: MaskKind::None,
    },
    Case {
        name: "1x1024x1024x64",
        heads: 1,
        lq: 1024,
        lk: 1024,
        d: 64,
        mask: MaskKind::None,
    },
    Case {
        name: "1x1024x1024x64 causal",
        heads: 1,
        lq: 1024,
        lk: 1024,
        d: 64,
        mask: MaskKind::Causal,
    },
    Case {
        name: "8x1x512x64 decode",
        heads: 8,
        lq: 1,
        lk: 512,
        d: 64,
        mask: MaskKind::Decode,
    },
    Case {
        name: "1x64x64x16",
        heads: 1,
        lq: 64,
        lk: 64,
        d: 16,
        mask: MaskKind::None,
    },
];

const WINDOW: Case = Case {
    name: "1x1024x1024x64 window128",
    heads: 1,
    lq: 1024,
    lk: 1024,
    d: 64,
    mask: MaskKind::Window(128),
};

const CAUSAL: [MaskTerm<'static>; 1] = [MaskTerm::Causal];
const SLIDING: [MaskTerm<'static>; 1] = [MaskTerm::Sliding {
    left: 127,
    right: 0,
}];

impl Case {
    fn shape(&self) -> AttentionShape {
        AttentionShape::multi_head(self.heads, self.heads, self.lq, self.lk, self.d, self.d)
    }
    fn mask(&self) -> Mask<'static> {
        match self.mask {
            MaskKind::None => Mask::NONE,
            MaskKind::Causal => Mask::new(&CAUSAL),
            MaskKind::Decode => Mask::new(&CAUSAL).with_offset(self.lk - self.lq),
            MaskKind::Window(_) => Mask::new(&SLIDING),
        }
    }
    /// `4·H·Lq·Lk·d`: the dense work of the shape.
    fn nominal_flops(&self) -> f64 {
        4.0 * (self.heads * self.lq * self.lk * self.d) as f64
    }
    /// `4·d` per key actually visited under the mask.
    fn done_flops(&self) -> f64 {
        let keys = visited_keys(self.shape(), &self.mask()).expect("valid shape");
        4.0 * (keys * self.d) as f64
    }
    /// Bytes of K and V read once.
    fn kv_bytes(&self, elem: usize) -> f64 {
        (2 * self.heads * self.lk * self.d * elem) as f64
    }
}

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

// ---------------------------------------------------------------------------------------------
// Timing: criterion drives the sampling; every sample's time per call is also kept here so
// the summary table is computed in this process (the median over samples).

static SAMPLES: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());

fn record(key: &str, seconds_per_call: f64) {
    let mut samples = SAMPLES.lock().unwrap_or_else(|e| e.into_inner());
    samples
        .entry(key.to_string())
        .or_default()
        .push(seconds_per_call);
}

/// Seconds per call of `key` at quantile `at` (0 = the best sample, 0.5 = the median).
fn quantile(key: &str, at: f64) -> Option<f64> {
    let samples = SAMPLES.lock().unwrap_or_else(|e| e.into_inner());
    let mut v = samples.get(key)?.clone();
    v.sort_by(f64::total_cmp);
    v.get(((v.len() - 1) as f64 * at) as usize).copied()
}

/// The best sample: other processes on the machine can only slow a sample down.
fn best(key: &str) -> Option<f64> {
    quantile(key, 0.0)
}

fn timed(b: &mut criterion::Bencher<'_>, key: &str, mut f: impl FnMut()) {
    b.iter_custom(|iters| {
        let start = Instant::now();
        for _ in 0..iters {
            f();
        }
        let elapsed = start.elapsed();
        record(key, elapsed.as_secs_f64() / iters.max(1) as f64);
        elapsed
    });
}

// ---------------------------------------------------------------------------------------------
// The naive reference: one row at a time, every key, a two-pass softmax, plain loops.

fn naive_sdpa(q: &[f32], k: &[f32], v: &[f32], out: &mut [f32], case: &Case, logits: &mut [f32]) {
    let (lq, lk, d) = (case.lq, case.lk, case.d);
    let scale = 1.0 / (d as f32).sqrt();
    let offset = match case.mask {
        MaskKind::Decode => lk - lq,
        _ => 0,
    };
    for h in 0..case.heads {
        let (qh, kh, vh) = (&q[h * lq * d..], &k[h * lk * d..], &v[h * lk * d..]);
        for i in 0..lq {
            let p = i + offset;
            let visible = |j: usize| match case.mask {
                MaskKind::None => true,
                MaskKind::Causal | MaskKind::Decode => j <= p,
                MaskKind::Window(w) => j <= p && j + w > p,
            };
            let q_row = &qh[i * d..(i + 1) * d];
            let mut max = f32::NEG_INFINITY;
            for j in 0..lk {
                let mut s = 0.0f32;
                for c in 0..d {
                    s += q_row[c] * kh[j * d + c];
                }
                logits[j] = if visible(j) {
                    s * scale
                } else {
                    f32::NEG_INFINITY
                };
                max = max.max(logits[j]);
            }
            let mut sum = 0.0f32;
            for l in logits[..lk].iter_mut() {
                *l = (*l - max).exp();
                sum += *l;
            }
            let out_row = &mut out[(h * lq + i) * d..][..d];
            out_row.fill(0.0);
            for j in 0..lk {
                let w = logits[j] / sum;
                for c in 0..d {
                    out_row[c] += w * vh[j * d + c];
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Benchmarks.

fn bench_sdpa(c: &mut Criterion) {
    let backends: Vec<arch::Backend> = arch::backends().filter(|b| b.name() != "scalar").collect();
    let selected = arch::backend();
    for case in CASES.iter().chain([&WINDOW]) {
        let shape = case.shape();
        let (ql, kl, vl, ol) = shape.lengths().expect("valid shape");
        let (q, k, v) = (inputs(ql, 1), inputs(kl, 2), inputs(vl, 3));
        let params = SdpaParams {
            mask: case.mask(),
            ..Default::default()
        };
        let mut group = c.benchmark_group("sdpa");
        group.throughput(Throughput::Elements(case.nominal_flops() as u64));
        if case.lq * case.lk >= 1 << 20 {
            group.sampling_mode(SamplingMode::Flat).sample_size(10);
        }
        // f32 with every SIMD backend (the best one last, so it stays selected).
        let mut out = vec![0.0f32; ol];
        let others = backends.iter().filter(|b| b.name() != selected.name());
        for be in others.chain([&selected]) {
            arch::select(be.name());
            let key = format!("f32 {} {}", be.name(), case.name);
            group.bench_function(
                BenchmarkId::new(format!("f32/{}", be.name()), case.name),
                |b| {
                    timed(b, &key, || {
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
                },
            );
        }
        arch::select(selected.name());
        if case.mask == MaskKind::Window(128) {
            group.finish();
            continue;
        }
        bench_typed::<f16>(&mut group, "f16", case, (&q, &k, &v), &params);
        bench_typed::<bf16>(&mut group, "bf16", case, (&q, &k, &v), &params);
        let mut logits = vec![0.0f32; case.lk];
        let key = format!("naive {}", case.name);
        group.sampling_mode(SamplingMode::Flat).sample_size(10);
        group.bench_function(BenchmarkId::new("f32/naive", case.name), |b| {
            timed(b, &key, || {
                naive_sdpa(
                    black_box(&q),
                    black_box(&k),
                    black_box(&v),
                    &mut out,
                    case,
                    &mut logits,
                );
                black_box(&out);
            })
        });
        group.finish();
    }
}

fn bench_typed<E: Element>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    ty: &str,
    case: &Case,
    (q, k, v): (&[f32], &[f32], &[f32]),
    params: &SdpaParams<'_>,
) {
    let shape = case.shape();
    let convert = |x: &[f32]| x.iter().map(|&y| E::from_f32(y)).collect::<Vec<E>>();
    let (q, k, v) = (convert(q), convert(k), convert(v));
    let mut out = vec![E::default(); shape.lengths().expect("valid shape").3];
    let mut scratch = vec![0.0f32; sdpa_scratch_len(shape)];
    let key = format!("{ty} {}", case.name);
    group.bench_function(BenchmarkId::new(ty, case.name), |b| {
        timed(b, &key, || {
            sdpa_typed(
                black_box(&q),
                black_box(&k),
                black_box(&v),
                &mut out,
                shape,
                params,
                &mut scratch,
            )
            .expect("valid call");
            black_box(&out);
        })
    });
}

/// The int8 paths benchmarked, as `(f32 backend to select, label)`: the selected f32 backend
/// caps the int8 path (`avx512` → `vnni512` on a VNNI CPU, `avx2` → AVX2, `scalar`).
fn int8_paths() -> Vec<(&'static str, &'static str)> {
    let selected = arch::backend().name();
    let mut paths = Vec::new();
    for be in arch::backends() {
        arch::select(be.name());
        paths.push((be.name(), arch::int8_path()));
    }
    arch::select(selected);
    // The selected one last, so it stays selected.
    paths.sort_by_key(|(name, _)| *name == selected);
    paths
}

/// Int8 SDPA (`int8_sdpa`, dot score) on the same shapes and inputs as f32, quantized with
/// scale 1/127 (inputs in [-1, 1)); every int8 path.
fn bench_int8(c: &mut Criterion) {
    let mut group = c.benchmark_group("int8_sdpa");
    let paths = int8_paths();
    let selected = arch::backend().name();
    for case in CASES {
        let shape = case.shape();
        let (ql, kl, vl, ol) = shape.lengths().expect("valid shape");
        let quantize = |x: Vec<f32>| {
            x.iter()
                .map(|&y| (y * 127.0).round() as i8)
                .collect::<Vec<i8>>()
        };
        let (q, k, v) = (
            quantize(inputs(ql, 1)),
            quantize(inputs(kl, 2)),
            quantize(inputs(vl, 3)),
        );
        let s = 1.0 / 127.0;
        let scales = Int8Scales {
            q: s,
            k: s,
            v: s,
            out: s,
        };
        let params = Int8SdpaParams::new(
            scales,
            case.d,
            microattn::attention::Score::Dot,
            None,
            case.mask(),
            Int8Bias::None,
        )
        .expect("valid params");
        let mut out = vec![0i8; ol];
        let mut scratch = vec![0i64; int8_sdpa_scratch_len(shape)];
        group.throughput(Throughput::Elements(case.nominal_flops() as u64));
        if case.lq * case.lk >= 1 << 20 {
            group.sampling_mode(SamplingMode::Flat).sample_size(10);
        } else {
            group.sampling_mode(SamplingMode::Auto).sample_size(10);
        }
        for &(backend, path) in &paths {
            arch::select(backend);
            let key = format!("int8 {path} {}", case.name);
            group.bench_function(BenchmarkId::new(format!("int8/{path}"), case.name), |b| {
                timed(b, &key, || {
                    int8_sdpa(
                        black_box(&q),
                        black_box(&k),
                        black_box(&v),
                        &mut out,
                        shape,
                        &params,
                        &mut scratch,
                    )
                    .expect("valid call");
                    black_box(&out);
                })
            });
        }
        arch::select(selected);
    }
    group.finish();
}

/// Linear attention: `4·H·L·d·dv` flops per call (state update and readout), causal or not.
const LINEAR: &[(&str, usize, usize, usize, bool)] = &[
    ("8x128x128x64", 8, 128, 64, false),
    ("1x1024x1024x64", 1, 1024, 64, false),
    ("1x1024x1024x64 causal", 1, 1024, 64, true),
];

fn linear_flops(heads: usize, len: usize, d: usize) -> f64 {
    4.0 * (heads * len * d * d) as f64
}

fn bench_linear(c: &mut Criterion) {
    let mut group = c.benchmark_group("linear_attention");
    for &(name, heads, len, d, causal) in LINEAR {
        let shape = AttentionShape::multi_head(heads, heads, len, len, d, d);
        let (ql, kl, vl, ol) = shape.lengths().expect("valid shape");
        let (q, k, v) = (inputs(ql, 4), inputs(kl, 5), inputs(vl, 6));
        let mut out = vec![0.0f32; ol];
        let mut scratch = vec![0.0f32; linear_attention_scratch_len(shape)];
        let params = LinearAttentionParams {
            causal,
            ..Default::default()
        };
        group.throughput(Throughput::Elements(linear_flops(heads, len, d) as u64));
        let key = format!("linear {name}");
        group.bench_function(BenchmarkId::new("f32", name), |b| {
            timed(b, &key, || {
                linear_attention(
                    black_box(&q),
                    black_box(&k),
                    black_box(&v),
                    &mut out,
                    shape,
                    &params,
                    &mut scratch,
                )
                .expect("valid call");
                black_box(&out);
            })
        });
    }
    group.finish();
}

/// Multi-head attention with projections: `(lq, lk, embed, heads)`.
const MHA: &[(&str, usize, usize, usize, usize)] = &[
    ("8x128x128x64", 128, 128, 512, 8),
    ("1x64x64x16", 64, 64, 16, 1),
];

/// Four `L × E × E` projections plus the attention.
fn mha_flops(lq: usize, lk: usize, e: usize) -> f64 {
    (2 * (2 * lq + 2 * lk) * e * e + 4 * lq * lk * e) as f64
}

fn bench_mha(c: &mut Criterion) {
    let mut group = c.benchmark_group("mha");
    for &(name, lq, lk, e, heads) in MHA {
        let shape = MhaShape::new(lq, lk, e, heads);
        let (x, mem) = (inputs(lq * e, 7), inputs(lk * e, 8));
        let (in_w, in_b, out_w, out_b) = (
            inputs(3 * e * e, 9)
                .iter()
                .map(|w| w / (e as f32).sqrt())
                .collect::<Vec<_>>(),
            inputs(3 * e, 10),
            inputs(e * e, 11)
                .iter()
                .map(|w| w / (e as f32).sqrt())
                .collect::<Vec<_>>(),
            inputs(e, 12),
        );
        let weights = MhaWeights {
            in_proj_weight: &in_w,
            in_proj_bias: Some(&in_b),
            out_proj_weight: &out_w,
            out_proj_bias: Some(&out_b),
        };
        let mut out = vec![0.0f32; lq * e];
        let mut scratch = vec![0.0f32; mha_scratch_len(lq, lk, e)];
        let params = SdpaParams::default();
        group.throughput(Throughput::Elements(mha_flops(lq, lk, e) as u64));
        let key = format!("mha {name}");
        group.bench_function(BenchmarkId::new("f32", name), |b| {
            timed(b, &key, || {
                mha(
                    black_box(&x),
                    black_box(&mem),
                    black_box(&mem),
                    &weights,
                    &mut out,
                    shape,
                    &params,
                    &mut scratch,
                )
                .expect("valid call");
                black_box(&out);
            })
        });
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// Machine probes.

/// Best-of-ten GFLOP/s of independent FMA chains with `be`, about 0.1 s in all.
fn fma_peak(be: arch::Backend) -> f64 {
    let iterations = 1_000_000;
    (0..10)
        .map(|_| {
            let start = Instant::now();
            let (flops, sink) = be.fma_peak(black_box(iterations));
            black_box(sink);
            flops as f64 / start.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

/// Best-of-twenty GB/s of reading `bytes` bytes (two arrays, one dot product over them).
fn read_bandwidth(bytes: usize) -> f64 {
    let n = bytes / 8;
    let (a, b) = (inputs(n, 13), inputs(n, 14));
    let be = arch::backend();
    (0..20)
        .map(|_| {
            let start = Instant::now();
            black_box(be.dot(black_box(&a), black_box(&b)));
            (2 * n * 4) as f64 / start.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("model name"))?;
            Some(line.split(':').nth(1)?.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

// ---------------------------------------------------------------------------------------------
// Summary.

fn gflops(flops: f64, seconds: f64) -> f64 {
    flops / seconds / 1e9
}

fn summary(peak: f64, peak_avx2: Option<f64>, bandwidth: f64) {
    let best_name = arch::backend().name();
    println!("\n## Host summary\n");
    println!(
        "CPU: {} (single thread). Backend: `{best_name}`. FMA peak ({best_name}): {peak:.1} \
         GFLOP/s{}. Read bandwidth over the decode working set (2 MiB): {bandwidth:.1} GB/s. \
         Times are the best of criterion's samples (each the mean of many calls; other \
         processes can only slow a sample down); the f32 column also gives the median.\n",
        cpu_name(),
        peak_avx2.map_or(String::new(), |p| format!(", avx2: {p:.1} GFLOP/s")),
    );
    let others: Vec<&str> = arch::backends()
        .map(|b| b.name())
        .filter(|n| *n != "scalar" && *n != best_name)
        .collect();
    print!("| shape (H×Lq×Lk×d) | f32 µs/call | f32 GFLOP/s (median) | % of peak |");
    for o in &others {
        print!(" f32 {o} GFLOP/s |");
    }
    println!(" f16 GFLOP/s | bf16 GFLOP/s | naive GFLOP/s | × naive |");
    print!("|---|---|---|---|");
    for _ in &others {
        print!("---|");
    }
    println!("---|---|---|---|");
    for case in CASES.iter().chain([&WINDOW]) {
        let Some(t) = best(&format!("f32 {best_name} {}", case.name)) else {
            continue;
        };
        let t_median = quantile(&format!("f32 {best_name} {}", case.name), 0.5).unwrap_or(t);
        let flops = case.nominal_flops();
        let done = case.done_flops();
        let rate =
            |t: Option<f64>| t.map_or("–".to_string(), |t| format!("{:.1}", gflops(flops, t)));
        let effective = if (done - flops).abs() > 0.5 {
            format!(
                " ({:.1} on the {:.0}% done)",
                gflops(done, t),
                100.0 * done / flops
            )
        } else {
            String::new()
        };
        print!(
            "| {} | {:.1} | {:.1} ({:.1}){effective} | {:.0}% |",
            case.name,
            t * 1e6,
            gflops(flops, t),
            gflops(flops, t_median),
            100.0 * gflops(done, t) / peak
        );
        for o in &others {
            print!(" {} |", rate(best(&format!("f32 {o} {}", case.name))));
        }
        let naive = best(&format!("naive {}", case.name));
        println!(
            " {} | {} | {} | {} |",
            rate(best(&format!("f16 {}", case.name))),
            rate(best(&format!("bf16 {}", case.name))),
            rate(naive),
            naive.map_or("–".to_string(), |n| format!("{:.1}×", n / t)),
        );
    }
    let decode = &CASES[4];
    if let Some(t) = best(&format!("f32 {best_name} {}", decode.name)) {
        let gbs = decode.kv_bytes(4) / t / 1e9;
        println!(
            "\n{}: {gbs:.1} GB/s of f32 K+V ({:.0}% of the measured read bandwidth); \
             f16 {}.",
            decode.name,
            100.0 * gbs / bandwidth,
            best(&format!("f16 {}", decode.name)).map_or("–".into(), |t| format!(
                "{:.1} GB/s",
                decode.kv_bytes(2) / t / 1e9
            )),
        );
    }
    int8_summary(best_name);
    println!("\n| other | µs/call | GFLOP/s |\n|---|---|---|");
    for &(name, heads, len, d, _) in LINEAR {
        if let Some(t) = best(&format!("linear {name}")) {
            let rate = gflops(linear_flops(heads, len, d), t);
            println!(
                "| linear attention {name} (4·H·L·d² flops) | {:.1} | {rate:.1} |",
                t * 1e6
            );
        }
    }
    for &(name, lq, lk, e, _) in MHA {
        if let Some(t) = best(&format!("mha {name}")) {
            let rate = gflops(mha_flops(lq, lk, e), t);
            println!(
                "| MHA {name} with projections (E = {e}) | {:.1} | {rate:.1} |",
                t * 1e6
            );
        }
    }
}

/// The int8 table: rates in GOP/s (`4·H·Lq·Lk·d` integer operations per call, the f32
/// count), every path, and the best path's ratio to the selected f32 backend.
fn int8_summary(best_name: &str) {
    let paths = int8_paths();
    let Some(&(_, best_path)) = paths.last() else {
        return;
    };
    if best(&format!("int8 {best_path} {}", CASES[0].name)).is_none() {
        return;
    }
    print!(
        "\n| int8 shape | {best_path} µs/call | {best_path} GOP/s (median) | × f32 {best_name} |"
    );
    for (_, p) in &paths[..paths.len() - 1] {
        print!(" {p} GOP/s |");
    }
    println!();
    print!("|---|---|---|---|");
    for _ in &paths[..paths.len() - 1] {
        print!("---|");
    }
    println!();
    for case in CASES {
        let Some(t) = best(&format!("int8 {best_path} {}", case.name)) else {
            continue;
        };
        let flops = case.nominal_flops();
        let median = quantile(&format!("int8 {best_path} {}", case.name), 0.5).unwrap_or(t);
        let ratio = best(&format!("f32 {best_name} {}", case.name))
            .map_or("–".to_string(), |f| format!("{:.2}×", f / t));
        print!(
            "| {} | {:.1} | {:.1} ({:.1}) | {ratio} |",
            case.name,
            t * 1e6,
            gflops(flops, t),
            gflops(flops, median)
        );
        for (_, p) in &paths[..paths.len() - 1] {
            let rate = best(&format!("int8 {p} {}", case.name))
                .map_or("–".to_string(), |t| format!("{:.1}", gflops(flops, t)));
            print!(" {rate} |");
        }
        println!();
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(10)
        .configure_from_args();
    let selected = arch::backend();
    eprintln!("backend: {} ({} lanes)", selected.name(), selected.lanes());
    let peak = fma_peak(selected);
    let peak_avx2 = arch::backends()
        .find(|b| b.name() == "avx2" && selected.name() != "avx2")
        .map(fma_peak);
    let bandwidth = read_bandwidth(CASES[4].kv_bytes(4) as usize);
    bench_sdpa(&mut c);
    bench_int8(&mut c);
    bench_linear(&mut c);
    bench_mha(&mut c);
    c.final_summary();
    // Probed again after the runs: the better of the two is the core's figure.
    let peak = peak.max(fma_peak(selected));
    let bandwidth = bandwidth.max(read_bandwidth(CASES[4].kv_bytes(4) as usize));
    summary(peak, peak_avx2, bandwidth);
}
