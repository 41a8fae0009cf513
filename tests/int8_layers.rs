//! Int8 transformer layers, GAT and ViT embedding against f64 references written from the
//! math (random inputs, quantized by the test, intermediate scales calibrated by running the
//! int8 kernels on the input), plus bad-input cases.

#[allow(dead_code)]
#[path = "conformance/ops/int8/layer_build.rs"]
mod layer_build;

use layer_build::{calibrated_run, quantize_per_row, quantize_tensor, QLayer};
use microattn::attention::int8::Int8Dense;
use microattn::graph::{GatParams, GatShape};
use microattn::graph_int8::{
    int8_gat, int8_gat_acc_len, int8_gat_scratch_len, Int8GatParams, Int8GatScales, Int8GatStats,
};
use microattn::layers::int8::{
    int8_add, int8_decoder_layer, int8_encoder_layer, int8_encoder_scratch_len, int8_ffn,
    int8_layer_acc_len, int8_layer_norm, int8_patch_embed, int8_patch_embed_scratch_len,
    int8_patch_offsets_len, Int8Add, Int8LayerNorm, Int8Lut, Int8PatchEmbed,
};
use microattn::layers::{Activation, DecoderShape, EncoderShape, FfnShape, PatchShape};
use microattn::mask::{Mask, MaskTerm};
use microattn::quant::FixedMultiplier;
use microattn::Error;
use std::collections::HashMap;

/// xorshift64* in [-1, 1).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545F4914F6CDD1D) >> 11;
        v as f64 / (1u64 << 52) as f64 - 1.0
    }
    fn vec(&mut self, n: usize, amp: f64) -> Vec<f32> {
        (0..n).map(|_| (self.next() * amp) as f32).collect()
    }
}

fn rel_l2(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).powi(2))
        .sum();
    let den: f64 = want.iter().map(|w| w * w).sum();
    (num / den.max(1e-24)).sqrt()
}

fn f64s(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

fn erf(x: f64) -> f64 {
    let a = x.abs();
    let r = if a <= 3.0 {
        // Taylor series: 2/√π Σ (-1)^n x^(2n+1) / (n! (2n+1)).
        let (mut term, mut sum) = (a, a);
        for n in 1..80 {
            term *= -a * a / n as f64;
            sum += term / (2 * n + 1) as f64;
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        let x2 = a * a;
        1.0 - (-x2).exp() / (a * std::f64::consts::PI.sqrt())
            * (1.0 - 1.0 / (2.0 * x2) + 3.0 / (4.0 * x2 * x2))
    };
    if x < 0.0 {
        -r
    } else {
        r
    }
}

fn act(a: Activation, x: f64) -> f64 {
    match a {
        Activation::Relu => x.max(0.0),
        Activation::Gelu => 0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2)),
        _ => unimplemented!(),
    }
}

/// `y = x Wᵀ + b`, `w` `[out, in]`.
fn linear(x: &[f64], w: &[f32], b: Option<&[f32]>, inp: usize) -> Vec<f64> {
    let out = w.len() / inp;
    x.chunks(inp)
        .flat_map(|row| {
            (0..out).map(move |o| {
                let s: f64 = row
                    .iter()
                    .zip(&w[o * inp..][..inp])
                    .map(|(&a, &b)| a * b as f64)
                    .sum();
                s + b.map_or(0.0, |b| b[o] as f64)
            })
        })
        .collect()
}

fn layer_norm(x: &[f64], w: &[f32], b: Option<&[f32]>, eps: f64) -> Vec<f64> {
    let e = w.len();
    x.chunks(e)
        .flat_map(|row| {
            let mean = row.iter().sum::<f64>() / e as f64;
            let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / e as f64;
            let inv = 1.0 / (var + eps).sqrt();
            (0..e)
                .map(move |i| (row[i] - mean) * inv * w[i] as f64 + b.map_or(0.0, |b| b[i] as f64))
        })
        .collect()
}

