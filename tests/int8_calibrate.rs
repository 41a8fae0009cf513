//! The int8 layers' offline step in the library (`Int8LayerQuant`, `calibrate_patch_embed`,
//! `quantize_per_row`): the calibrated output is what the integer layer gives with the
//! returned scales, the scales are refined towards the stage peaks (no stage saturates by
//! more than its refinement allows), and bad inputs are errors, not panics. Accuracy against
//! f64 references is in tests/int8_layers.rs and the conformance cases.

use microattn::attention::{Bias, SdpaParams};
use microattn::layers::int8::{
    calibrate_patch_embed, int8_decoder_scratch_len, int8_decoder_storage_len, int8_encoder_layer,
    int8_encoder_scratch_len, int8_encoder_storage_len, int8_layer_acc_len,
    int8_patch_embed_scratch_len, int8_patch_offsets_len, quantize_per_row, Int8LayerQuant,
    Int8LayerStats,
};
use microattn::layers::{
    DecoderShape, DecoderWeights, EncoderShape, EncoderWeights, FfnWeights, LayerConfig,
    LayerNormWeights, PatchEmbedWeights, PatchShape,
};
use microattn::mha::MhaWeights;
use microattn::quant::FixedMultiplier;
use microattn::Error;

struct Rng(u64);

impl Rng {
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                ((self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * scale
            })
            .collect()
    }
}

/// A decoder state dict (the encoder uses the first part).
struct Dict {
    in_w: Vec<f32>,
    in_b: Vec<f32>,
    out_w: Vec<f32>,
    x_in_w: Vec<f32>,
    x_out_w: Vec<f32>,
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    g: Vec<f32>,
    b: Vec<f32>,
}

impl Dict {
    fn new(rng: &mut Rng, e: usize, h: usize) -> Self {
        let s = 1.0 / (e as f32).sqrt();
        Dict {
            in_w: rng.vec(3 * e * e, s),
            in_b: rng.vec(3 * e, 0.1),
            out_w: rng.vec(e * e, s),
            x_in_w: rng.vec(3 * e * e, s),
            x_out_w: rng.vec(e * e, s),
            w1: rng.vec(h * e, s),
            b1: rng.vec(h, 0.1),
            w2: rng.vec(e * h, 1.0 / (h as f32).sqrt()),
            g: rng.vec(e, 0.3).iter().map(|v| 1.0 + v).collect(),
            b: rng.vec(e, 0.1),
        }
    }
    fn encoder(&self) -> EncoderWeights<'_, f32> {
        EncoderWeights {
            self_attn: MhaWeights {
                in_proj_weight: &self.in_w,
                in_proj_bias: Some(&self.in_b),
                out_proj_weight: &self.out_w,
                out_proj_bias: None,
            },
            ffn: FfnWeights {
                w1: &self.w1,
                b1: Some(&self.b1),
                w2: &self.w2,
                b2: None,
            },
            norm1: LayerNormWeights {
                weight: &self.g,
                bias: Some(&self.b),
            },
            norm2: LayerNormWeights {
                weight: &self.g,
                bias: None,
            },
        }
    }
    fn decoder(&self) -> DecoderWeights<'_, f32> {
        let enc = self.encoder();
        DecoderWeights {
            self_attn: enc.self_attn,
            cross_attn: MhaWeights {
                in_proj_weight: &self.x_in_w,
                in_proj_bias: None,
                out_proj_weight: &self.x_out_w,
                out_proj_bias: None,
            },
            ffn: enc.ffn,
            norm1: enc.norm1,
            norm2: enc.norm2,
            norm3: enc.norm1,
        }
    }
}

fn quantize(x: &[f32]) -> (Vec<i8>, f32) {
    let m = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let s = m / 127.0;
    (x.iter().map(|v| (v / s).round() as i8).collect(), s)
}

