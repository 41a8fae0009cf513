//! Transformer building blocks against plain f64 references written from the math:
//! position encodings, norms, activations, FFN, GAT, ViT embedding, selective scan, encoder and
//! decoder layers. Plus the errors each block must return instead of panicking.

use microattn::attention::{Bias, SdpaParams};
use microattn::graph::{gat, gat_footprint, gat_scratch_len, GatParams, GatShape, GatWeights};
use microattn::layers::{
    add_layer_norm, decoder_buffer_len, decoder_footprint, decoder_layer, decoder_scratch_len,
    encoder_buffer_len, encoder_footprint, encoder_layer, encoder_scratch_len, ffn, ffn_footprint,
    ffn_in_place, ffn_scratch_len, gated_ffn, gated_ffn_in_place, gated_ffn_scratch_len,
    layer_norm, layer_norm_in_place, patch_embed, patch_embed_footprint, patch_embed_scratch_len,
    rms_norm, rms_norm_in_place, softplus, Activation, DecoderShape, DecoderWeights, EncoderShape,
    EncoderWeights, FfnShape, FfnWeights, GatedFfnWeights, LayerConfig, LayerNormWeights,
    PatchEmbedWeights, PatchShape,
};
use microattn::mask::{Mask, MaskTerm};
use microattn::mha::MhaWeights;
use microattn::position::{
    alibi_slopes, learned_add, rope, rope_fixed, rope_heads_fixed, sinusoidal_add,
    sinusoidal_table, sinusoidal_table_fixed, RopeLayout, RopeParams,
};
use microattn::ssm::{
    scan_footprint, scan_state_len, selective_scan, selective_scan_step, ScanSequence, ScanShape,
    ScanState, ScanToken, ScanWeights,
};
use microattn::{f16, Error};

/// Deterministic values in [-1, 1) (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next_f32()).collect()
    }
}

/// `||y - r|| / max(||r||, 1e-12)` (the conformance metric), with every `y` finite.
fn rel_l2(y: &[f32], r: &[f64]) -> f64 {
    assert_eq!(y.len(), r.len());
    assert!(y.iter().all(|v| v.is_finite()), "non-finite output");
    let num: f64 = y.iter().zip(r).map(|(&a, &b)| (a as f64 - b).powi(2)).sum();
    let den: f64 = r.iter().map(|b| b * b).sum();
    num.sqrt() / den.sqrt().max(1e-12)
}

fn assert_close(y: &[f32], r: &[f64], tol: f64, what: &str) {
    let e = rel_l2(y, r);
    assert!(e <= tol, "{what}: rel L2 {e:e} > {tol:e}");
}

// ---------------------------------------------------------------------------------------------
// Position encodings

/// RoPE from the definition: pair `(i, j)` of row `l` rotated by `(offset + l) / base^(2k/d)`.
fn rope_ref(x: &[f32], heads: usize, len: usize, d: usize, p: &RopeParams) -> Vec<f64> {
    let mut y: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    for h in 0..heads {
        for l in 0..len {
            let row = &mut y[(h * len + l) * d..][..d];
            let pos = (p.pos_offset + l) as f64;
            for k in 0..d / 2 {
                let theta = pos / (p.base as f64).powf(2.0 * k as f64 / d as f64);
                let (i, j) = match p.layout {
                    RopeLayout::Interleaved => (2 * k, 2 * k + 1),
                    RopeLayout::Half => (k, k + d / 2),
                };
                let (a, b) = (row[i], row[j]);
                row[i] = a * theta.cos() - b * theta.sin();
                row[j] = a * theta.sin() + b * theta.cos();
            }
        }
    }
    y
}

#[test]
fn rope_matches_reference_both_layouts() {
    let mut rng = Rng::new(1);
    for layout in [RopeLayout::Interleaved, RopeLayout::Half] {
        for (heads, len, d, offset, base) in [
            (1, 16, 8, 0, 10000.0f32),
            (2, 5, 16, 7, 10000.0),
            (3, 4, 6, 123, 500000.0),
            (1, 3, 64, 4095, 10000.0),
            // Large positions: the angle must still be right to f32 precision.
            (2, 2, 32, 1_000_000, 10000.0),
        ] {
            let params = RopeParams {
                layout,
                base,
                pos_offset: offset,
            };
            let x = rng.vec(heads * len * d);
            let mut y = x.clone();
            rope(&mut y, heads, len, d, &params).unwrap();
            let r = rope_ref(&x, heads, len, d, &params);
            assert_close(
                &y,
                &r,
                1e-6,
                &format!("rope {layout:?} {heads}x{len}x{d}+{offset}"),
            );
        }
    }
}

#[test]
fn rope_layouts_differ_and_position_zero_is_identity() {
    let mut rng = Rng::new(2);
    let x = rng.vec(2 * 8);
    let mut a = x.clone();
    let mut b = x.clone();
    rope(&mut a, 1, 2, 8, &RopeParams::new(RopeLayout::Interleaved)).unwrap();
    rope(&mut b, 1, 2, 8, &RopeParams::new(RopeLayout::Half)).unwrap();
    assert_eq!(&a[..8], &x[..8]);
    assert_eq!(&b[..8], &x[..8]);
    assert_ne!(&a[8..], &b[8..]);
}

#[test]
fn rope_f16_and_fixed_tiers() {
    let mut rng = Rng::new(3);
    let params = RopeParams {
        pos_offset: 9,
        ..RopeParams::new(RopeLayout::Half)
    };
    let x = rng.vec(2 * 3 * 8);
    let xh: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
    let x16: Vec<f32> = xh.iter().map(|v| v.to_f32()).collect();
    let mut yh = xh.clone();
    rope(&mut yh, 2, 3, 8, &params).unwrap();
    let y: Vec<f32> = yh.iter().map(|v| v.to_f32()).collect();
    assert_close(&y, &rope_ref(&x16, 2, 3, 8, &params), 1e-3, "rope f16");

    let mut fixed = [[[0.0f32; 8]; 3]; 2];
    fixed
        .as_flattened_mut()
        .as_flattened_mut()
        .copy_from_slice(&x);
    rope_heads_fixed(&mut fixed, &params).unwrap();
    let mut flat = x.clone();
    rope(&mut flat, 2, 3, 8, &params).unwrap();
    assert_eq!(fixed.as_flattened().as_flattened(), &flat[..]);

    let mut one = [[0.5f32; 4]; 2];
    rope_fixed(&mut one, &RopeParams::new(RopeLayout::Interleaved)).unwrap();
    let r = rope_ref(
        &[0.5; 8],
        1,
        2,
        4,
        &RopeParams::new(RopeLayout::Interleaved),
    );
    assert_close(one.as_flattened(), &r, 1e-7, "rope_fixed");
}

#[test]
fn rope_errors() {
    let p = RopeParams::new(RopeLayout::Interleaved);
    let mut x = [0.0f32; 12];
    assert_eq!(rope(&mut x, 1, 4, 3, &p), Err(Error::InvalidParameter)); // odd dim
    assert_eq!(rope(&mut x, 0, 3, 4, &p), Err(Error::ZeroDimension));
    assert!(matches!(
        rope(&mut x, 2, 2, 4, &p),
        Err(Error::LengthMismatch {
            expected: 16,
            found: 12
        })
    ));
    for base in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let bad = RopeParams { base, ..p };
        assert_eq!(rope(&mut x, 1, 3, 4, &bad), Err(Error::InvalidParameter));
    }
    assert_eq!(
        rope(&mut x, usize::MAX, 2, 4, &p),
        Err(Error::ShapeOverflow)
    );
}

/// `pe[l][2k] = sin(pos / base^(2k/d))`, `pe[l][2k+1] = cos(...)`.
fn sinusoidal_ref(len: usize, d: usize, offset: usize, base: f64) -> Vec<f64> {
    let mut pe = vec![0.0; len * d];
    for l in 0..len {
        let pos = (offset + l) as f64;
        for i in 0..d {
            let k2 = (i - i % 2) as f64;
            let angle = pos / base.powf(k2 / d as f64);
            pe[l * d + i] = if i % 2 == 0 { angle.sin() } else { angle.cos() };
        }
    }
    pe
}

#[test]
fn sinusoidal_table_and_add_match_reference() {
    for (len, d, offset, base) in [
        (32, 16, 0, 10000.0f32),
        (7, 10, 3, 10000.0),
        (5, 7, 0, 100.0), // odd width ends with a sine column
        (4, 64, 250_000, 10000.0),
    ] {
        let r = sinusoidal_ref(len, d, offset, base as f64);
        let mut pe = vec![0.0f32; len * d];
        sinusoidal_table(&mut pe, len, d, offset, base).unwrap();
        assert_close(&pe, &r, 1e-6, &format!("sinusoidal {len}x{d}+{offset}"));

        let mut rng = Rng::new(4);
        let x = rng.vec(len * d);
        let mut y = x.clone();
        sinusoidal_add(&mut y, len, d, offset, base).unwrap();
        let r_add: Vec<f64> = x.iter().zip(&r).map(|(&a, &b)| a as f64 + b).collect();
        assert_close(&y, &r_add, 1e-6, "sinusoidal_add");
    }
    let mut fixed = [[0.0f32; 6]; 3];
    sinusoidal_table_fixed(&mut fixed, 2, 10000.0).unwrap();
    assert_close(
        fixed.as_flattened(),
        &sinusoidal_ref(3, 6, 2, 10000.0),
        1e-6,
        "fixed",
    );
    let mut half = [f16::ZERO; 24];
    sinusoidal_table(&mut half, 4, 6, 0, 10000.0).unwrap();
    let y: Vec<f32> = half.iter().map(|v| v.to_f32()).collect();
    assert_close(&y, &sinusoidal_ref(4, 6, 0, 10000.0), 1e-3, "f16 table");
}

#[test]
fn sinusoidal_errors() {
    let mut pe = [0.0f32; 12];
    assert_eq!(
        sinusoidal_table(&mut pe, 0, 4, 0, 1e4),
        Err(Error::ZeroDimension)
    );
    assert!(matches!(
        sinusoidal_table(&mut pe, 4, 4, 0, 1e4),
        Err(Error::LengthMismatch { .. })
    ));
    assert_eq!(
        sinusoidal_add(&mut pe, 3, 4, 0, -2.0),
        Err(Error::InvalidParameter)
    );
}