/// `nn.MultiheadAttention` over state-dict tensors `prefix.*`; `allowed(i, j)`.
fn mha(
    t: &HashMap<String, Vec<f32>>,
    prefix: &str,
    xq: &[f64],
    xkv: &[f64],
    e: usize,
    heads: usize,
    allowed: &dyn Fn(usize, usize) -> bool,
) -> Vec<f64> {
    let w = &t[&format!("{prefix}.in_proj_weight")];
    let b = &t[&format!("{prefix}.in_proj_bias")];
    let q = linear(xq, &w[..e * e], Some(&b[..e]), e);
    let k = linear(xkv, &w[e * e..2 * e * e], Some(&b[e..2 * e]), e);
    let v = linear(xkv, &w[2 * e * e..], Some(&b[2 * e..]), e);
    let (lq, lk, hd) = (xq.len() / e, xkv.len() / e, e / heads);
    let mut o = vec![0.0; lq * e];
    for h in 0..heads {
        for i in 0..lq {
            let s: Vec<Option<f64>> = (0..lk)
                .map(|j| {
                    allowed(i, j).then(|| {
                        (0..hd)
                            .map(|d| q[i * e + h * hd + d] * k[j * e + h * hd + d])
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                })
                .collect();
            let m = s.iter().flatten().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
            let p: Vec<f64> = s.iter().map(|x| x.map_or(0.0, |x| (x - m).exp())).collect();
            let z: f64 = p.iter().sum();
            for d in 0..hd {
                o[i * e + h * hd + d] = if z > 0.0 {
                    (0..lk).map(|j| p[j] * v[j * e + h * hd + d]).sum::<f64>() / z
                } else {
                    0.0
                };
            }
        }
    }
    linear(
        &o,
        &t[&format!("{prefix}.out_proj.weight")],
        Some(&t[&format!("{prefix}.out_proj.bias")]),
        e,
    )
}

fn ffn(t: &HashMap<String, Vec<f32>>, x: &[f64], e: usize, a: Activation) -> Vec<f64> {
    let h: Vec<f64> = linear(x, &t["linear1.weight"], Some(&t["linear1.bias"]), e)
        .into_iter()
        .map(|v| act(a, v))
        .collect();
    let hidden = t["linear1.weight"].len() / e;
    linear(&h, &t["linear2.weight"], Some(&t["linear2.bias"]), hidden)
}

fn add(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// A random state dict of an encoder (or decoder) layer, PyTorch-like initialization.
fn state_dict(rng: &mut Rng, e: usize, hidden: usize, decoder: bool) -> HashMap<String, Vec<f32>> {
    let mut t = HashMap::new();
    let s = 1.0 / (e as f64).sqrt();
    let attns: &[&str] = if decoder {
        &["self_attn", "multihead_attn"]
    } else {
        &["self_attn"]
    };
    for p in attns {
        t.insert(format!("{p}.in_proj_weight"), rng.vec(3 * e * e, s * 1.7));
        t.insert(format!("{p}.in_proj_bias"), rng.vec(3 * e, 0.1));
        t.insert(format!("{p}.out_proj.weight"), rng.vec(e * e, s));
        t.insert(format!("{p}.out_proj.bias"), rng.vec(e, 0.1));
    }
    t.insert("linear1.weight".into(), rng.vec(hidden * e, s));
    t.insert("linear1.bias".into(), rng.vec(hidden, s));
    t.insert(
        "linear2.weight".into(),
        rng.vec(e * hidden, 1.0 / (hidden as f64).sqrt()),
    );
    t.insert("linear2.bias".into(), rng.vec(e, 0.1));
    for i in 1..=if decoder { 3 } else { 2 } {
        t.insert(
            format!("norm{i}.weight"),
            rng.vec(e, 0.2).iter().map(|v| 1.0 + v).collect(),
        );
        t.insert(format!("norm{i}.bias"), rng.vec(e, 0.2));
    }
    t
}

const EPS: f64 = 1e-5;

fn ref_encoder(
    t: &HashMap<String, Vec<f32>>,
    x: &[f64],
    e: usize,
    heads: usize,
    a: Activation,
    norm_first: bool,
    allowed: &dyn Fn(usize, usize) -> bool,
) -> Vec<f64> {
    let ln = |i: usize, x: &[f64]| {
        layer_norm(
            x,
            &t[&format!("norm{i}.weight")],
            Some(&t[&format!("norm{i}.bias")]),
            EPS,
        )
    };
    if norm_first {
        let n = ln(1, x);
        let r = add(x, &mha(t, "self_attn", &n, &n, e, heads, allowed));
        add(&r, &ffn(t, &ln(2, &r), e, a))
    } else {
        let h = ln(1, &add(x, &mha(t, "self_attn", x, x, e, heads, allowed)));
        ln(2, &add(&h, &ffn(t, &h, e, a)))
    }
}

#[allow(clippy::too_many_arguments)]
fn ref_decoder(
    t: &HashMap<String, Vec<f32>>,
    x: &[f64],
    mem: &[f64],
    e: usize,
    heads: usize,
    a: Activation,
    norm_first: bool,
    causal: &dyn Fn(usize, usize) -> bool,
) -> Vec<f64> {
    let ln = |i: usize, x: &[f64]| {
        layer_norm(
            x,
            &t[&format!("norm{i}.weight")],
            Some(&t[&format!("norm{i}.bias")]),
            EPS,
        )
    };
    let all = |_: usize, _: usize| true;
    if norm_first {
        let n = ln(1, x);
        let r = add(x, &mha(t, "self_attn", &n, &n, e, heads, causal));
        let r = add(
            &r,
            &mha(t, "multihead_attn", &ln(2, &r), mem, e, heads, &all),
        );
        add(&r, &ffn(t, &ln(3, &r), e, a))
    } else {
        let h = ln(1, &add(x, &mha(t, "self_attn", x, x, e, heads, causal)));
        let h = ln(
            2,
            &add(&h, &mha(t, "multihead_attn", &h, mem, e, heads, &all)),
        );
        ln(3, &add(&h, &ffn(t, &h, e, a)))
    }
}

fn qlayer(
    t: &HashMap<String, Vec<f32>>,
    e: usize,
    heads: usize,
    dec: bool,
    a: Activation,
    pre: bool,
) -> QLayer {
    let get = |n: &str| t.get(n).cloned();
    QLayer::new(&get, e, heads, dec, a, pre, EPS as f32).unwrap()
}

#[test]
fn encoder_layers_match_f64() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for (seed, (e, heads, hidden, len, a, pre, valid)) in [
        (16, 4, 32, 10, Activation::Relu, false, 10),
        (16, 2, 24, 10, Activation::Gelu, true, 7),
        (32, 4, 64, 12, Activation::Gelu, false, 9),
        (24, 3, 48, 6, Activation::Relu, true, 6),
    ]
    .into_iter()
    .enumerate()
    {
        let t = state_dict(&mut rng, e, hidden, false);
        let src = rng.vec(len * e, 1.5);
        let want = ref_encoder(&t, &f64s(&src), e, heads, a, pre, &|_, j| j < valid);
        let layer = qlayer(&t, e, heads, false, a, pre);
        let (q, s) = quantize_tensor(&src).unwrap();
        let terms = [MaskTerm::KeyPadding { valid }];
        let got = calibrated_run(&layer, &q, s, None, Mask::new(&terms), Mask::NONE, 4).unwrap();
        let err = rel_l2(&got, &want);
        println!("encoder case {seed}: rel_l2 {err:.3e}");
        assert!(err < 5e-2, "encoder case {seed}: rel_l2 {err}");
    }
}

#[test]
fn decoder_layers_match_f64() {
    let mut rng = Rng(0x0bad_cafe_dead_beef);
    for (case, (e, heads, hidden, lt, ls, a, pre)) in [
        (16, 4, 32, 7, 9, Activation::Relu, false),
        (16, 2, 32, 5, 11, Activation::Gelu, true),
        (32, 8, 48, 9, 6, Activation::Relu, true),
    ]
    .into_iter()
    .enumerate()
    {
        let t = state_dict(&mut rng, e, hidden, true);
        let (tgt, mem) = (rng.vec(lt * e, 1.5), rng.vec(ls * e, 2.0));
        let want = ref_decoder(&t, &f64s(&tgt), &f64s(&mem), e, heads, a, pre, &|i, j| {
            j <= i
        });
        let layer = qlayer(&t, e, heads, true, a, pre);
        let (q, s) = quantize_tensor(&tgt).unwrap();
        let (m, ms) = quantize_tensor(&mem).unwrap();
        let causal = [MaskTerm::Causal];
        let got = calibrated_run(
            &layer,
            &q,
            s,
            Some((&m, ms)),
            Mask::new(&causal),
            Mask::NONE,
            4,
        )
        .unwrap();
        let err = rel_l2(&got, &want);
        println!("decoder case {case}: rel_l2 {err:.3e}");
        assert!(err < 5e-2, "decoder case {case}: rel_l2 {err}");
    }
}

#[test]
fn layer_norm_add_and_tables_match_f64() {
    let mut rng = Rng(77);
    let e = 24;
    let (x, y) = (rng.vec(5 * e, 3.0), rng.vec(5 * e, 0.5));
    let w: Vec<f32> = rng.vec(e, 0.3).iter().map(|v| 1.0 + v).collect();
    let b = rng.vec(e, 0.3);
    let (xq, xs) = quantize_tensor(&x).unwrap();
    let (yq, ys) = quantize_tensor(&y).unwrap();
    let deq = |q: &[i8], s: f32| -> Vec<f64> { q.iter().map(|&v| v as f64 * s as f64).collect() };
    // LN of the dequantized sum: only the output rounding differs.
    let want = layer_norm(&add(&deq(&xq, xs), &deq(&yq, ys)), &w, Some(&b), EPS);
    let out_scale = 4.0 / 127.0;
    let mut storage = vec![0i32; 2 * e];
    let p = Int8LayerNorm::prepare(
        &w,
        Some(&b),
        EPS as f32,
        xs,
        Some(ys),
        out_scale,
        &mut storage,
    )
    .unwrap();
    let mut out = vec![0i8; 5 * e];
    let peak = int8_layer_norm(&xq, Some(&yq), &p, &mut out, e).unwrap();
    assert!(peak <= 127);
    for (&o, &w) in out.iter().zip(&want) {
        assert!(
            (o as f64 - w / out_scale as f64).abs() <= 0.52,
            "{o} vs {}",
            w / out_scale as f64
        );
    }
    // One input (pre-norm), and a constant row with eps = 0 gives the bias.
    let mut storage = vec![0i32; 2 * e];
    let p = Int8LayerNorm::prepare(&w, Some(&b), 0.0, xs, None, out_scale, &mut storage).unwrap();
    let mut xc = xq.clone();
    xc[..e].fill(17);
    int8_layer_norm(&xc, None, &p, &mut out, e).unwrap();
    let want = layer_norm(&deq(&xc, xs), &w, Some(&b), 0.0);
    for (i, &o) in out[..e].iter().enumerate() {
        assert_eq!(
            o as f64,
            (b[i] as f64 / out_scale as f64).round(),
            "constant row"
        );
    }
    for (&o, &w) in out.iter().zip(&want).skip(e) {
        assert!((o as f64 - w / out_scale as f64).abs() <= 0.52);
    }

    // Residual add: one rounding of the exact sum, saturated; the peak is before saturation.
    let add_p = Int8Add::prepare(xs, ys, 0.02).unwrap();
    let peak = int8_add(&xq, &yq, &add_p, &mut out).unwrap();
    let mut want_peak = 0.0f64;
    for ((&o, &a), &c) in out.iter().zip(&xq).zip(&yq) {
        let exact = (a as f64 * xs as f64 + c as f64 * ys as f64) / 0.02;
        want_peak = want_peak.max(exact.abs().round());
        assert!((o as f64 - exact.clamp(-127.0, 127.0)).abs() <= 0.5 + 1e-6);
    }
    assert_eq!(peak as f64, want_peak);
    assert!(peak > 127, "|x| up to 3 in steps of 0.02 saturates");

    // Activation tables.
    let lut = Int8Lut::prepare(Activation::Gelu, 0.05, 0.04).unwrap();
    for q in -128i32..=127 {
        let want = (act(Activation::Gelu, q as f64 * 0.05) / 0.04).clamp(-127.0, 127.0);
        assert!(
            (lut.get(q as i8) as f64 - want).abs() <= 0.5 + 1e-3,
            "gelu at {q}"
        );
    }
}

/// torch_geometric `GATConv` in f64 (edges `(src, dst)` after self-loop handling).
#[allow(clippy::too_many_arguments)]
fn ref_gat(
    x: &[f64],
    edges: &[(usize, usize)],
    lin: &[f32],
    att_src: &[f32],
    att_dst: &[f32],
    bias: &[f32],
    n: usize,
    heads: usize,
    f: usize,
    concat: bool,
    slope: f64,
) -> Vec<f64> {
    let fin = x.len() / n;
    let hf = heads * f;
    let xp = linear(x, lin, None, fin);
    let a = |v: &[f32], node: usize, h: usize| -> f64 {
        (0..f)
            .map(|k| xp[node * hf + h * f + k] * v[h * f + k] as f64)
            .sum()
    };
    let mut out = vec![0.0; n * hf];
    for t in 0..n {
        for h in 0..heads {
            let inc: Vec<(usize, f64)> = edges
                .iter()
                .filter(|e| e.1 == t)
                .map(|&(s, _)| {
                    let e = a(att_src, s, h) + a(att_dst, t, h);
                    (s, if e > 0.0 { e } else { slope * e })
                })
                .collect();
            let m = inc.iter().fold(f64::NEG_INFINITY, |m, e| m.max(e.1));
            let z: f64 = inc.iter().map(|e| (e.1 - m).exp()).sum();
            for &(s, e) in &inc {
                for k in 0..f {
                    out[t * hf + h * f + k] += (e - m).exp() / z * xp[s * hf + h * f + k];
                }
            }
        }
    }
    let width = if concat { hf } else { f };
    (0..n * width)
        .map(|i| {
            let (t, c) = (i / width, i % width);
            let v = if concat {
                out[t * hf + c]
            } else {
                (0..heads).map(|h| out[t * hf + h * f + c]).sum::<f64>() / heads as f64
            };
            v + bias[c] as f64
        })
        .collect()
}

/// Runs int8 GAT with calibrated `x'` and output scales; returns the dequantized output.
#[allow(clippy::too_many_arguments)]
fn run_gat(
    x: &[f32],
    edge_index: &[i32],
    lin: &[f32],
    att_src: &[f32],
    att_dst: &[f32],
    bias: &[f32],
    shape: GatShape,
    params: &GatParams,
) -> Result<Vec<f32>, Error> {
    let hf = shape.heads * shape.out_features;
    let (xq, xs) = quantize_tensor(x).unwrap();
    let (lq, ls) = quantize_per_row(lin, hf).unwrap();
    let (aq, a_s) = quantize_tensor(att_src).unwrap();
    let (dq, ds) = quantize_tensor(att_dst).unwrap();
    let mut out = vec![0i8; shape.nodes * shape.output_features(params.concat)];
    let mut scratch = vec![0i8; int8_gat_scratch_len(shape)];
    let mut acc = vec![0i64; int8_gat_acc_len(shape)];
    let mut go = |xp: f32, os: f32, out: &mut [i8]| -> Result<Int8GatStats, Error> {
        let mut m = vec![FixedMultiplier::ONE; hf];
        let lin = Int8Dense::prepare(&lq, hf, &ls, xs, xp, None, &mut [], &mut m)?;
        let mut bq = vec![0i32; bias.len()];
        let scales = Int8GatScales {
            projected: xp,
            att_src: a_s,
            att_dst: ds,
            out: os,
        };
        let p = Int8GatParams::prepare(lin, &aq, &dq, scales, Some(bias), params, &mut bq)?;
        let mut st = Int8GatStats::default();
        int8_gat(
            &xq,
            edge_index,
            &p,
            out,
            shape,
            &mut scratch,
            &mut acc,
            Some(&mut st),
        )?;
        Ok(st)
    };
    let (mut xp, mut os) = (0.1f32, 0.1f32);
    for _ in 0..4 {
        let st = go(xp, os, &mut out)?;
        xp *= (st.projected.max(1) as f32 + 1.0) / 127.0;
        os *= (st.out.max(1) as f32 + 1.0) / 127.0;
    }
    go(xp, os, &mut out)?;
    Ok(out.iter().map(|&v| v as f32 * os).collect())
}

#[test]
fn gat_matches_f64() {
    let mut rng = Rng(4242);
    for (case, (n, fin, f, heads, concat, loops)) in [
        (8, 6, 4, 2, true, true),
        (7, 5, 3, 3, false, false),
        (12, 8, 8, 4, true, false),
        (10, 4, 6, 2, false, true),
    ]
    .into_iter()
    .enumerate()
    {
        let hf = heads * f;
        let x = rng.vec(n * fin, 2.0);
        let lin = rng.vec(hf * fin, 0.6);
        let (att_src, att_dst) = (rng.vec(hf, 0.8), rng.vec(hf, 0.8));
        let bias = rng.vec(if concat { hf } else { f }, 0.3);
        // Random edges, one self loop listed, node n-1 without incoming edges (unless loops).
        let m = 2 * n;
        let mut src: Vec<i32> = (0..m)
            .map(|_| ((rng.next() + 1.0) / 2.0 * n as f64) as i32 % n as i32)
            .collect();
        let mut dst: Vec<i32> = (0..m)
            .map(|_| ((rng.next() + 1.0) / 2.0 * (n - 1) as f64) as i32 % (n as i32 - 1))
            .collect();
        src.push(1);
        dst.push(1);
        let mut edges: Vec<(usize, usize)> = src
            .iter()
            .zip(&dst)
            .map(|(&s, &t)| (s as usize, t as usize))
            .filter(|&(s, t)| !(loops && s == t))
            .collect();
        if loops {
            edges.extend((0..n).map(|i| (i, i)));
        }
        let edge_index: Vec<i32> = src.iter().chain(&dst).copied().collect();
        let params = GatParams {
            concat,
            negative_slope: 0.2,
            add_self_loops: loops,
        };
        let shape = GatShape::new(n, fin, f, heads);
        let want = ref_gat(
            &f64s(&x),
            &edges,
            &lin,
            &att_src,
            &att_dst,
            &bias,
            n,
            heads,
            f,
            concat,
            0.2,
        );
        let got = run_gat(
            &x,
            &edge_index,
            &lin,
            &att_src,
            &att_dst,
            &bias,
            shape,
            &params,
        )
        .unwrap();
        let err = rel_l2(&got, &want);
        println!("gat case {case}: rel_l2 {err:.3e}");
        assert!(err < 5e-2, "gat case {case}: rel_l2 {err}");
        if !loops {
            // The isolated node gets only the bias (within one output step).
            let width = shape.output_features(concat);
            for (g, b) in got[(n - 1) * width..].iter().zip(&bias) {
                assert!(
                    (g - b).abs() <= 0.6 * (got.iter().fold(0.0f32, |m, v| m.max(v.abs())) / 127.0)
                );
            }
        }
    }
}

#[test]
fn vit_embed_matches_f64() {
    let mut rng = Rng(99);
    for (c, h, w, p, e, with_cls) in [
        (3, 8, 8, 4, 12, true),
        (2, 9, 7, 3, 10, false),
        (1, 16, 16, 4, 24, true),
    ] {
        let image = rng.vec(c * h * w, 1.0);
        let pl = c * p * p;
        let pw = rng.vec(e * pl, 1.0 / (pl as f64).sqrt());
        let bias = rng.vec(e, 0.2);
        let cls = rng.vec(e, 0.5);
        let shape = PatchShape::new(c, h, w, p, e);
        let np = shape.patches();
        let first = usize::from(with_cls);
        let pos = rng.vec((np + first) * e, 0.3);
        // Reference: conv with stride P, row-major patches.
        let mut want = Vec::new();
        if with_cls {
            want.extend((0..e).map(|k| cls[k] as f64 + pos[k] as f64));
        }
        for gy in 0..h / p {
            for gx in 0..w / p {
                for k in 0..e {
                    let mut s = bias[k] as f64;
                    for ch in 0..c {
                        for dy in 0..p {
                            for dx in 0..p {
                                let px = image[(ch * h + gy * p + dy) * w + gx * p + dx] as f64;
                                s += px * pw[k * pl + (ch * p + dy) * p + dx] as f64;
                            }
                        }
                    }
                    let row = first + gy * (w / p) + gx;
                    want.push(s + pos[row * e + k] as f64);
                }
            }
        }
        let (iq, is) = quantize_tensor(&image).unwrap();
        let (wq, ws) = quantize_per_row(&pw, e).unwrap();
        let mut tokens = vec![0i8; (np + first) * e];
        let mut scratch = vec![0i8; int8_patch_embed_scratch_len(shape)];
        let mut scale = 4.0f32 / 127.0;
        for round in 0..3 {
            let mut offsets = vec![0i32; int8_patch_offsets_len(shape)];
            let mut mults = vec![FixedMultiplier::ONE; e];
            let mut cls_row = vec![0i8; e];
            let params = Int8PatchEmbed::prepare(
                &wq,
                &ws,
                Some(&bias),
                with_cls.then_some(&cls[..]),
                Some(&pos),
                is,
                scale,
                shape,
                &mut offsets,
                &mut mults,
                &mut cls_row,
            )
            .unwrap();
            let peak = int8_patch_embed(&iq, &params, &mut tokens, shape, &mut scratch).unwrap();
            if round < 2 {
                scale *= (peak as f32 + 1.0) / 127.0;
            }
        }
        let got: Vec<f32> = tokens.iter().map(|&v| v as f32 * scale).collect();
        let err = rel_l2(&got, &want);
        println!("vit {c}x{h}x{w} p{p}: rel_l2 {err:.3e}");
        assert!(err < 5e-2, "vit: rel_l2 {err}");
    }
}

#[test]
fn bad_inputs_are_errors() {
    let mut rng = Rng(5);
    let (e, heads, hidden, len) = (8, 2, 16, 4);
    let t = state_dict(&mut rng, e, hidden, true);
    let layer = qlayer(&t, e, heads, true, Activation::Relu, false);
    let src = vec![3i8; len * e];
    let s = layer_build::worst_case_scales(&layer, 0.05, 0.05);
    let mut out = vec![0i8; len * e];
    // Working call first (through the builder), then break one thing at a time.
    layer_build::run_layer(
        &layer,
        &s,
        &src,
        0.05,
        Some((&src, 0.05)),
        Mask::NONE,
        Mask::NONE,
        &mut out,
    )
    .unwrap();
    // A memory whose length is not a multiple of E: a length mismatch.
    assert!(layer_build::run_layer(
        &layer,
        &s,
        &src,
        0.05,
        Some((&src[1..], 0.05)),
        Mask::NONE,
        Mask::NONE,
        &mut out
    )
    .is_err());

    // Encoder through the public API: wrong lengths, heads, scratch, norm params.
    let enc = qlayer(
        &state_dict(&mut rng, e, hidden, false),
        e,
        heads,
        false,
        Activation::Relu,
        true,
    );
    let s = layer_build::worst_case_scales(&enc, 0.05, 0.05);
    layer_build::run_layer(&enc, &s, &src, 0.05, None, Mask::NONE, Mask::NONE, &mut out).unwrap();
    assert!(layer_build::run_layer(
        &enc,
        &s,
        &src[..e * 3 + 1],
        0.05,
        None,
        Mask::NONE,
        Mask::NONE,
        &mut out
    )
    .is_err());

    // LayerNorm: bad eps, bad scales, wrong lengths, constant rows fine.
    let w = vec![1.0f32; e];
    let mut st = vec![0i32; 2 * e];
    assert_eq!(
        Int8LayerNorm::prepare(&w, None, -1.0, 0.1, None, 0.1, &mut st).unwrap_err(),
        Error::InvalidScale
    );
    assert_eq!(
        Int8LayerNorm::prepare(&w, None, 1e-5, 0.0, None, 0.1, &mut st).unwrap_err(),
        Error::InvalidScale
    );
    assert_eq!(
        Int8LayerNorm::prepare(&w, None, 1e-5, 0.1, None, f32::NAN, &mut st).unwrap_err(),
        Error::InvalidScale
    );
    assert!(matches!(
        Int8LayerNorm::prepare(&w, None, 1e-5, 0.1, None, 0.1, &mut st[..3]),
        Err(Error::ScratchTooSmall { .. })
    ));
    // gamma / out_scale too large for Q16 in an i32.
    assert_eq!(
        Int8LayerNorm::prepare(&w, None, 1e-5, 0.1, None, 1e-6, &mut st).unwrap_err(),
        Error::InvalidScale
    );
    let p = Int8LayerNorm::prepare(&w, None, 1e-5, 0.1, None, 0.1, &mut st).unwrap();
    let mut y = vec![0i8; 2 * e];
    assert!(int8_layer_norm(&src[..2 * e], None, &p, &mut y, e + 1).is_err());
    assert!(int8_layer_norm(&src[..2 * e], None, &p, &mut y[..e], e).is_err());
    assert!(int8_layer_norm(&src[..2 * e], Some(&src[..e]), &p, &mut y, e).is_err());
    assert_eq!(
        int8_layer_norm(&[], None, &p, &mut [], e).unwrap_err(),
        Error::ZeroDimension
    );
    let mut bad = p;
    bad.eps = -1;
    assert_eq!(
        int8_layer_norm(&src[..2 * e], None, &bad, &mut y, e).unwrap_err(),
        Error::InvalidScale
    );
    let mut bad = p;
    bad.input = FixedMultiplier::from_real(1e6).unwrap();
    assert_eq!(
        int8_layer_norm(&src[..2 * e], None, &bad, &mut y, e).unwrap_err(),
        Error::InvalidScale
    );
    // Extreme int8 inputs never overflow.
    let extreme: Vec<i8> = (0..2 * e)
        .map(|i| if i % 2 == 0 { -128 } else { 127 })
        .collect();
    let mut st2 = vec![0i32; 2 * e];
    let p2 = Int8LayerNorm::prepare(&w, None, 0.0, 1.0, Some(1e-6), 0.01, &mut st2).unwrap();
    int8_layer_norm(&extreme, Some(&extreme), &p2, &mut y, e).unwrap();

    // Add and tables.
    assert_eq!(
        Int8Add::prepare(0.1, -0.1, 0.1).unwrap_err(),
        Error::InvalidScale
    );
    assert!(int8_add(&src[..3], &src[..4], &Int8Add::default(), &mut y[..3]).is_err());
    assert_eq!(
        Int8Lut::prepare(Activation::Relu, 0.0, 1.0).unwrap_err(),
        Error::InvalidScale
    );

    // FFN: short scratch, wrong weight length.
    let w1 = vec![1i8; hidden * e];
    let m = [FixedMultiplier::ONE];
    let l1 = Int8Dense {
        weight: &w1,
        bias: None,
        multipliers: &m,
    };
    let l2 = Int8Dense {
        weight: &w1[1..],
        bias: None,
        multipliers: &m,
    };
    let ffn = microattn::layers::int8::Int8FfnParams {
        linear1: l1,
        activation: Int8Lut::prepare(Activation::Relu, 1.0, 1.0).unwrap(),
        linear2: l2,
    };
    let mut h = vec![0i8; hidden];
    let fs = FfnShape::new(1, e, hidden);
    assert!(matches!(
        int8_ffn(&src[..e], &ffn, &mut y[..e], fs, &mut h[..1]),
        Err(Error::ScratchTooSmall { .. })
    ));
    y.fill(9);
    assert!(int8_ffn(&src[..e], &ffn, &mut y[..e], fs, &mut h).is_err());
    assert!(y.iter().all(|&v| v == 9), "output untouched on Err");

    // GAT: bad node id, odd edge list, bad slope, short scratch.
    let shape = GatShape::new(3, 2, 2, 1);
    let (x, lin, att, bias) = (
        vec![0.5f32; 6],
        vec![0.3f32; 4],
        vec![0.2f32; 2],
        vec![0.1f32; 2],
    );
    let p = GatParams::default();
    assert!(run_gat(&x, &[0, 1, 1, 2], &lin, &att, &att, &bias, shape, &p).is_ok());
    assert_eq!(
        run_gat(&x, &[0, 3], &lin, &att, &att, &bias, shape, &p).unwrap_err(),
        Error::InvalidParameter
    );
    assert_eq!(
        run_gat(&x, &[0, -1], &lin, &att, &att, &bias, shape, &p).unwrap_err(),
        Error::InvalidParameter
    );
    assert!(run_gat(&x, &[0, 1, 2], &lin, &att, &att, &bias, shape, &p).is_err());
    let steep = GatParams {
        negative_slope: 100.0,
        ..p
    };
    assert_eq!(
        run_gat(&x, &[0, 1], &lin, &att, &att, &bias, shape, &steep).unwrap_err(),
        Error::InvalidParameter
    );
    let nan = GatParams {
        negative_slope: f32::NAN,
        ..p
    };
    assert!(run_gat(&x, &[0, 1], &lin, &att, &att, &bias, shape, &nan).is_err());
    let mut mm = [FixedMultiplier::ONE; 2];
    let l = Int8Dense::prepare(&[1, 1, 1, 1], 2, &[0.1], 0.1, 0.1, None, &mut [], &mut mm).unwrap();
    let scales = Int8GatScales {
        projected: 0.1,
        att_src: 0.1,
        att_dst: 0.1,
        out: 0.1,
    };
    let gp = Int8GatParams::prepare(l, &[1, 1], &[1, 1], scales, None, &p, &mut []).unwrap();
    let mut o = [0i8; 6];
    let edges = [0u8, 1];
    assert!(matches!(
        int8_gat(
            &[1i8; 6],
            &edges,
            &gp,
            &mut o,
            shape,
            &mut [0i8; 5],
            &mut [0i64; 64],
            None
        ),
        Err(Error::ScratchTooSmall { .. })
    ));
    assert!(matches!(
        int8_gat(
            &[1i8; 6],
            &edges,
            &gp,
            &mut o,
            shape,
            &mut [0i8; 6],
            &mut [0i64; 3],
            None
        ),
        Err(Error::ScratchTooSmall { .. })
    ));
    assert_eq!(
        int8_gat(
            &[1i8; 6],
            &edges,
            &gp,
            &mut o,
            GatShape::new(0, 2, 2, 1),
            &mut [],
            &mut [],
            None
        )
        .unwrap_err(),
        Error::ZeroDimension
    );
    // Score multipliers that could overflow the logit bound.
    let mut huge = gp;
    huge.src_logit = FixedMultiplier::from_real(1e9).unwrap();
    assert_eq!(
        int8_gat(
            &[1i8; 6],
            &edges,
            &huge,
            &mut o,
            shape,
            &mut [0i8; 6],
            &mut [0i64; 64],
            None
        )
        .unwrap_err(),
        Error::InvalidScale
    );

    // ViT: patch larger than the image, short scratch.
    let vs = PatchShape::new(1, 4, 4, 2, 2);
    let mut offs = vec![0i32; int8_patch_offsets_len(vs)];
    let mut mm = [FixedMultiplier::ONE; 2];
    let mut cls = [0i8; 2];
    let wq = [1i8; 8];
    let vp = Int8PatchEmbed::prepare(
        &wq,
        &[0.1],
        None,
        Some(&[0.0, 0.0]),
        None,
        0.1,
        0.1,
        vs,
        &mut offs,
        &mut mm,
        &mut cls,
    )
    .unwrap();
    let mut tok = [0i8; 10];
    assert!(int8_patch_embed(&[1i8; 16], &vp, &mut tok, vs, &mut [0i8; 4]).is_ok());
    assert!(matches!(
        int8_patch_embed(&[1i8; 16], &vp, &mut tok, vs, &mut [0i8; 3]),
        Err(Error::ScratchTooSmall { .. })
    ));
    assert_eq!(
        int8_patch_embed(
            &[1i8; 16],
            &vp,
            &mut tok,
            PatchShape::new(1, 4, 4, 5, 2),
            &mut [0i8; 25]
        )
        .unwrap_err(),
        Error::ZeroDimension
    );
    assert!(int8_patch_embed(&[1i8; 15], &vp, &mut tok, vs, &mut [0i8; 4]).is_err());
    let mut offs2 = vec![0i32; 8];
    assert!(Int8PatchEmbed::prepare(
        &wq,
        &[0.1],
        None,
        None,
        Some(&[0.0; 3]),
        0.1,
        0.1,
        vs,
        &mut offs2,
        &mut mm,
        &mut cls
    )
    .is_err());

    // Layers through the public API: heads not dividing, scratch short, out untouched.
    let enc_shape = EncoderShape::new(len, e, 3, hidden);
    let mut scratch = vec![0i8; int8_encoder_scratch_len(enc_shape)];
    let mut acc = vec![0i64; int8_layer_acc_len(e, heads)];
    let results = build_encoder_params_smoke(&enc, &s, |params| {
        out.fill(5);
        let r1 = int8_encoder_layer(
            &src,
            params,
            &mut out,
            enc_shape,
            &mut scratch,
            &mut acc,
            None,
        );
        let ok_shape = EncoderShape::new(len, e, heads, hidden);
        let r2 = int8_encoder_layer(
            &src,
            params,
            &mut out,
            ok_shape,
            &mut scratch[..10],
            &mut acc,
            None,
        );
        let untouched = out.iter().all(|&v| v == 5);
        (r1, r2, untouched)
    });
    assert_eq!(results.0.unwrap_err(), Error::HeadsMismatch);
    assert!(matches!(results.1, Err(Error::ScratchTooSmall { .. })));
    assert!(results.2);
    let dec_shape = DecoderShape::new(len, 0, e, heads, hidden);
    let mut dacc = vec![0i64; 8];
    assert_eq!(
        int8_decoder_layer_zero(&src, dec_shape, &mut dacc),
        Err(Error::ZeroDimension)
    );
}

/// Builds the encoder params from the builder's pieces and hands them to `f`.
fn build_encoder_params_smoke<R>(
    layer: &QLayer,
    s: &layer_build::LayerScales,
    f: impl FnOnce(&microattn::layers::int8::Int8EncoderParams<'_>) -> R,
) -> R {
    layer_build::with_encoder_params(layer, s, 0.05, Mask::NONE, f).unwrap()
}

/// A decoder call with an empty memory is a zero dimension (checked before anything else).
fn int8_decoder_layer_zero(src: &[i8], shape: DecoderShape, acc: &mut [i64]) -> Result<(), Error> {
    let mut rng = Rng(6);
    let t = state_dict(&mut rng, shape.embed, shape.hidden, true);
    let layer = qlayer(&t, shape.embed, shape.heads, true, Activation::Relu, false);
    let s = layer_build::worst_case_scales(&layer, 0.05, 0.05);
    layer_build::with_decoder_params(&layer, &s, 0.05, 0.05, Mask::NONE, Mask::NONE, |p| {
        let mut out = vec![0i8; src.len()];
        let mut scratch = vec![0i8; 4096];
        int8_decoder_layer(src, &[], p, &mut out, shape, &mut scratch, acc, None)
    })
    .unwrap()
}