#[test]
fn calibrated_encoder_output_is_the_layer_at_the_returned_scales() {
    let mut rng = Rng(7);
    let (len, e, heads, h) = (6, 8, 2, 16);
    let shape = EncoderShape::new(len, e, heads, h);
    let dict = Dict::new(&mut rng, e, h);
    for norm_first in [false, true] {
        let config = LayerConfig {
            norm_first,
            ..LayerConfig::default()
        };
        let st = int8_encoder_storage_len(shape);
        let (mut q, mut qs) = (vec![0i8; st.weights], vec![0f32; st.weight_scales]);
        let layer =
            Int8LayerQuant::encoder(&dict.encoder(), shape, &config, &mut q, &mut qs).unwrap();
        let (src, src_scale) = quantize(&rng.vec(len * e, 2.0));
        let mut out = vec![0i8; len * e];
        let mut scratch = vec![0i8; int8_encoder_scratch_len(shape)];
        let mut acc = vec![0i64; int8_layer_acc_len(e, heads)];
        let (mut ints, mut mults) = (
            vec![0i32; st.ints],
            vec![FixedMultiplier::ONE; st.multipliers],
        );
        let scales = layer
            .calibrate(
                &src,
                src_scale,
                None,
                3,
                &mut out,
                &mut scratch,
                &mut acc,
                &mut ints,
                &mut mults,
            )
            .unwrap();
        // Deployment: prepare once with the scales, run the integer layer.
        let params = layer
            .prepare_encoder(&scales, src_scale, &mut ints, &mut mults)
            .unwrap();
        let mut again = vec![0i8; len * e];
        let mut stats = Int8LayerStats::default();
        int8_encoder_layer(
            &src,
            &params,
            &mut again,
            shape,
            &mut scratch,
            &mut acc,
            Some(&mut stats),
        )
        .unwrap();
        assert_eq!(out, again, "norm_first {norm_first}");
        // After refinement every stage uses its range: no stage far above 127 (clipping) and
        // the output not vanishing.
        let peaks = [
            stats.self_attn.q,
            stats.self_attn.k,
            stats.self_attn.v,
            stats.self_attn.out,
            stats.ffn.hidden,
            stats.ffn.out,
            stats.norm[0],
            stats.norm[1],
        ];
        assert!(peaks.iter().all(|&p| p <= 160), "peaks {peaks:?}");
        assert!(out.iter().any(|&v| v.unsigned_abs() > 60));
        // The worst-case scales are wider than the calibrated ones.
        let worst = layer.worst_case_scales(src_scale, src_scale);
        assert!(worst.self_attn.q >= scales.self_attn.q && worst.hidden >= scales.hidden);
        assert!(layer.output_scale(&scales, src_scale) > 0.0);
    }
}

#[test]
fn layer_quant_bad_inputs_are_errors() {
    let mut rng = Rng(9);
    let (len, e, heads, h) = (4, 8, 2, 16);
    let shape = EncoderShape::new(len, e, heads, h);
    let dict = Dict::new(&mut rng, e, h);
    let config = LayerConfig::default();
    let st = int8_encoder_storage_len(shape);
    let (mut q, mut qs) = (vec![0i8; st.weights], vec![0f32; st.weight_scales]);
    // Short weight storage.
    let mut short = vec![0i8; st.weights - 1];
    assert!(matches!(
        Int8LayerQuant::encoder(&dict.encoder(), shape, &config, &mut short, &mut qs),
        Err(Error::ScratchTooSmall { .. })
    ));
    // Heads not dividing the width, zero heads.
    let bad = EncoderShape::new(len, e, 3, h);
    assert_eq!(
        Int8LayerQuant::encoder(&dict.encoder(), bad, &config, &mut q, &mut qs).err(),
        Some(Error::HeadsMismatch)
    );
    let bad = EncoderShape::new(len, e, 0, h);
    assert!(Int8LayerQuant::encoder(&dict.encoder(), bad, &config, &mut q, &mut qs).is_err());
    // An f32 position bias has no int8 form here.
    let alibi = [0.5f32, 0.25];
    let biased = LayerConfig {
        self_attention: SdpaParams {
            bias: Bias::Alibi { slopes: &alibi },
            ..SdpaParams::default()
        },
        ..config
    };
    assert_eq!(
        Int8LayerQuant::encoder(&dict.encoder(), shape, &biased, &mut q, &mut qs).err(),
        Some(Error::InvalidBias)
    );
    // A non-finite weight.
    let mut inf = Dict::new(&mut rng, e, h);
    inf.w1[3] = f32::INFINITY;
    assert!(Int8LayerQuant::encoder(&inf.encoder(), shape, &config, &mut q, &mut qs).is_err());

    let layer = Int8LayerQuant::encoder(&dict.encoder(), shape, &config, &mut q, &mut qs).unwrap();
    let src = vec![5i8; len * e];
    let mut out = vec![0i8; len * e];
    let mut scratch = vec![0i8; int8_encoder_scratch_len(shape)];
    let mut acc = vec![0i64; int8_layer_acc_len(e, heads)];
    let (mut ints, mut mults) = (
        vec![0i32; st.ints],
        vec![FixedMultiplier::ONE; st.multipliers],
    );
    let s = layer.worst_case_scales(0.05, 0.05);
    // Decoder params from an encoder, memory given to an encoder, ragged rows, short tables.
    assert!(layer
        .prepare_decoder(&s, 0.05, 0.05, &mut ints, &mut mults)
        .is_err());
    assert!(layer
        .run(
            &s,
            &src,
            0.05,
            Some((&src, 0.05)),
            &mut out,
            &mut scratch,
            &mut acc,
            &mut ints,
            &mut mults
        )
        .is_err());
    assert!(layer
        .run(
            &s,
            &src[1..],
            0.05,
            None,
            &mut out,
            &mut scratch,
            &mut acc,
            &mut ints,
            &mut mults
        )
        .is_err());
    assert!(layer
        .run(
            &s,
            &src,
            0.05,
            None,
            &mut out,
            &mut scratch,
            &mut acc,
            &mut ints[1..],
            &mut mults
        )
        .is_err());
    assert!(layer
        .calibrate(
            &src,
            f32::NAN,
            None,
            2,
            &mut out,
            &mut scratch,
            &mut acc,
            &mut ints,
            &mut mults
        )
        .is_err());
    layer
        .run(
            &s,
            &src,
            0.05,
            None,
            &mut out,
            &mut scratch,
            &mut acc,
            &mut ints,
            &mut mults,
        )
        .unwrap();

    // A decoder needs its memory.
    let dshape = DecoderShape::new(len, 3, e, heads, h);
    let dst = int8_decoder_storage_len(dshape);
    let (mut dq, mut dqs) = (vec![0i8; dst.weights], vec![0f32; dst.weight_scales]);
    let dec = Int8LayerQuant::decoder(&dict.decoder(), dshape, &config, &mut dq, &mut dqs).unwrap();
    let (mut dints, mut dmults) = (
        vec![0i32; dst.ints],
        vec![FixedMultiplier::ONE; dst.multipliers],
    );
    let mut dscratch = vec![0i8; int8_decoder_scratch_len(dshape)];
    let ds = dec.worst_case_scales(0.05, 0.05);
    assert!(dec
        .run(
            &ds,
            &src,
            0.05,
            None,
            &mut out,
            &mut dscratch,
            &mut acc,
            &mut dints,
            &mut dmults
        )
        .is_err());
    let memory = vec![-3i8; 3 * e];
    dec.run(
        &ds,
        &src,
        0.05,
        Some((&memory, 0.05)),
        &mut out,
        &mut dscratch,
        &mut acc,
        &mut dints,
        &mut dmults,
    )
    .unwrap();
    assert!(dec
        .prepare_encoder(&ds, 0.05, &mut dints, &mut dmults)
        .is_err());
}