#[test]
fn learned_table_adds_the_right_rows() {
    let mut rng = Rng::new(5);
    let (max_len, d, len, offset) = (10, 6, 4, 5);
    let table = rng.vec(max_len * d);
    let x = rng.vec(len * d);
    let mut y = x.clone();
    learned_add(&mut y, &table, len, d, offset).unwrap();
    for l in 0..len {
        for i in 0..d {
            let r = x[l * d + i] as f64 + table[(offset + l) * d + i] as f64;
            assert!((y[l * d + i] as f64 - r).abs() < 1e-6);
        }
    }
    // Past the last row, a ragged table, overflowing positions.
    assert_eq!(
        learned_add(&mut y, &table, len, d, 7),
        Err(Error::InvalidParameter)
    );
    assert!(matches!(
        learned_add(&mut y, &table[..59], len, d, 0),
        Err(Error::LengthMismatch { .. })
    ));
    for offset in [usize::MAX, usize::MAX / 4] {
        assert_eq!(
            learned_add(&mut y, &table, len, d, offset),
            Err(Error::InvalidParameter)
        );
    }
}

/// The ALiBi paper's `get_slopes`, recursively.
fn alibi_ref(n: usize) -> Vec<f64> {
    let pow2 = |n: usize| -> Vec<f64> {
        let start = 2f64.powf(-(2f64.powf(-((n as f64).log2() - 3.0))));
        (0..n).map(|i| start * start.powi(i as i32)).collect()
    };
    if n.is_power_of_two() {
        pow2(n)
    } else {
        let c = 1 << (usize::BITS - 1 - n.leading_zeros());
        let mut s = pow2(c);
        s.extend(alibi_ref(2 * c).into_iter().step_by(2).take(n - c));
        s
    }
}

#[test]
fn alibi_slopes_match_paper() {
    for n in [1, 2, 3, 4, 5, 6, 8, 12, 16, 20, 32] {
        let mut s = vec![0.0f32; n];
        alibi_slopes(&mut s).unwrap();
        let r = alibi_ref(n);
        for (a, b) in s.iter().zip(&r) {
            assert!((*a as f64 - b).abs() <= 1e-7 * b, "n={n}: {a} vs {b}");
        }
    }
    assert_eq!(alibi_slopes(&mut []), Err(Error::ZeroDimension));
}

// ---------------------------------------------------------------------------------------------
// Norms and activations

fn layer_norm_ref(x: &[f32], w: &[f32], b: Option<&[f32]>, d: usize, eps: f64) -> Vec<f64> {
    let mut y = Vec::new();
    for row in x.chunks(d) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / d as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / d as f64;
        for i in 0..d {
            let n = (row[i] as f64 - mean) / (var + eps).sqrt();
            y.push(n * w[i] as f64 + b.map_or(0.0, |b| b[i] as f64));
        }
    }
    y
}

fn rms_norm_ref(x: &[f32], w: &[f32], d: usize, eps: f64) -> Vec<f64> {
    let mut y = Vec::new();
    for row in x.chunks(d) {
        let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / d as f64;
        for i in 0..d {
            y.push(row[i] as f64 / (ms + eps).sqrt() * w[i] as f64);
        }
    }
    y
}

#[test]
fn norms_match_reference() {
    let mut rng = Rng::new(10);
    for (rows, d, eps) in [(1, 1, 1e-5f32), (5, 16, 1e-5), (3, 33, 1e-6), (4, 8, 0.0)] {
        // An offset mean stresses the two-pass variance.
        let x: Vec<f32> = rng.vec(rows * d).iter().map(|v| 3.0 * v + 100.0).collect();
        let w = rng.vec(d);
        let b = rng.vec(d);
        let r = layer_norm_ref(&x, &w, Some(&b), d, eps as f64);
        let mut y = vec![0.0f32; x.len()];
        layer_norm(&x, &w, Some(&b), &mut y, d, eps).unwrap();
        let tol = if d == 1 { 1e-6 } else { 2e-5 };
        assert_close(&y, &r, tol, "layer_norm");
        let mut z = x.clone();
        layer_norm_in_place(&mut z, &w, Some(&b), d, eps).unwrap();
        assert_eq!(y, z);

        // x = LN(x + residual)
        let res = rng.vec(rows * d);
        let sum: Vec<f32> = x.iter().zip(&res).map(|(a, b)| a + b).collect();
        let mut z = x.clone();
        add_layer_norm(&mut z, &res, &w, Some(&b), d, eps).unwrap();
        assert_close(
            &z,
            &layer_norm_ref(&sum, &w, Some(&b), d, eps as f64),
            tol,
            "add_ln",
        );

        let x = rng.vec(rows * d);
        let r = rms_norm_ref(&x, &w, d, eps as f64);
        rms_norm(&x, &w, &mut y, d, eps).unwrap();
        assert_close(&y, &r, 1e-6, "rms_norm");
        let mut z = x.clone();
        rms_norm_in_place(&mut z, &w, d, eps).unwrap();
        assert_eq!(y, z);
    }
}

#[test]
fn norms_of_constant_rows_and_f16() {
    // A constant row with eps = 0: zeros plus the bias, not NaN.
    let x = [2.0f32; 4];
    let mut y = [9.0f32; 4];
    layer_norm(&x, &[1.0f32; 4], Some(&[0.5; 4]), &mut y, 4, 0.0).unwrap();
    assert_eq!(y, [0.5; 4]);
    rms_norm(&[0.0f32; 4], &[1.0f32; 4], &mut y, 4, 0.0).unwrap();
    assert_eq!(y, [0.0; 4]);

    // f16 activations with f32 weights and with f16 weights.
    let mut rng = Rng::new(11);
    let xf = rng.vec(24);
    let w = rng.vec(8);
    let x: Vec<f16> = xf.iter().map(|&v| f16::from_f32(v)).collect();
    let x16: Vec<f32> = x.iter().map(|v| v.to_f32()).collect();
    let r = layer_norm_ref(&x16, &w, None, 8, 1e-5);
    let mut y = vec![f16::ZERO; 24];
    layer_norm(&x, &w, None, &mut y, 8, 1e-5).unwrap();
    let yf: Vec<f32> = y.iter().map(|v| v.to_f32()).collect();
    assert_close(&yf, &r, 1e-3, "layer_norm f16");
    let wh: Vec<f16> = w.iter().map(|&v| f16::from_f32(v)).collect();
    let w16: Vec<f32> = wh.iter().map(|v| v.to_f32()).collect();
    rms_norm(&x, &wh, &mut y, 8, 1e-5).unwrap();
    let yf: Vec<f32> = y.iter().map(|v| v.to_f32()).collect();
    assert_close(&yf, &rms_norm_ref(&x16, &w16, 8, 1e-5), 1e-3, "rms f16");
}

#[test]
fn norm_errors() {
    let x = [0.0f32; 12];
    let mut y = [0.0f32; 12];
    let w = [1.0f32; 4];
    assert_eq!(
        layer_norm(&x, &w, None, &mut y, 0, 1e-5),
        Err(Error::ZeroDimension)
    );
    assert_eq!(
        layer_norm::<f32, f32>(&[], &w, None, &mut [], 4, 1e-5),
        Err(Error::ZeroDimension)
    );
    assert!(matches!(
        layer_norm(&x[..10], &w, None, &mut y[..10], 4, 1e-5),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        layer_norm(&x, &w, None, &mut y[..8], 4, 1e-5),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        layer_norm(&x, &w, Some(&[0.0; 3]), &mut y, 4, 1e-5),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        rms_norm(&x, &w[..3], &mut y, 4, 1e-5),
        Err(Error::LengthMismatch { .. })
    ));
    for eps in [-1e-5, f32::NAN, f32::INFINITY] {
        assert_eq!(
            layer_norm(&x, &w, None, &mut y, 4, eps),
            Err(Error::InvalidScale)
        );
        assert_eq!(
            rms_norm_in_place(&mut y, &w, 4, eps),
            Err(Error::InvalidScale)
        );
    }
    let mut z = [0.0f32; 12];
    assert!(matches!(
        add_layer_norm(&mut z, &x[..8], &w, None, 4, 1e-5),
        Err(Error::LengthMismatch { .. })
    ));
}

fn act_ref(a: Activation, x: f64) -> f64 {
    match a {
        Activation::Relu => x.max(0.0),
        Activation::Gelu => 0.5 * x * (1.0 + libm::erf(x / 2f64.sqrt())),
        Activation::GeluTanh => {
            let k = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (k * (x + 0.044715 * x.powi(3))).tanh())
        }
        Activation::Silu => x / (1.0 + (-x).exp()),
    }
}

const ACTIVATIONS: [Activation; 4] = [
    Activation::Relu,
    Activation::Gelu,
    Activation::GeluTanh,
    Activation::Silu,
];