#[test]
fn per_row_quantization() {
    let w = [0.5f32, -1.0, 0.25, 0.0, 0.0, 0.0, 2.0, 1.0, -2.0];
    let mut scales = [0f32; 3];
    let mut q = [0i8; 9];
    quantize_per_row(&w, &mut scales, &mut q).unwrap();
    assert_eq!(scales, [1.0 / 127.0, 1.0, 2.0 / 127.0]);
    assert_eq!(q, [64, -127, 32, 0, 0, 0, 127, 64, -127]);
    assert!(quantize_per_row(&w[..8], &mut scales, &mut q[..8]).is_err());
    assert!(quantize_per_row(&w, &mut [], &mut q).is_err());
}

#[test]
fn calibrated_patch_embed() {
    let mut rng = Rng(21);
    let shape = PatchShape::new(2, 4, 4, 2, 6);
    let pw = rng.vec(6 * 8, 0.5);
    let (bias, cls, pos) = (rng.vec(6, 0.2), rng.vec(6, 0.5), rng.vec(5 * 6, 0.3));
    let weights = PatchEmbedWeights {
        patch_weight: &pw,
        patch_bias: Some(&bias),
        cls_token: Some(&cls),
        pos_embed: Some(&pos),
    };
    let image_f = rng.vec(32, 1.0);
    let (image, image_scale) = quantize(&image_f);
    let mut wq = vec![0i8; pw.len()];
    let mut ws = vec![0f32; 6];
    let mut tokens = vec![0i8; 5 * 6];
    let mut scratch = vec![0i8; int8_patch_embed_scratch_len(shape)];
    let mut offsets = vec![0i32; int8_patch_offsets_len(shape)];
    let mut mults = vec![FixedMultiplier::ONE; 6];
    let mut cls_row = vec![0i8; 6];
    let scale = calibrate_patch_embed(
        &image,
        image_scale,
        &weights,
        shape,
        &mut wq,
        &mut ws,
        2,
        &mut tokens,
        &mut scratch,
        &mut offsets,
        &mut mults,
        &mut cls_row,
    )
    .unwrap();
    // Every token against the f64 embedding of the dequantized image: within a few steps.
    for (t, row) in tokens.chunks_exact(6).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            let want = if t == 0 {
                cls[c] as f64 + pos[c] as f64
            } else {
                let (py, px) = ((t - 1) / 2, (t - 1) % 2);
                let mut s = bias[c] as f64 + pos[t * 6 + c] as f64;
                for ch in 0..2 {
                    for y in 0..2 {
                        for x in 0..2 {
                            let i = ch * 16 + (py * 2 + y) * 4 + px * 2 + x;
                            s += pw[c * 8 + ch * 4 + y * 2 + x] as f64
                                * image[i] as f64
                                * image_scale as f64;
                        }
                    }
                }
                s
            };
            let got = v as f64 * scale as f64;
            assert!(
                (got - want).abs() < 3.0 * scale as f64,
                "token {t} feature {c}"
            );
        }
    }
    assert!(tokens.iter().any(|&v| v.unsigned_abs() >= 100));
    // Short weight scales: an error.
    assert!(calibrate_patch_embed(
        &image,
        image_scale,
        &weights,
        shape,
        &mut wq,
        &mut ws[..5],
        2,
        &mut tokens,
        &mut scratch,
        &mut offsets,
        &mut mults,
        &mut cls_row,
    )
    .is_err());
}