#[test]
fn activations_match_reference_and_stay_finite() {
    for a in ACTIVATIONS {
        for i in -2000..=2000 {
            let x = i as f32 * 0.005; // [-10, 10]
            let (y, r) = (a.apply(x) as f64, act_ref(a, x as f64));
            // Relative accuracy in the tails, where erfc and e^x amplify the f32 rounding of
            // their argument by about x²: 1 + x² ulp.
            let tol = 2.4e-7 * (1.0 + (x * x) as f64) * r.abs();
            assert!((y - r).abs() <= tol.max(1e-12), "{a:?}({x}) = {y} vs {r}");
        }
        for x in [-f32::MAX, -1e30, -100.0, 100.0, 1e30, f32::MAX] {
            let y = a.apply(x);
            assert!(y.is_finite(), "{a:?}({x}) = {y}");
            let r = act_ref(a, x as f64);
            assert!(
                (y as f64 - r).abs() <= 1e-6 * r.abs().max(1e-30),
                "{a:?}({x})"
            );
        }
    }
    let mut v = [f16::from_f32(-1.0), f16::from_f32(1.0)];
    Activation::Silu.apply_in_place(&mut v);
    assert_eq!(v[1], f16::from_f32(act_ref(Activation::Silu, 1.0) as f32));
    // Softplus: ln(1 + e^x), and x beyond the threshold.
    for x in [-30.0f32, -1.0, 0.0, 0.5, 19.0, 25.0, 1e30] {
        let r = if x > 20.0 {
            x as f64
        } else {
            (x as f64).exp().ln_1p()
        };
        assert!(
            (softplus(x) as f64 - r).abs() <= 1e-6 * r.abs(),
            "softplus({x})"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Feed-forward networks

/// `x [rows, in] W^T [out, in] + b`.
fn linear_ref(x: &[f64], w: &[f32], b: Option<&[f32]>, n_in: usize, n_out: usize) -> Vec<f64> {
    let mut y = Vec::new();
    for row in x.chunks(n_in) {
        for o in 0..n_out {
            let dot: f64 = (0..n_in).map(|i| row[i] * w[o * n_in + i] as f64).sum();
            y.push(dot + b.map_or(0.0, |b| b[o] as f64));
        }
    }
    y
}

fn to64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}

fn ffn_ref(x: &[f32], w: &FfnWeights<'_>, a: Activation, d: usize, f: usize) -> Vec<f64> {
    let h: Vec<f64> = linear_ref(&to64(x), w.w1, w.b1, d, f)
        .into_iter()
        .map(|v| act_ref(a, v))
        .collect();
    linear_ref(&h, w.w2, w.b2, f, d)
}

fn gated_ref(x: &[f32], w: &GatedFfnWeights<'_>, a: Activation, d: usize, f: usize) -> Vec<f64> {
    let g = linear_ref(&to64(x), w.gate, None, d, f);
    let u = linear_ref(&to64(x), w.up, None, d, f);
    let h: Vec<f64> = g.iter().zip(&u).map(|(&g, &u)| act_ref(a, g) * u).collect();
    linear_ref(&h, w.down, None, f, d)
}

fn round16(x: &[f32]) -> (Vec<f16>, Vec<f32>) {
    let h: Vec<f16> = x.iter().map(|&v| f16::from_f32(v)).collect();
    let back = h.iter().map(|v| v.to_f32()).collect();
    (h, back)
}

#[test]
fn ffn_matches_reference_for_any_scratch() {
    let mut rng = Rng::new(20);
    let (rows, d, f) = (7, 12, 20);
    let (w1, b1, w2, b2) = (rng.vec(f * d), rng.vec(f), rng.vec(d * f), rng.vec(d));
    let weights = FfnWeights {
        w1: &w1,
        b1: Some(&b1),
        w2: &w2,
        b2: Some(&b2),
    };
    let x = rng.vec(rows * d);
    let shape = FfnShape::new(rows, d, f);
    for a in ACTIVATIONS {
        let r = ffn_ref(&x, &weights, a, d, f);
        // One row per block, blocks of 3 (a ragged last block), all rows at once.
        for scratch_rows in [1, 3, 7, 10] {
            let mut scratch = vec![0.0f32; ffn_scratch_len(shape) * scratch_rows + 1];
            let mut y = vec![0.0f32; rows * d];
            ffn(&x, &weights, a, &mut y, shape, &mut scratch).unwrap();
            assert_close(&y, &r, 1e-6, &format!("ffn {a:?} {scratch_rows}"));
            let mut z = x.clone();
            ffn_in_place(&mut z, &weights, a, shape, &mut scratch).unwrap();
            assert_eq!(y, z);
        }
    }
    // No biases.
    let nb = FfnWeights {
        b1: None,
        b2: None,
        ..weights
    };
    let mut y = vec![0.0f32; rows * d];
    let mut scratch = vec![0.0f32; f];
    ffn(&x, &nb, Activation::Gelu, &mut y, shape, &mut scratch).unwrap();
    assert_close(
        &y,
        &ffn_ref(&x, &nb, Activation::Gelu, d, f),
        1e-6,
        "no bias",
    );

    // f16 storage: compare with the reference on the same rounded values.
    let ((w1h, w1r), (b1h, b1r), (w2h, w2r), (b2h, b2r), (xh, xr)) = (
        round16(&w1),
        round16(&b1),
        round16(&w2),
        round16(&b2),
        round16(&x),
    );
    let wh = FfnWeights {
        w1: &w1h[..],
        b1: Some(&b1h[..]),
        w2: &w2h[..],
        b2: Some(&b2h[..]),
    };
    let wr = FfnWeights {
        w1: &w1r,
        b1: Some(&b1r),
        w2: &w2r,
        b2: Some(&b2r),
    };
    let mut yh = vec![f16::ZERO; rows * d];
    ffn(&xh, &wh, Activation::Gelu, &mut yh, shape, &mut scratch).unwrap();
    let yf: Vec<f32> = yh.iter().map(|v| v.to_f32()).collect();
    assert_close(
        &yf,
        &ffn_ref(&xr, &wr, Activation::Gelu, d, f),
        1e-3,
        "ffn f16",
    );
}

#[test]
fn gated_ffn_matches_reference() {
    let mut rng = Rng::new(21);
    let (rows, d, f) = (5, 8, 24);
    let (g, u, dn) = (rng.vec(f * d), rng.vec(f * d), rng.vec(d * f));
    let weights = GatedFfnWeights {
        gate: &g,
        up: &u,
        down: &dn,
    };
    let shape = FfnShape::new(rows, d, f);
    let x = rng.vec(rows * d);
    for a in [Activation::Silu, Activation::Gelu] {
        let r = gated_ref(&x, &weights, a, d, f);
        for scratch_rows in [1, 2, 5] {
            let mut scratch = vec![0.0f32; gated_ffn_scratch_len(shape) * scratch_rows];
            let mut y = vec![0.0f32; rows * d];
            gated_ffn(&x, &weights, a, &mut y, shape, &mut scratch).unwrap();
            assert_close(&y, &r, 1e-6, "gated");
            let mut z = x.clone();
            gated_ffn_in_place(&mut z, &weights, a, shape, &mut scratch).unwrap();
            assert_eq!(y, z);
        }
    }
}

#[test]
fn ffn_errors() {
    let (d, f) = (4, 6);
    let w1 = [0.0f32; 24];
    let weights = FfnWeights {
        w1: &w1,
        b1: None,
        w2: &w1,
        b2: None,
    };
    let shape = FfnShape::new(2, d, f);
    let x = [0.0f32; 8];
    let mut y = [0.0f32; 8];
    let mut scratch = [0.0f32; 6];
    let relu = Activation::Relu;
    assert!(matches!(
        ffn(&x, &weights, relu, &mut y, shape, &mut scratch[..5]),
        Err(Error::ScratchTooSmall {
            needed: 6,
            found: 5
        })
    ));
    assert_eq!(
        ffn(
            &x,
            &weights,
            relu,
            &mut y,
            FfnShape::new(2, d, 0),
            &mut scratch
        ),
        Err(Error::ZeroDimension)
    );
    assert!(matches!(
        ffn(&x[..7], &weights, relu, &mut y, shape, &mut scratch),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        ffn(&x, &weights, relu, &mut y[..4], shape, &mut scratch),
        Err(Error::LengthMismatch { .. })
    ));
    let bad = FfnWeights {
        b2: Some(&w1[..3]),
        ..weights
    };
    assert!(matches!(
        ffn(&x, &bad, relu, &mut y, shape, &mut scratch),
        Err(Error::LengthMismatch { .. })
    ));
    let gated = GatedFfnWeights {
        gate: &w1,
        up: &w1[..20],
        down: &w1,
    };
    let mut big = [0.0f32; 12];
    assert!(matches!(
        gated_ffn(&x, &gated, relu, &mut y, shape, &mut big),
        Err(Error::LengthMismatch { .. })
    ));
    let gated = GatedFfnWeights { up: &w1, ..gated };
    assert!(matches!(
        gated_ffn(&x, &gated, relu, &mut y, shape, &mut scratch),
        Err(Error::ScratchTooSmall { needed: 12, .. })
    ));
    assert_eq!(
        ffn(
            &x,
            &weights,
            relu,
            &mut y,
            FfnShape::new(usize::MAX, 2, 3),
            &mut scratch
        ),
        Err(Error::ShapeOverflow)
    );
}

// ---------------------------------------------------------------------------------------------
// Graph attention

/// `GATConv` from its definition: edges `(source, target)`, optional self-loop replacement,
/// per-target softmax of LeakyReLU scores, heads concatenated or averaged, bias.
#[allow(clippy::too_many_arguments)]
fn gat_ref(
    x: &[f32],
    edges: &[(usize, usize)],
    w: &GatWeights<'_>,
    n: usize,
    fin: usize,
    f: usize,
    h: usize,
    p: &GatParams,
) -> Vec<f64> {
    let xp = linear_ref(&to64(x), w.lin_weight, None, fin, h * f); // [n, h*f]
    let mut list: Vec<(usize, usize)> = edges.to_vec();
    if p.add_self_loops {
        list.retain(|&(s, t)| s != t);
        list.extend((0..n).map(|i| (i, i)));
    }
    let att = |v: &[f32], node: usize, head: usize| -> f64 {
        (0..f)
            .map(|k| xp[node * h * f + head * f + k] * v[head * f + k] as f64)
            .sum()
    };
    let out_f = if p.concat { h * f } else { f };
    let mut out = vec![0.0f64; n * out_f];
    for i in 0..n {
        for head in 0..h {
            let incoming: Vec<usize> = list.iter().filter(|e| e.1 == i).map(|e| e.0).collect();
            let scores: Vec<f64> = incoming
                .iter()
                .map(|&j| {
                    let e = att(w.att_src, j, head) + att(w.att_dst, i, head);
                    if e > 0.0 {
                        e
                    } else {
                        p.negative_slope as f64 * e
                    }
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = scores.iter().map(|s| (s - m).exp()).sum();
            for k in 0..f {
                let v: f64 = incoming
                    .iter()
                    .zip(&scores)
                    .map(|(&j, s)| (s - m).exp() / z * xp[j * h * f + head * f + k])
                    .sum();
                if p.concat {
                    out[i * out_f + head * f + k] += v;
                } else {
                    out[i * out_f + k] += v / h as f64;
                }
            }
        }
        for k in 0..out_f {
            out[i * out_f + k] += w.bias.map_or(0.0, |b| b[k] as f64);
        }
    }
    out
}

fn coo<I: From<u8>>(edges: &[(usize, usize)]) -> Vec<I> {
    let s = edges.iter().map(|e| I::from(e.0 as u8));
    let t = edges.iter().map(|e| I::from(e.1 as u8));
    s.chain(t).collect()
}

#[test]
fn gat_matches_reference() {
    let mut rng = Rng::new(30);
    let (n, fin) = (9, 5);
    // Node 8 has no incoming edge; 2→2 and 5→5 are listed self loops; 0→3 is repeated.
    let edges = [
        (0, 1),
        (1, 2),
        (2, 2),
        (3, 0),
        (0, 3),
        (0, 3),
        (4, 3),
        (5, 5),
        (6, 4),
        (7, 6),
        (8, 7),
        (1, 0),
        (2, 6),
        (3, 5),
    ];
    for (h, f, concat, loops, bias) in [
        (2, 4, true, true, true),
        (3, 3, false, false, true),
        (1, 6, true, false, false),
        (4, 2, false, true, false),
    ] {
        let lin = rng.vec(h * f * fin);
        let (a_src, a_dst) = (rng.vec(h * f), rng.vec(h * f));
        let out_f = if concat { h * f } else { f };
        let b = rng.vec(out_f);
        let weights = GatWeights {
            lin_weight: &lin,
            att_src: &a_src,
            att_dst: &a_dst,
            bias: bias.then_some(&b[..]),
        };
        let params = GatParams {
            concat,
            negative_slope: 0.15,
            add_self_loops: loops,
        };
        let shape = GatShape::new(n, fin, f, h);
        let x: Vec<f32> = rng.vec(n * fin).iter().map(|v| 2.0 * v).collect();
        let r = gat_ref(&x, &edges, &weights, n, fin, f, h, &params);
        let mut scratch = vec![0.0f32; gat_scratch_len(shape)];
        let mut out = vec![0.0f32; n * out_f];
        gat(
            &x,
            &coo::<u16>(&edges),
            &weights,
            &mut out,
            shape,
            &params,
            &mut scratch,
        )
        .unwrap();
        assert_close(
            &out,
            &r,
            1e-6,
            &format!("gat h{h} concat {concat} loops {loops}"),
        );
        // The same through i32 and usize indices.
        let mut out2 = vec![0.0f32; n * out_f];
        let idx: Vec<i32> = coo::<u16>(&edges).iter().map(|&v| v as i32).collect();
        gat(&x, &idx, &weights, &mut out2, shape, &params, &mut scratch).unwrap();
        assert_eq!(out, out2);
        if !loops {
            // Node 8 has no incoming edge: only the bias.
            let row = &out[8 * out_f..][..out_f];
            let expect: Vec<f32> = (0..out_f).map(|k| if bias { b[k] } else { 0.0 }).collect();
            assert_eq!(row, &expect[..]);
        }
    }
}

#[test]
fn gat_without_edges_and_f16() {
    let mut rng = Rng::new(31);
    let (n, fin, f, h) = (4, 3, 2, 2);
    let lin = rng.vec(h * f * fin);
    let (a_src, a_dst, b) = (rng.vec(h * f), rng.vec(h * f), rng.vec(h * f));
    let weights = GatWeights {
        lin_weight: &lin,
        att_src: &a_src,
        att_dst: &a_dst,
        bias: Some(&b),
    };
    let shape = GatShape::new(n, fin, f, h);
    let x = rng.vec(n * fin);
    let mut scratch = vec![0.0f32; gat_scratch_len(shape)];
    let mut out = vec![0.0f32; n * h * f];
    // No edges, no self loops: every node gets the bias.
    let no_loops = GatParams {
        add_self_loops: false,
        ..GatParams::default()
    };
    gat(
        &x,
        &[] as &[u32],
        &weights,
        &mut out,
        shape,
        &no_loops,
        &mut scratch,
    )
    .unwrap();
    for row in out.chunks(h * f) {
        assert_eq!(row, &b[..]);
    }
    // No edges with self loops: each node attends to itself only, out = x' + b.
    gat(
        &x,
        &[] as &[u32],
        &weights,
        &mut out,
        shape,
        &GatParams::default(),
        &mut scratch,
    )
    .unwrap();
    let xp = linear_ref(&to64(&x), &lin, Some(&b), fin, h * f);
    assert_close(&out, &xp, 1e-6, "self loops only");

    // f16 storage against the reference on the rounded values.
    let edges = [(0, 1), (1, 2), (2, 3), (3, 0), (1, 3)];
    let ((linh, linr), (ash, asr), (adh, adr), (bh, br), (xh, xr)) = (
        round16(&lin),
        round16(&a_src),
        round16(&a_dst),
        round16(&b),
        round16(&x),
    );
    let wh = GatWeights {
        lin_weight: &linh[..],
        att_src: &ash[..],
        att_dst: &adh[..],
        bias: Some(&bh[..]),
    };
    let wr = GatWeights {
        lin_weight: &linr[..],
        att_src: &asr[..],
        att_dst: &adr[..],
        bias: Some(&br[..]),
    };
    let p = GatParams::default();
    let mut outh = vec![f16::ZERO; n * h * f];
    gat(
        &xh,
        &coo::<u32>(&edges),
        &wh,
        &mut outh,
        shape,
        &p,
        &mut scratch,
    )
    .unwrap();
    let y: Vec<f32> = outh.iter().map(|v| v.to_f32()).collect();
    assert_close(
        &y,
        &gat_ref(&xr, &edges, &wr, n, fin, f, h, &p),
        2e-3,
        "gat f16",
    );
}

#[test]
fn gat_errors() {
    let shape = GatShape::new(3, 2, 2, 1);
    let w = [0.5f32; 4];
    let weights = GatWeights {
        lin_weight: &w,
        att_src: &w[..2],
        att_dst: &w[..2],
        bias: None,
    };
    let x = [1.0f32; 6];
    let mut out = [0.0f32; 6];
    let mut scratch = vec![0.0f32; gat_scratch_len(shape)];
    let p = GatParams::default();
    let run = |edges: &[i32], out: &mut [f32], scratch: &mut [f32], shape, p: &GatParams| {
        gat(&x, edges, &weights, out, shape, p, scratch)
    };
    assert_eq!(
        run(&[0, 3], &mut out, &mut scratch, shape, &p),
        Err(Error::InvalidParameter)
    );
    assert_eq!(
        run(&[-1, 0], &mut out, &mut scratch, shape, &p),
        Err(Error::InvalidParameter)
    );
    assert!(matches!(
        run(&[0, 1, 2], &mut out, &mut scratch, shape, &p),
        Err(Error::LengthMismatch { .. })
    ));
    let short = gat_scratch_len(shape) - 1;
    assert!(matches!(
        run(&[0, 1], &mut out, &mut scratch[..short], shape, &p),
        Err(Error::ScratchTooSmall { .. })
    ));
    assert!(matches!(
        run(&[0, 1], &mut out[..4], &mut scratch, shape, &p),
        Err(Error::LengthMismatch { .. })
    ));
    let nan = GatParams {
        negative_slope: f32::NAN,
        ..p
    };
    assert_eq!(
        run(&[0, 1], &mut out, &mut scratch, shape, &nan),
        Err(Error::InvalidParameter)
    );
    assert_eq!(
        run(
            &[0, 1],
            &mut out,
            &mut scratch,
            GatShape::new(3, 2, 2, 0),
            &p
        ),
        Err(Error::ZeroDimension)
    );
    // Mean over heads needs a bias of F, not H*F.
    let bad_bias = GatWeights {
        bias: Some(&w),
        ..weights
    };
    let mean = GatParams { concat: false, ..p };
    assert!(matches!(
        gat(
            &x,
            &[0i32, 1],
            &bad_bias,
            &mut out,
            shape,
            &mean,
            &mut scratch
        ),
        Err(Error::LengthMismatch { .. })
    ));
    // Nothing was written by any failing call.
    assert_eq!(out, [0.0; 6]);
}

// ---------------------------------------------------------------------------------------------
// ViT patch embedding

/// The stride-P convolution, class token and position embedding from the definition.
fn vit_ref(
    img: &[f32],
    w: &PatchEmbedWeights<'_>,
    (c, hh, ww, p, e): (usize, usize, usize, usize, usize),
) -> Vec<f64> {
    let mut out = Vec::new();
    if let Some(cls) = w.cls_token {
        out.extend(cls.iter().map(|&v| v as f64));
    }
    for gy in 0..hh / p {
        for gx in 0..ww / p {
            for o in 0..e {
                let mut acc = w.patch_bias.map_or(0.0, |b| b[o] as f64);
                for ch in 0..c {
                    for ky in 0..p {
                        for kx in 0..p {
                            let wv = w.patch_weight[((o * c + ch) * p + ky) * p + kx] as f64;
                            let iv = img[(ch * hh + gy * p + ky) * ww + gx * p + kx] as f64;
                            acc += wv * iv;
                        }
                    }
                }
                out.push(acc);
            }
        }
    }
    if let Some(pos) = w.pos_embed {
        for (o, &p) in out.iter_mut().zip(pos) {
            *o += p as f64;
        }
    }
    out
}

#[test]
fn vit_patch_embed_matches_convolution() {
    let mut rng = Rng::new(40);
    // Square, non-square, and an image whose last rows/columns are cropped (10 / 4 = 2).
    for (c, hh, ww, p, e, cls) in [
        (3, 8, 8, 4, 12, true),
        (1, 6, 9, 3, 5, true),
        (2, 10, 11, 4, 7, false),
        (3, 4, 4, 4, 8, true),
    ] {
        let shape = PatchShape::new(c, hh, ww, p, e);
        let np = (hh / p) * (ww / p);
        assert_eq!(shape.patches(), np);
        let rows = np + usize::from(cls);
        let (pw, pb, ct, pe) = (
            rng.vec(e * c * p * p),
            rng.vec(e),
            rng.vec(e),
            rng.vec(rows * e),
        );
        let weights = PatchEmbedWeights {
            patch_weight: &pw,
            patch_bias: Some(&pb),
            cls_token: cls.then_some(&ct[..]),
            pos_embed: Some(&pe),
        };
        let img = rng.vec(c * hh * ww);
        let r = vit_ref(&img, &weights, (c, hh, ww, p, e));
        let mut out = vec![0.0f32; rows * e];
        let mut scratch = vec![0.0f32; patch_embed_scratch_len(shape)];
        patch_embed(&img, &weights, &mut out, shape, &mut scratch).unwrap();
        assert_close(&out, &r, 1e-6, &format!("vit {c}x{hh}x{ww} p{p}"));

        let ((pwh, pwr), (pbh, pbr), (cth, ctr), (peh, per), (imh, imr)) = (
            round16(&pw),
            round16(&pb),
            round16(&ct),
            round16(&pe),
            round16(&img),
        );
        let wh = PatchEmbedWeights {
            patch_weight: &pwh[..],
            patch_bias: Some(&pbh[..]),
            cls_token: cls.then_some(&cth[..]),
            pos_embed: Some(&peh[..]),
        };
        let wr = PatchEmbedWeights {
            patch_weight: &pwr[..],
            patch_bias: Some(&pbr[..]),
            cls_token: cls.then_some(&ctr[..]),
            pos_embed: Some(&per[..]),
        };
        let mut outh = vec![f16::ZERO; rows * e];
        patch_embed(&imh, &wh, &mut outh, shape, &mut scratch).unwrap();
        let y: Vec<f32> = outh.iter().map(|v| v.to_f32()).collect();
        assert_close(&y, &vit_ref(&imr, &wr, (c, hh, ww, p, e)), 1e-3, "vit f16");
    }
}

#[test]
fn vit_errors() {
    let shape = PatchShape::new(1, 4, 4, 2, 3);
    let w = [0.0f32; 12];
    let weights = PatchEmbedWeights {
        patch_weight: &w,
        patch_bias: None,
        cls_token: Some(&w[..3]),
        pos_embed: None,
    };
    let img = [0.0f32; 16];
    let mut out = [0.0f32; 15];
    let mut scratch = [0.0f32; 7];
    assert_eq!(
        patch_embed(
            &img,
            &weights,
            &mut out,
            PatchShape::new(1, 4, 4, 5, 3),
            &mut scratch
        ),
        Err(Error::ZeroDimension)
    );
    assert_eq!(
        patch_embed(
            &img,
            &weights,
            &mut out,
            PatchShape::new(1, 4, 4, 0, 3),
            &mut scratch
        ),
        Err(Error::ZeroDimension)
    );
    assert!(matches!(
        patch_embed(&img[..15], &weights, &mut out, shape, &mut scratch),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        patch_embed(&img, &weights, &mut out[..12], shape, &mut scratch),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        patch_embed(&img, &weights, &mut out, shape, &mut scratch[..6]),
        Err(Error::ScratchTooSmall { needed: 7, .. })
    ));
    let bad_pos = PatchEmbedWeights {
        pos_embed: Some(&w),
        ..weights
    };
    assert!(matches!(
        patch_embed(&img, &bad_pos, &mut out, shape, &mut scratch),
        Err(Error::LengthMismatch { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Selective scan

struct ScanCase {
    l: usize,
    d: usize,
    n: usize,
    u: Vec<f32>,
    delta: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
    dd: Vec<f32>,
    z: Option<Vec<f32>>,
    bias: Option<Vec<f32>>,
    softplus: bool,
}

fn scan_case(rng: &mut Rng, l: usize, d: usize, n: usize, gated: bool, softplus: bool) -> ScanCase {
    ScanCase {
        l,
        d,
        n,
        u: rng.vec(l * d),
        delta: rng.vec(l * d).iter().map(|v| 0.5 * v + 0.3).collect(),
        a: rng.vec(d * n).iter().map(|v| -(1.5 * v + 1.6)).collect(),
        b: rng.vec(l * n),
        c: rng.vec(l * n),
        dd: rng.vec(d),
        z: gated.then(|| rng.vec(l * d)),
        bias: softplus.then(|| rng.vec(d)),
        softplus,
    }
}

/// Mamba's `selective_scan_ref` from the definition, in f64.
fn scan_ref(s: &ScanCase) -> Vec<f64> {
    let (d, n) = (s.d, s.n);
    let mut x = vec![0.0f64; d * n];
    let mut y = vec![0.0f64; s.l * d];
    for t in 0..s.l {
        for ch in 0..d {
            let mut dt = s.delta[t * d + ch] as f64 + s.bias.as_ref().map_or(0.0, |b| b[ch] as f64);
            if s.softplus {
                dt = if dt > 20.0 { dt } else { dt.exp().ln_1p() };
            }
            let u = s.u[t * d + ch] as f64;
            let mut acc = 0.0;
            for k in 0..n {
                let xi = &mut x[ch * n + k];
                *xi = (dt * s.a[ch * n + k] as f64).exp() * *xi + dt * u * s.b[t * n + k] as f64;
                acc += *xi * s.c[t * n + k] as f64;
            }
            acc += s.dd[ch] as f64 * u;
            if let Some(z) = &s.z {
                let z = z[t * d + ch] as f64;
                acc *= z / (1.0 + (-z).exp());
            }
            y[t * d + ch] = acc;
        }
    }
    y
}

impl ScanCase {
    fn weights(&self) -> ScanWeights<'_> {
        ScanWeights {
            a: &self.a,
            d: Some(&self.dd),
            delta_bias: self.bias.as_deref(),
            delta_softplus: self.softplus,
        }
    }
    fn seq(&self, from: usize, to: usize) -> ScanSequence<'_> {
        let (d, n) = (self.d, self.n);
        ScanSequence {
            u: &self.u[from * d..to * d],
            delta: &self.delta[from * d..to * d],
            b: &self.b[from * n..to * n],
            c: &self.c[from * n..to * n],
            z: self.z.as_ref().map(|z| &z[from * d..to * d]),
        }
    }
}

#[test]
fn selective_scan_matches_reference_whole_chunked_and_stepwise() {
    let mut rng = Rng::new(50);
    for (l, d, n, gated, softplus) in [
        (16, 8, 4, false, false),
        (24, 6, 8, true, true),
        (40, 3, 16, true, false),
    ] {
        let s = scan_case(&mut rng, l, d, n, gated, softplus);
        let r = scan_ref(&s);
        let shape = ScanShape::new(d, n);
        let mut state = vec![0.0f32; scan_state_len(shape)];
        let mut y = vec![0.0f32; l * d];
        selective_scan(&mut state, &s.weights(), &s.seq(0, l), &mut y, shape).unwrap();
        assert_close(&y, &r, 1e-6, &format!("scan l{l} d{d} n{n}"));
        let final_state = state.clone();

        // Two chunks continue from the state.
        state.fill(0.0);
        let mut y2 = vec![0.0f32; l * d];
        let cut = l / 3;
        let (first, second) = y2.split_at_mut(cut * d);
        selective_scan(&mut state, &s.weights(), &s.seq(0, cut), first, shape).unwrap();
        selective_scan(&mut state, &s.weights(), &s.seq(cut, l), second, shape).unwrap();
        assert_eq!(y, y2);
        assert_eq!(state, final_state);

        // Token by token.
        state.fill(0.0);
        for t in 0..l {
            let seq = s.seq(t, t + 1);
            let token = ScanToken {
                u: seq.u,
                delta: seq.delta,
                b: seq.b,
                c: seq.c,
                z: seq.z,
            };
            let mut y_t = vec![0.0f32; d];
            selective_scan_step(&mut state, &s.weights(), &token, &mut y_t, shape).unwrap();
            assert_eq!(&y_t[..], &y[t * d..][..d]);
        }
    }
}

#[test]
fn scan_state_fixed_tier_and_f16() {
    let mut rng = Rng::new(51);
    let s = scan_case(&mut rng, 10, 4, 3, true, true);
    let mut state = ScanState::<4, 3>::new();
    let mut y = Vec::new();
    for t in 0..s.l {
        let arr = |v: &[f32], w: usize| -> Vec<f32> { v[t * w..][..w].to_vec() };
        let (u, dl, b, c, z) = (
            arr(&s.u, 4),
            arr(&s.delta, 4),
            arr(&s.b, 3),
            arr(&s.c, 3),
            arr(s.z.as_ref().unwrap(), 4),
        );
        let y_t = state
            .step(
                &s.weights(),
                u[..].try_into().unwrap(),
                dl[..].try_into().unwrap(),
                b[..].try_into().unwrap(),
                c[..].try_into().unwrap(),
                Some(z[..].try_into().unwrap()),
            )
            .unwrap();
        y.extend_from_slice(&y_t);
    }
    assert_close(&y, &scan_ref(&s), 1e-6, "ScanState");
    state.reset();
    assert_eq!(state.values(), &[[0.0; 3]; 4]);

    // f16 storage, reference on the rounded values.
    let r16 = |v: &[f32]| round16(v);
    let (uh, ur) = r16(&s.u);
    let (dh, dr) = r16(&s.delta);
    let (ah, ar) = r16(&s.a);
    let (bh, br) = r16(&s.b);
    let (ch, cr) = r16(&s.c);
    let (ddh, ddr) = r16(&s.dd);
    let (zh, zr) = r16(s.z.as_ref().unwrap());
    let (biash, biasr) = r16(s.bias.as_ref().unwrap());
    let rounded = ScanCase {
        u: ur,
        delta: dr,
        a: ar,
        b: br,
        c: cr,
        dd: ddr,
        z: Some(zr),
        bias: Some(biasr),
        ..s
    };
    let weights = ScanWeights {
        a: &ah[..],
        d: Some(&ddh[..]),
        delta_bias: Some(&biash[..]),
        delta_softplus: true,
    };
    let seq = ScanSequence {
        u: &uh[..],
        delta: &dh[..],
        b: &bh[..],
        c: &ch[..],
        z: Some(&zh[..]),
    };
    let shape = ScanShape::new(4, 3);
    let mut st = vec![0.0f32; 12];
    let mut yh = vec![f16::ZERO; 40];
    selective_scan(&mut st, &weights, &seq, &mut yh, shape).unwrap();
    let y: Vec<f32> = yh.iter().map(|v| v.to_f32()).collect();
    assert_close(&y, &scan_ref(&rounded), 1e-3, "scan f16");
}

#[test]
fn scan_errors() {
    let shape = ScanShape::new(2, 3);
    let a = [0.0f32; 6];
    let weights = ScanWeights {
        a: &a,
        d: None,
        delta_bias: None,
        delta_softplus: false,
    };
    let v = [0.0f32; 12];
    let seq = ScanSequence {
        u: &v[..4],
        delta: &v[..4],
        b: &v[..6],
        c: &v[..6],
        z: None,
    };
    let mut state = [0.0f32; 6];
    let mut y = [0.0f32; 4];
    assert!(selective_scan(&mut state, &weights, &seq, &mut y, shape).is_ok());
    assert_eq!(
        selective_scan(&mut state, &weights, &seq, &mut y, ScanShape::new(0, 3)),
        Err(Error::ZeroDimension)
    );
    assert!(matches!(
        selective_scan(&mut state[..5], &weights, &seq, &mut y, shape),
        Err(Error::LengthMismatch { .. })
    ));
    let bad = ScanSequence { c: &v[..5], ..seq };
    assert!(matches!(
        selective_scan(&mut state, &weights, &bad, &mut y, shape),
        Err(Error::LengthMismatch { .. })
    ));
    let bad = ScanSequence {
        z: Some(&v[..3]),
        ..seq
    };
    assert!(matches!(
        selective_scan(&mut state, &weights, &bad, &mut y, shape),
        Err(Error::LengthMismatch { .. })
    ));
    let empty = ScanSequence {
        u: &[],
        delta: &[],
        b: &[],
        c: &[],
        z: None,
    };
    assert_eq!(
        selective_scan(&mut state, &weights, &empty, &mut [], shape),
        Err(Error::ZeroDimension)
    );
    let bad_w = ScanWeights {
        d: Some(&a[..3]),
        ..weights
    };
    let token = ScanToken {
        u: &v[..2],
        delta: &v[..2],
        b: &v[..3],
        c: &v[..3],
        z: None,
    };
    assert!(matches!(
        selective_scan_step(&mut state, &bad_w, &token, &mut y[..2], shape),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        selective_scan_step(&mut state, &weights, &token, &mut y[..3], shape),
        Err(Error::LengthMismatch { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// Encoder and decoder layers

/// Owned weights of one attention block, `nn.MultiheadAttention` layout.
struct MhaW {
    in_w: Vec<f32>,
    in_b: Vec<f32>,
    out_w: Vec<f32>,
    out_b: Vec<f32>,
}

impl MhaW {
    fn new(rng: &mut Rng, e: usize) -> Self {
        MhaW {
            in_w: rng.vec(3 * e * e),
            in_b: rng.vec(3 * e),
            out_w: rng.vec(e * e),
            out_b: rng.vec(e),
        }
    }
    fn weights(&self) -> MhaWeights<'_> {
        MhaWeights {
            in_proj_weight: &self.in_w,
            in_proj_bias: Some(&self.in_b),
            out_proj_weight: &self.out_w,
            out_proj_bias: Some(&self.out_b),
        }
    }
}

/// Owned weights of a whole layer: attention(s), FFN, norms (3 for a decoder).
struct LayerW {
    attn: Vec<MhaW>,
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
    norms: Vec<(Vec<f32>, Vec<f32>)>,
}

impl LayerW {
    fn new(rng: &mut Rng, e: usize, f: usize, attentions: usize, norms: usize) -> Self {
        LayerW {
            attn: (0..attentions).map(|_| MhaW::new(rng, e)).collect(),
            w1: rng.vec(f * e),
            b1: rng.vec(f),
            w2: rng.vec(e * f),
            b2: rng.vec(e),
            norms: (0..norms)
                .map(|_| {
                    let w = rng.vec(e).iter().map(|v| 1.0 + 0.3 * v).collect();
                    (w, rng.vec(e))
                })
                .collect(),
        }
    }
    fn ffn(&self) -> FfnWeights<'_> {
        FfnWeights {
            w1: &self.w1,
            b1: Some(&self.b1),
            w2: &self.w2,
            b2: Some(&self.b2),
        }
    }
    fn norm(&self, i: usize) -> LayerNormWeights<'_> {
        LayerNormWeights {
            weight: &self.norms[i].0,
            bias: Some(&self.norms[i].1),
        }
    }
    fn encoder(&self) -> EncoderWeights<'_> {
        EncoderWeights {
            self_attn: self.attn[0].weights(),
            ffn: self.ffn(),
            norm1: self.norm(0),
            norm2: self.norm(1),
        }
    }
    fn decoder(&self) -> DecoderWeights<'_> {
        DecoderWeights {
            self_attn: self.attn[0].weights(),
            cross_attn: self.attn[1].weights(),
            ffn: self.ffn(),
            norm1: self.norm(0),
            norm2: self.norm(1),
            norm3: self.norm(2),
        }
    }
    /// The same weights rounded to f16: (f16 copy, f32 values of the rounded copy).
    fn rounded(&self) -> (LayerW16, LayerW) {
        let r = |v: &Vec<f32>| round16(v);
        let attn: Vec<_> = self
            .attn
            .iter()
            .map(|a| (r(&a.in_w), r(&a.in_b), r(&a.out_w), r(&a.out_b)))
            .collect();
        let norms: Vec<_> = self.norms.iter().map(|(w, b)| (r(w), r(b))).collect();
        let (w1, b1, w2, b2) = (r(&self.w1), r(&self.b1), r(&self.w2), r(&self.b2));
        let half = LayerW16 {
            attn: attn
                .iter()
                .map(|a| {
                    [
                        a.0 .0.clone(),
                        a.1 .0.clone(),
                        a.2 .0.clone(),
                        a.3 .0.clone(),
                    ]
                })
                .collect(),
            ffn: [w1.0.clone(), b1.0.clone(), w2.0.clone(), b2.0.clone()],
            norms: norms
                .iter()
                .map(|n| [n.0 .0.clone(), n.1 .0.clone()])
                .collect(),
        };
        let back = LayerW {
            attn: attn
                .into_iter()
                .map(|a| MhaW {
                    in_w: a.0 .1,
                    in_b: a.1 .1,
                    out_w: a.2 .1,
                    out_b: a.3 .1,
                })
                .collect(),
            w1: w1.1,
            b1: b1.1,
            w2: w2.1,
            b2: b2.1,
            norms: norms.into_iter().map(|n| (n.0 .1, n.1 .1)).collect(),
        };
        (half, back)
    }
}

/// f16 copies of a layer's weights.
struct LayerW16 {
    attn: Vec<[Vec<f16>; 4]>,
    ffn: [Vec<f16>; 4],
    norms: Vec<[Vec<f16>; 2]>,
}

impl LayerW16 {
    fn mha(&self, i: usize) -> MhaWeights<'_, f16> {
        let a = &self.attn[i];
        MhaWeights {
            in_proj_weight: &a[0],
            in_proj_bias: Some(&a[1]),
            out_proj_weight: &a[2],
            out_proj_bias: Some(&a[3]),
        }
    }
    fn norm(&self, i: usize) -> LayerNormWeights<'_, f16> {
        LayerNormWeights {
            weight: &self.norms[i][0],
            bias: Some(&self.norms[i][1]),
        }
    }
    fn ffn(&self) -> FfnWeights<'_, f16> {
        FfnWeights {
            w1: &self.ffn[0],
            b1: Some(&self.ffn[1]),
            w2: &self.ffn[2],
            b2: Some(&self.ffn[3]),
        }
    }
}

/// Multi-head attention from the definition; a row with no allowed key attends to nothing.
fn mha_ref(
    q_in: &[f64],
    kv_in: &[f64],
    w: &MhaW,
    e: usize,
    heads: usize,
    allowed: &dyn Fn(usize, usize) -> bool,
) -> Vec<f64> {
    let (lq, lk, hd) = (q_in.len() / e, kv_in.len() / e, e / heads);
    let proj = |x: &[f64], part: usize| {
        linear_ref(
            x,
            &w.in_w[part * e * e..][..e * e],
            Some(&w.in_b[part * e..][..e]),
            e,
            e,
        )
    };
    let (q, k, v) = (proj(q_in, 0), proj(kv_in, 1), proj(kv_in, 2));
    let mut concat = vec![0.0f64; lq * e];
    for h in 0..heads {
        for i in 0..lq {
            let keys: Vec<usize> = (0..lk).filter(|&j| allowed(i, j)).collect();
            let logits: Vec<f64> = keys
                .iter()
                .map(|&j| {
                    (0..hd)
                        .map(|c| q[i * e + h * hd + c] * k[j * e + h * hd + c])
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
            for c in 0..hd {
                concat[i * e + h * hd + c] = keys
                    .iter()
                    .zip(&logits)
                    .map(|(&j, l)| (l - m).exp() / z * v[j * e + h * hd + c])
                    .sum();
            }
        }
    }
    linear_ref(&concat, &w.out_w, Some(&w.out_b), e, e)
}

fn ln64(x: &[f64], w: &[f32], b: &[f32], e: usize, eps: f64) -> Vec<f64> {
    let mut y = Vec::new();
    for row in x.chunks(e) {
        let mean = row.iter().sum::<f64>() / e as f64;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / e as f64;
        for i in 0..e {
            y.push((row[i] - mean) / (var + eps).sqrt() * w[i] as f64 + b[i] as f64);
        }
    }
    y
}

fn ffn64(x: &[f64], lw: &LayerW, act: Activation, e: usize) -> Vec<f64> {
    let f = lw.b1.len();
    let h: Vec<f64> = linear_ref(x, &lw.w1, Some(&lw.b1), e, f)
        .into_iter()
        .map(|v| act_ref(act, v))
        .collect();
    linear_ref(&h, &lw.w2, Some(&lw.b2), f, e)
}

fn add64(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

type Allowed<'a> = &'a dyn Fn(usize, usize) -> bool;

/// `TransformerEncoderLayer.forward` from its definition.
#[allow(clippy::too_many_arguments)]
fn encoder_ref(
    src: &[f32],
    lw: &LayerW,
    e: usize,
    heads: usize,
    act: Activation,
    norm_first: bool,
    eps: f64,
    allowed: Allowed<'_>,
) -> Vec<f64> {
    let x = to64(src);
    let n = |i: usize, v: &[f64]| ln64(v, &lw.norms[i].0, &lw.norms[i].1, e, eps);
    if norm_first {
        let h = n(0, &x);
        let x = add64(&x, &mha_ref(&h, &h, &lw.attn[0], e, heads, allowed));
        add64(&x, &ffn64(&n(1, &x), lw, act, e))
    } else {
        let x = n(
            0,
            &add64(&x, &mha_ref(&x, &x, &lw.attn[0], e, heads, allowed)),
        );
        n(1, &add64(&x, &ffn64(&x, lw, act, e)))
    }
}

/// `TransformerDecoderLayer.forward` from its definition.
#[allow(clippy::too_many_arguments)]
fn decoder_ref(
    tgt: &[f32],
    mem: &[f32],
    lw: &LayerW,
    e: usize,
    heads: usize,
    act: Activation,
    norm_first: bool,
    eps: f64,
    self_allowed: Allowed<'_>,
    mem_allowed: Allowed<'_>,
) -> Vec<f64> {
    let (x, m) = (to64(tgt), to64(mem));
    let n = |i: usize, v: &[f64]| ln64(v, &lw.norms[i].0, &lw.norms[i].1, e, eps);
    if norm_first {
        let h = n(0, &x);
        let x = add64(&x, &mha_ref(&h, &h, &lw.attn[0], e, heads, self_allowed));
        let h = n(1, &x);
        let x = add64(&x, &mha_ref(&h, &m, &lw.attn[1], e, heads, mem_allowed));
        add64(&x, &ffn64(&n(2, &x), lw, act, e))
    } else {
        let x = n(
            0,
            &add64(&x, &mha_ref(&x, &x, &lw.attn[0], e, heads, self_allowed)),
        );
        let x = n(
            1,
            &add64(&x, &mha_ref(&x, &m, &lw.attn[1], e, heads, mem_allowed)),
        );
        n(2, &add64(&x, &ffn64(&x, lw, act, e)))
    }
}

#[test]
fn encoder_layer_matches_reference() {
    let mut rng = Rng::new(60);
    let (len, e, heads, f) = (9, 16, 4, 24);
    let shape = EncoderShape::new(len, e, heads, f);
    let lw = LayerW::new(&mut rng, e, f, 1, 2);
    let src = rng.vec(len * e);
    let padding = [MaskTerm::KeyPadding { valid: 6 }];
    let causal = [MaskTerm::Causal];
    let masks: [(&[MaskTerm<'_>], Allowed<'_>); 3] = [
        (&[], &|_, _| true),
        (&padding, &|_, j| j < 6),
        (&causal, &|i, j| j <= i),
    ];
    for norm_first in [false, true] {
        for act in [Activation::Relu, Activation::Gelu] {
            for (terms, allowed) in &masks {
                let config = LayerConfig {
                    activation: act,
                    norm_first,
                    eps: 1e-5,
                    self_attention: SdpaParams {
                        mask: Mask::new(terms),
                        ..SdpaParams::default()
                    },
                    ..LayerConfig::default()
                };
                let r = encoder_ref(&src, &lw, e, heads, act, norm_first, 1e-5, *allowed);
                // The minimum scratch, and a larger one (bigger FFN blocks) give the same.
                for extra in [0, 1000] {
                    let mut out = vec![0.0f32; len * e];
                    let mut buffer = vec![0.0f32; encoder_buffer_len(shape, norm_first)];
                    let mut scratch = vec![0.0f32; encoder_scratch_len(shape) + extra];
                    encoder_layer(
                        &src,
                        &lw.encoder(),
                        &mut out,
                        shape,
                        &config,
                        &mut buffer,
                        &mut scratch,
                    )
                    .unwrap();
                    let what = format!("encoder pre {norm_first} {act:?} mask {terms:?}");
                    assert_close(&out, &r, 2e-6, &what);
                }
            }
        }
    }
}

#[test]
fn decoder_layer_matches_reference() {
    let mut rng = Rng::new(61);
    let (lt, ls, e, heads, f) = (7, 11, 12, 3, 20);
    let shape = DecoderShape::new(lt, ls, e, heads, f);
    let lw = LayerW::new(&mut rng, e, f, 2, 3);
    let (tgt, mem) = (rng.vec(lt * e), rng.vec(ls * e));
    let causal = [MaskTerm::Causal];
    let padded = [MaskTerm::KeyPadding { valid: 8 }];
    let nothing = [MaskTerm::KeyPadding { valid: 0 }];
    let cases: [(&[MaskTerm<'_>], Allowed<'_>); 3] = [
        (&[], &|_, _| true),
        (&padded, &|_, j| j < 8),
        // Memory fully masked: the cross-attention gives only its output bias.
        (&nothing, &|_, _| false),
    ];
    for norm_first in [false, true] {
        for act in [Activation::Relu, Activation::Gelu] {
            for (mem_terms, mem_allowed) in &cases {
                let config = LayerConfig {
                    activation: act,
                    norm_first,
                    eps: 1e-5,
                    self_attention: SdpaParams {
                        mask: Mask::new(&causal),
                        ..SdpaParams::default()
                    },
                    cross_attention: SdpaParams {
                        mask: Mask::new(mem_terms),
                        ..SdpaParams::default()
                    },
                };
                let r = decoder_ref(
                    &tgt,
                    &mem,
                    &lw,
                    e,
                    heads,
                    act,
                    norm_first,
                    1e-5,
                    &|i, j| j <= i,
                    *mem_allowed,
                );
                let mut out = vec![0.0f32; lt * e];
                let mut buffer = vec![0.0f32; decoder_buffer_len(shape, norm_first)];
                let mut scratch = vec![0.0f32; decoder_scratch_len(shape)];
                decoder_layer(
                    &tgt,
                    &mem,
                    &lw.decoder(),
                    &mut out,
                    shape,
                    &config,
                    &mut buffer,
                    &mut scratch,
                )
                .unwrap();
                let what = format!("decoder pre {norm_first} {act:?} mem {mem_terms:?}");
                assert_close(&out, &r, 2e-6, &what);
            }
        }
    }
}

#[test]
fn layers_in_f16_storage() {
    let mut rng = Rng::new(62);
    let (lt, ls, e, heads, f) = (6, 5, 8, 2, 16);
    let lw = LayerW::new(&mut rng, e, f, 2, 3);
    let (h, back) = lw.rounded();
    let (tgt_h, tgt_r) = round16(&rng.vec(lt * e));
    let (mem_h, mem_r) = round16(&rng.vec(ls * e));
    let causal = [MaskTerm::Causal];
    for norm_first in [false, true] {
        let config = LayerConfig {
            activation: Activation::Gelu,
            norm_first,
            self_attention: SdpaParams {
                mask: Mask::new(&causal),
                ..SdpaParams::default()
            },
            ..LayerConfig::default()
        };
        // Encoder
        let shape = EncoderShape::new(lt, e, heads, f);
        let weights = EncoderWeights {
            self_attn: h.mha(0),
            ffn: h.ffn(),
            norm1: h.norm(0),
            norm2: h.norm(1),
        };
        let mut out = vec![f16::ZERO; lt * e];
        let mut buffer = vec![f16::ZERO; encoder_buffer_len(shape, norm_first)];
        let mut scratch = vec![0.0f32; encoder_scratch_len(shape)];
        encoder_layer(
            &tgt_h,
            &weights,
            &mut out,
            shape,
            &config,
            &mut buffer,
            &mut scratch,
        )
        .unwrap();
        let y: Vec<f32> = out.iter().map(|v| v.to_f32()).collect();
        let r = encoder_ref(
            &tgt_r,
            &back,
            e,
            heads,
            Activation::Gelu,
            norm_first,
            1e-5,
            &|i, j| j <= i,
        );
        assert_close(&y, &r, 3e-3, "encoder f16");

        // Decoder
        let shape = DecoderShape::new(lt, ls, e, heads, f);
        let weights = DecoderWeights {
            self_attn: h.mha(0),
            cross_attn: h.mha(1),
            ffn: h.ffn(),
            norm1: h.norm(0),
            norm2: h.norm(1),
            norm3: h.norm(2),
        };
        let mut buffer = vec![f16::ZERO; decoder_buffer_len(shape, norm_first)];
        let mut scratch = vec![0.0f32; decoder_scratch_len(shape)];
        decoder_layer(
            &tgt_h,
            &mem_h,
            &weights,
            &mut out,
            shape,
            &config,
            &mut buffer,
            &mut scratch,
        )
        .unwrap();
        let y: Vec<f32> = out.iter().map(|v| v.to_f32()).collect();
        let r = decoder_ref(
            &tgt_r,
            &mem_r,
            &back,
            e,
            heads,
            Activation::Gelu,
            norm_first,
            1e-5,
            &|i, j| j <= i,
            &|_, _| true,
        );
        assert_close(&y, &r, 3e-3, "decoder f16");
    }
}

#[test]
fn layer_errors_write_nothing() {
    let mut rng = Rng::new(63);
    let (len, e, heads, f) = (4, 8, 2, 12);
    let shape = EncoderShape::new(len, e, heads, f);
    let lw = LayerW::new(&mut rng, e, f, 2, 3);
    let src = rng.vec(len * e);
    let pre = LayerConfig {
        norm_first: true,
        ..LayerConfig::default()
    };
    let run = |shape: EncoderShape,
               weights: &EncoderWeights<'_>,
               config: &LayerConfig<'_>,
               buffer_len: usize,
               scratch_len: usize| {
        let mut out = vec![7.0f32; len * e];
        let mut buffer = vec![0.0f32; buffer_len];
        let mut scratch = vec![0.0f32; scratch_len];
        let r = encoder_layer(
            &src,
            weights,
            &mut out,
            shape,
            config,
            &mut buffer,
            &mut scratch,
        );
        if r.is_err() {
            assert!(out.iter().all(|&v| v == 7.0), "output written on {r:?}");
        }
        r
    };
    let (bl, sl) = (encoder_buffer_len(shape, true), encoder_scratch_len(shape));
    let w = lw.encoder();
    assert!(run(shape, &w, &pre, bl, sl).is_ok());
    assert_eq!(
        run(EncoderShape::new(len, e, 3, f), &w, &pre, bl, sl),
        Err(Error::HeadsMismatch)
    );
    assert_eq!(
        run(EncoderShape::new(len, e, 0, f), &w, &pre, bl, sl),
        Err(Error::ZeroDimension)
    );
    assert!(matches!(
        run(shape, &w, &pre, bl - 1, sl),
        Err(Error::ScratchTooSmall { .. })
    ));
    // Post-norm needs no buffer at all.
    assert!(run(shape, &w, &LayerConfig::default(), 0, sl).is_ok());
    assert!(matches!(
        run(shape, &w, &pre, bl, sl - 1),
        Err(Error::ScratchTooSmall { .. })
    ));
    let bad_eps = LayerConfig { eps: -1.0, ..pre };
    assert_eq!(run(shape, &w, &bad_eps, bl, sl), Err(Error::InvalidScale));
    let bad_terms = [MaskTerm::Dilated {
        left: 1,
        right: 1,
        dilation: 0,
    }];
    let bad_mask = LayerConfig {
        self_attention: SdpaParams {
            mask: Mask::new(&bad_terms),
            ..SdpaParams::default()
        },
        ..pre
    };
    assert_eq!(run(shape, &w, &bad_mask, bl, sl), Err(Error::InvalidMask));
    let short_norm = EncoderWeights {
        norm2: LayerNormWeights {
            weight: &lw.norms[1].0[..e - 1],
            bias: None,
        },
        ..w
    };
    assert!(matches!(
        run(shape, &short_norm, &pre, bl, sl),
        Err(Error::LengthMismatch { .. })
    ));
    let short_ffn = EncoderWeights {
        ffn: FfnWeights {
            b2: Some(&lw.b2[..e - 1]),
            ..lw.ffn()
        },
        ..w
    };
    assert!(matches!(
        run(shape, &short_ffn, &pre, bl, sl),
        Err(Error::LengthMismatch { .. })
    ));

    // Decoder: a memory of the wrong width, a bad cross-attention bias.
    let dshape = DecoderShape::new(len, 3, e, heads, f);
    let mem = rng.vec(3 * e);
    let mut out = vec![7.0f32; len * e];
    let mut buffer = vec![0.0f32; decoder_buffer_len(dshape, false)];
    let mut scratch = vec![0.0f32; decoder_scratch_len(dshape)];
    let d = lw.decoder();
    let cfg = LayerConfig::default();
    assert!(matches!(
        decoder_layer(
            &src,
            &mem[..20],
            &d,
            &mut out,
            dshape,
            &cfg,
            &mut buffer,
            &mut scratch
        ),
        Err(Error::LengthMismatch { .. })
    ));
    let slopes = [0.5f32];
    let bad_bias = LayerConfig {
        cross_attention: SdpaParams {
            bias: Bias::Alibi { slopes: &slopes },
            ..SdpaParams::default()
        },
        ..cfg
    };
    assert_eq!(
        decoder_layer(
            &src,
            &mem,
            &d,
            &mut out,
            dshape,
            &bad_bias,
            &mut buffer,
            &mut scratch
        ),
        Err(Error::InvalidBias)
    );
    assert!(matches!(
        decoder_layer(
            &src,
            &mem,
            &d,
            &mut out,
            dshape,
            &cfg,
            &mut buffer[..5],
            &mut scratch
        ),
        Err(Error::ScratchTooSmall { .. })
    ));
    assert!(out.iter().all(|&v| v == 7.0));
    assert!(decoder_layer(
        &src,
        &mem,
        &d,
        &mut out,
        dshape,
        &cfg,
        &mut buffer,
        &mut scratch
    )
    .is_ok());
}

#[test]
fn footprints_count_the_real_buffers() {
    let mut rng = Rng::new(70);
    let (len, mem, e, heads, f) = (5, 7, 8, 2, 12);
    let lw = LayerW::new(&mut rng, e, f, 2, 3);
    let attn_len = |a: &MhaW| a.in_w.len() + a.in_b.len() + a.out_w.len() + a.out_b.len();
    let ffn_len = lw.w1.len() + lw.b1.len() + lw.w2.len() + lw.b2.len();
    let norm_len = |i: usize| lw.norms[i].0.len() + lw.norms[i].1.len();

    let shape = EncoderShape::new(len, e, heads, f);
    let fp = encoder_footprint(shape, true);
    assert_eq!(
        fp.weights,
        attn_len(&lw.attn[0]) + ffn_len + norm_len(0) + norm_len(1)
    );
    assert_eq!(fp.buffers, encoder_buffer_len(shape, true));
    assert_eq!(fp.scratch, encoder_scratch_len(shape));
    assert_eq!(encoder_footprint(shape, false).buffers, 0);
    assert_eq!(fp.bytes(2), 2 * (fp.weights + fp.buffers) + 4 * fp.scratch);

    let dshape = DecoderShape::new(len, mem, e, heads, f);
    let fp = decoder_footprint(dshape, false);
    let all_norms = norm_len(0) + norm_len(1) + norm_len(2);
    assert_eq!(
        fp.weights,
        attn_len(&lw.attn[0]) + attn_len(&lw.attn[1]) + ffn_len + all_norms
    );
    assert_eq!(fp.scratch, decoder_scratch_len(dshape));
    assert_eq!(2 * fp.buffers, decoder_footprint(dshape, true).buffers);

    assert_eq!(ffn_footprint(FfnShape::new(len, e, f)).weights, ffn_len);
    let gshape = GatShape::new(6, 5, 3, 2);
    // lin [H*F, Fin], att_src and att_dst [H, F], bias [H*F].
    assert_eq!(gat_footprint(gshape, true).weights, 6 * 5 + 6 + 6 + 6);
    assert_eq!(gat_footprint(gshape, false).weights, 6 * 5 + 6 + 6 + 3);
    let pshape = PatchShape::new(3, 8, 8, 4, 12);
    // weight [E,C,P,P], bias, cls, pos [1+NP, E].
    assert_eq!(
        patch_embed_footprint(pshape).weights,
        12 * 48 + 12 + 12 + 5 * 12
    );
    let sshape = ScanShape::new(4, 3);
    let fp = scan_footprint(sshape);
    assert_eq!((fp.weights, fp.state, fp.scratch), (12 + 4 + 4, 12, 0));
    // Saturating sizes never overflow.
    assert_eq!(
        encoder_scratch_len(EncoderShape::new(usize::MAX, 2, 1, 1)),
        usize::MAX
    );
}

// ---------------------------------------------------------------------------------------------
// Properties: any shape and any slice lengths give Ok or Err, never a panic; GAT does not
// depend on the order of its edge list.

mod properties {
    use super::*;
    use proptest::prelude::{any, prop_assert, prop_oneof, proptest, Just, ProptestConfig};

    fn buf(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.1).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn kernels_never_panic(
            dims in proptest::collection::vec(0usize..6, 5),
            lens in proptest::collection::vec(0usize..80, 8),
            offset in prop_oneof![0usize..10, Just(usize::MAX)],
            flag in any::<bool>(),
        ) {
            let (a, b, c, d, h) = (dims[0], dims[1], dims[2], dims[3], dims[4]);
            let mut x = buf(lens[0]);
            let _ = rope(&mut x, a, b, c, &RopeParams { pos_offset: offset, ..RopeParams::new(RopeLayout::Half) });
            let _ = sinusoidal_add(&mut x, a, b, offset, 1e4);
            let _ = learned_add(&mut x, &buf(lens[1]), a, b, offset);
            let w = buf(lens[2]);
            let mut y = buf(lens[3]);
            let _ = layer_norm(&x, &w, Some(&w), &mut y, a, 1e-5);
            let _ = rms_norm_in_place(&mut y, &w, b, 0.0);
            let (w1, w2) = (buf(lens[4]), buf(lens[5]));
            let weights = FfnWeights { w1: &w1, b1: Some(&w), w2: &w2, b2: None };
            let mut scratch = buf(lens[6]);
            let _ = ffn(&x, &weights, Activation::Gelu, &mut y, FfnShape::new(a, b, c), &mut scratch);
            let edges: Vec<i32> = buf(lens[7]).iter().map(|v| (v * 30.0) as i32).collect();
            let gw = GatWeights { lin_weight: &w1, att_src: &w2, att_dst: &w, bias: None };
            let params = GatParams { concat: flag, ..GatParams::default() };
            let _ = gat(&x, &edges, &gw, &mut y, GatShape::new(a, b, c, d), &params, &mut scratch);
            let pw = PatchEmbedWeights { patch_weight: &w1, patch_bias: None, cls_token: Some(&w), pos_embed: None };
            let _ = patch_embed(&x, &pw, &mut y, PatchShape::new(a, b, c, d, h), &mut scratch);
            let sw = ScanWeights { a: &w1, d: Some(&w), delta_bias: None, delta_softplus: flag };
            let seq = ScanSequence { u: &x, delta: &x, b: &w2, c: &w2, z: None };
            let mut state = buf(lens[6]);
            let _ = selective_scan(&mut state, &sw, &seq, &mut y, ScanShape::new(a, b));
            let lw = LayerW::new(&mut Rng::new(lens[0] as u64), b.max(1), c.max(1), 2, 3);
            let config = LayerConfig { norm_first: flag, ..LayerConfig::default() };
            let mut buffer = buf(lens[5]);
            let _ = encoder_layer(&x, &lw.encoder(), &mut y, EncoderShape::new(a, b, d, c), &config, &mut buffer, &mut scratch);
            let _ = decoder_layer(&x, &w, &lw.decoder(), &mut y, DecoderShape::new(a, h, b, d, c), &config, &mut buffer, &mut scratch);
        }

        #[test]
        fn gat_ignores_edge_order(seed in any::<u64>(), rotate in 0usize..20) {
            let mut rng = Rng::new(seed);
            let (n, fin, f, h) = (6, 3, 2, 2);
            let edges: Vec<(usize, usize)> = (0..20)
                .map(|i| (i * 7 % n, (i * 3 + seed as usize) % n))
                .collect();
            let mut rotated = edges.clone();
            rotated.rotate_left(rotate);
            let (lin, a_s, a_d) = (rng.vec(h * f * fin), rng.vec(h * f), rng.vec(h * f));
            let w = GatWeights { lin_weight: &lin, att_src: &a_s, att_dst: &a_d, bias: None };
            let x = rng.vec(n * fin);
            let shape = GatShape::new(n, fin, f, h);
            let mut scratch = vec![0.0f32; gat_scratch_len(shape)];
            let (mut o1, mut o2) = (vec![0.0f32; n * h * f], vec![0.0f32; n * h * f]);
            let p = GatParams::default();
            gat(&x, &coo::<u32>(&edges), &w, &mut o1, shape, &p, &mut scratch).unwrap();
            gat(&x, &coo::<u32>(&rotated), &w, &mut o2, shape, &p, &mut scratch).unwrap();
            for (a, b) in o1.iter().zip(&o2) {
                prop_assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()));
            }
        }
    }
}
