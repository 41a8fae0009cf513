//! The offline step of the int8 layers: f32 weights quantized per output channel, worst-case
//! stage scales from the weights, and calibration of the stage scales by running the integer
//! layer itself on a sample input (each run's stage peaks set the next run's scales).
//!
//! This step is float (it runs once, on the host or on a core with or without an FPU); the
//! `run` functions it calls stay integer only. It needs no heap: every table lives in
//! caller storage sized by a `const fn` ([`int8_encoder_storage_len`],
//! [`int8_decoder_storage_len`]), so firmware can calibrate on target as well as on the
//! host, with the same result bit for bit (IEEE `f32`/`f64` arithmetic in a fixed order).
//!
//! ```
//! use microattn::layers::int8::{
//!     int8_encoder_scratch_len, int8_encoder_storage_len, int8_layer_acc_len, Int8LayerQuant,
//! };
//! use microattn::layers::{EncoderShape, EncoderWeights, FfnWeights, LayerConfig, LayerNormWeights};
//! use microattn::mha::MhaWeights;
//! use microattn::quant::{quantize, FixedMultiplier, QParams};
//!
//! const L: usize = 3;
//! const E: usize = 4;
//! const H: usize = 8;
//! const SHAPE: EncoderShape = EncoderShape::new(L, E, 2, H);
//! const S: microattn::layers::int8::Int8LayerStorage = int8_encoder_storage_len(SHAPE);
//! let w = |n: usize, k: usize| -> Vec<f32> { (0..n).map(|i| ((i * 7 + k) % 11) as f32 / 11.0 - 0.45).collect() };
//! let (in_w, out_w, w1, w2, g) = (w(3 * E * E, 1), w(E * E, 2), w(H * E, 3), w(E * H, 4), [1.0f32; E]);
//! let weights = EncoderWeights {
//!     self_attn: MhaWeights { in_proj_weight: &in_w, in_proj_bias: None, out_proj_weight: &out_w, out_proj_bias: None },
//!     ffn: FfnWeights { w1: &w1, b1: None, w2: &w2, b2: None },
//!     norm1: LayerNormWeights { weight: &g, bias: None },
//!     norm2: LayerNormWeights { weight: &g, bias: None },
//! };
//! let config = LayerConfig::default();
//! let (mut q, mut q_scales) = ([0i8; S.weights], [0f32; S.weight_scales]);
//! let layer = Int8LayerQuant::encoder(&weights, SHAPE, &config, &mut q, &mut q_scales)?;
//!
//! // A sample input, quantized per tensor.
//! let src_f32 = w(L * E, 5);
//! let src_scale = QParams::from_max_abs(0.55)?;
//! let mut src = [0i8; L * E];
//! quantize(&src_f32, src_scale, &mut src)?;
//!
//! let mut out = [0i8; L * E];
//! let mut scratch = [0i8; int8_encoder_scratch_len(SHAPE)];
//! let mut acc = [0i64; int8_layer_acc_len(E, 2)];
//! let (mut ints, mut mults) = ([0i32; S.ints], [FixedMultiplier::ONE; S.multipliers]);
//! let scales = layer.calibrate(&src, src_scale.scale(), None, 3, &mut out, &mut scratch, &mut acc, &mut ints, &mut mults)?;
//! // `out` holds the layer's output at this scale; deployment prepares the params once:
//! let out_scale = layer.output_scale(&scales, src_scale.scale());
//! let params = layer.prepare_encoder(&scales, src_scale.scale(), &mut ints, &mut mults)?;
//! assert!(out_scale > 0.0 && params.norm1.gamma.len() == E);
//! # Ok::<(), microattn::Error>(())
//! ```

use super::ffn::Int8FfnParams;
use super::norm::{Int8Add, Int8LayerNorm, Int8Lut};
use super::transformer::{
    int8_decoder_layer, int8_encoder_layer, Int8DecoderParams, Int8EncoderParams, Int8LayerStats,
};
use crate::attention::int8::{Int8Bias, Int8Dense, Int8MhaParams, Int8MhaStats, Int8SdpaParams};
use crate::attention::{Bias, SdpaParams};
use crate::error::{check_len, mul, nonzero, Error};
use crate::layers::{
    Activation, DecoderShape, DecoderWeights, EncoderShape, EncoderWeights, LayerConfig,
    LayerNormWeights,
};
use crate::mha::MhaWeights;
use crate::quant::{quantize_per_channel, FixedMultiplier, QParams};

/// Symmetric int8 quantization of the row-major `[scales.len(), cols]` weight `w` with one
/// max-abs scale per row (output channel) into `out`; the scales into `scales`. A zero row
/// gets scale 1. Errors: lengths that do not match, a row with an infinite value
/// ([`Error::InvalidScale`]).
pub fn quantize_per_row(w: &[f32], scales: &mut [f32], out: &mut [i8]) -> Result<(), Error> {
    let rows = scales.len();
    nonzero(&[rows])?;
    check_len(out, w.len())?;
    let cols = w.len() / rows;
    check_len(w, mul(rows, cols)?)?;
    if cols == 0 {
        scales.fill(1.0);
        return Ok(());
    }
    for (s, row) in scales.iter_mut().zip(w.chunks_exact(cols)) {
        *s = QParams::from_max_abs(max_abs(row))?.scale();
    }
    quantize_per_channel(w, scales, out)
}

/// Largest `|x|` (NaN ignored), 0 for an empty slice.
pub(crate) fn max_abs(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, v| m.max(libm::fabsf(*v)))
}

/// `scale · (peak + 1) / 127` when the stage produced anything, else `scale`: the scale at
/// which a stage whose largest value was `peak` steps of `scale` just fits.
pub fn refine_scale(scale: f32, peak: i64) -> f32 {
    if peak > 0 {
        scale * (peak as f32 + 1.0) / 127.0
    } else {
        scale
    }
}

/// The first `n` elements of a pool; the rest stays in the pool.
pub(crate) fn take<'a, T>(pool: &mut &'a mut [T], n: usize) -> Result<&'a mut [T], Error> {
    let found = pool.len();
    let (head, tail) = core::mem::take(pool)
        .split_at_mut_checked(n)
        .ok_or(Error::ScratchTooSmall { needed: n, found })?;
    *pool = tail;
    Ok(head)
}

/// Element counts of the storage of one int8 layer: its quantized weights and their
/// per-channel scales ([`Int8LayerQuant`]), and the integer tables of one set of prepared
/// params ([`Int8LayerQuant::prepare_encoder`] / [`prepare_decoder`](Int8LayerQuant::prepare_decoder)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Int8LayerStorage {
    /// `i8` weights: every projection and FFN matrix.
    pub weights: usize,
    /// `f32` weight scales, one per output channel.
    pub weight_scales: usize,
    /// `i32` tables of the prepared params: dense biases (one per output channel) and the
    /// LayerNorms' Q16 `gamma` and `beta`.
    pub ints: usize,
    /// Fixed-point multipliers of the prepared params, one per output channel.
    pub multipliers: usize,
}

/// Storage of an int8 encoder layer of width `E` and FFN width `H`: `4E² + 2EH` weights,
/// `5E + H` scales and multipliers, `9E + H` `i32`s. Saturates.
pub const fn int8_encoder_storage_len(shape: EncoderShape) -> Int8LayerStorage {
    layer_storage(shape.embed, shape.hidden, false)
}

/// Storage of an int8 decoder layer of width `E` and FFN width `H`: `8E² + 2EH` weights,
/// `9E + H` scales and multipliers, `15E + H` `i32`s. Saturates.
pub const fn int8_decoder_storage_len(shape: DecoderShape) -> Int8LayerStorage {
    layer_storage(shape.embed, shape.hidden, true)
}

const fn layer_storage(e: usize, h: usize, decoder: bool) -> Int8LayerStorage {
    let attentions = if decoder { 2 } else { 1 };
    let norms = if decoder { 3 } else { 2 };
    let ee = e.saturating_mul(e);
    let eh = e.saturating_mul(h);
    // Each attention: in_proj [3E, E] and out_proj [E, E]; the FFN: [H, E] and [E, H].
    let weights = ee
        .saturating_mul(4 * attentions)
        .saturating_add(eh.saturating_mul(2));
    let rows = e.saturating_mul(4 * attentions + 1).saturating_add(h);
    Int8LayerStorage {
        weights,
        weight_scales: rows,
        ints: rows.saturating_add(e.saturating_mul(2 * norms)),
        multipliers: rows,
    }
}

/// A linear layer's f32 weights and their int8 form.
#[derive(Debug, Clone, Copy)]
struct QLinear<'a> {
    w: &'a [f32],
    b: Option<&'a [f32]>,
    q: &'a [i8],
    scales: &'a [f32],
    rows: usize,
    cols: usize,
}

impl<'a> QLinear<'a> {
    /// Quantizes `w` (`[rows, cols]`) per row into the pools.
    fn new(
        w: &'a [f32],
        b: Option<&'a [f32]>,
        rows: usize,
        cols: usize,
        q: &mut &'a mut [i8],
        scales: &mut &'a mut [f32],
    ) -> Result<Self, Error> {
        check_len(w, mul(rows, cols)?)?;
        if let Some(b) = b {
            check_len(b, rows)?;
        }
        let qw = take(q, w.len())?;
        let s = take(scales, rows)?;
        quantize_per_row(w, s, qw)?;
        Ok(QLinear {
            w,
            b,
            q: qw,
            scales: s,
            rows,
            cols,
        })
    }

    /// Rows `r0..r0 + n` (one part of a packed in-projection).
    fn part(&self, r0: usize, n: usize) -> QLinear<'a> {
        let c = self.cols;
        QLinear {
            w: self.w.get(r0 * c..(r0 + n) * c).unwrap_or(&[]),
            b: self.b.map(|b| b.get(r0..r0 + n).unwrap_or(&[])),
            q: self.q.get(r0 * c..(r0 + n) * c).unwrap_or(&[]),
            scales: self.scales.get(r0..r0 + n).unwrap_or(&[]),
            rows: n,
            cols: c,
        }
    }

    /// Largest `|y|` for inputs bounded by `x_max`: `max_c Σ|w| · x_max + |b|`.
    fn worst(&self, x_max: f32) -> f32 {
        let mut worst = f32::MIN_POSITIVE;
        for (r, row) in self.w.chunks_exact(self.cols.max(1)).enumerate() {
            let s: f32 = row.iter().map(|v| libm::fabsf(*v)).sum();
            let b = self
                .b
                .and_then(|b| b.get(r))
                .map_or(0.0, |v| libm::fabsf(*v));
            worst = worst.max(s * x_max + b);
        }
        worst
    }

    /// The int8 layer from input scale `x` to output scale `y`, its tables from the pools.
    fn prepare<'p>(
        &self,
        x: f32,
        y: f32,
        ints: &mut &'p mut [i32],
        mults: &mut &'p mut [FixedMultiplier],
    ) -> Result<Int8Dense<'p>, Error>
    where
        'a: 'p,
    {
        Int8Dense::prepare(
            self.q,
            self.rows,
            self.scales,
            x,
            y,
            self.b,
            take(ints, self.rows)?,
            take(mults, self.rows)?,
        )
    }
}

/// `nn.MultiheadAttention` weights, quantized, with its f32 attention settings.
#[derive(Debug, Clone, Copy)]
struct QMha<'a> {
    q: QLinear<'a>,
    k: QLinear<'a>,
    v: QLinear<'a>,
    out: QLinear<'a>,
    attention: SdpaParams<'a>,
}

impl<'a> QMha<'a> {
    fn new(
        m: &MhaWeights<'a, f32>,
        attention: SdpaParams<'a>,
        e: usize,
        q: &mut &'a mut [i8],
        scales: &mut &'a mut [f32],
    ) -> Result<Self, Error> {
        // The int8 attention has no f32 position bias (ALiBi, T5, a table): the int8
        // kernels take theirs prepared (`Int8Bias`), not from a layer config.
        if !matches!(attention.bias, Bias::None) {
            return Err(Error::InvalidBias);
        }
        let packed = QLinear::new(m.in_proj_weight, m.in_proj_bias, mul(3, e)?, e, q, scales)?;
        Ok(QMha {
            q: packed.part(0, e),
            k: packed.part(e, e),
            v: packed.part(2 * e, e),
            out: QLinear::new(m.out_proj_weight, m.out_proj_bias, e, e, q, scales)?,
            attention,
        })
    }
}

/// Output scales of the stages of an int8 attention.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Int8MhaScales {
    /// Projected queries.
    pub q: f32,
    /// Projected keys.
    pub k: f32,
    /// Projected values.
    pub v: f32,
    /// Attention output (before `out_proj`).
    pub attn: f32,
    /// Output.
    pub out: f32,
}

impl Int8MhaScales {
    /// The scales refined from a run's peaks ([`refine_scale`]).
    pub fn refined(&self, st: &Int8MhaStats) -> Self {
        Int8MhaScales {
            q: refine_scale(self.q, st.q),
            k: refine_scale(self.k, st.k),
            v: refine_scale(self.v, st.v),
            attn: refine_scale(self.attn, st.attention),
            out: refine_scale(self.out, st.out),
        }
    }
}

/// Output scales of every stage of an int8 encoder or decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Int8LayerScales {
    /// Self-attention.
    pub self_attn: Int8MhaScales,
    /// Cross-attention (decoder).
    pub cross_attn: Int8MhaScales,
    /// `norm1..3` outputs.
    pub norm: [f32; 3],
    /// Pre-norm residual sums after each sublayer.
    pub residual: [f32; 3],
    /// `linear1` output (and activation output).
    pub hidden: f32,
    /// `linear2` output.
    pub ffn_out: f32,
}

impl Int8LayerScales {
    /// The scales refined from a run's stage peaks ([`refine_scale`] for every stage).
    pub fn refined(&self, st: &Int8LayerStats) -> Self {
        let mut r = *self;
        r.self_attn = self.self_attn.refined(&st.self_attn);
        r.cross_attn = self.cross_attn.refined(&st.cross_attn);
        for i in 0..3 {
            r.norm[i] = refine_scale(self.norm[i], st.norm[i]);
            r.residual[i] = refine_scale(self.residual[i], st.residual[i]);
        }
        r.hidden = refine_scale(self.hidden, st.ffn.hidden);
        r.ffn_out = refine_scale(self.ffn_out, st.ffn.out);
        r
    }
}

/// The scale of the tensor each stage reads, following the layer's data flow.
struct Flow {
    /// Input of each attention (its queries).
    attn_in: [f32; 2],
    /// Input of the FFN.
    ffn_in: f32,
    /// The residual stream before each sublayer.
    stream: [f32; 3],
    /// The output.
    out: f32,
}

/// An int8 encoder or decoder layer's weights, quantized per output channel (borrowed from
/// caller storage), with the f32 biases and LayerNorm weights they came from and the
/// layer's configuration: everything [`prepare_encoder`](Self::prepare_encoder) /
/// [`prepare_decoder`](Self::prepare_decoder) need to build the integer params for any set
/// of stage scales, and [`calibrate`](Self::calibrate) to choose those scales.
#[derive(Debug, Clone, Copy)]
pub struct Int8LayerQuant<'a> {
    self_attn: QMha<'a>,
    cross_attn: Option<QMha<'a>>,
    linear1: QLinear<'a>,
    linear2: QLinear<'a>,
    norms: [LayerNormWeights<'a, f32>; 3],
    activation: Activation,
    norm_first: bool,
    eps: f32,
    embed: usize,
    heads: usize,
    hidden: usize,
}

impl<'a> Int8LayerQuant<'a> {
    /// Quantizes an encoder layer's f32 `weights` (PyTorch's state dict) per output channel
    /// into `weights_q` / `weight_scales` ([`int8_encoder_storage_len`]). From `config`:
    /// the activation, `norm_first`, `eps`, and the self-attention's mask, score and logit
    /// scale (an f32 position bias is refused: [`Error::InvalidBias`]).
    ///
    /// Errors: a zero dimension, `heads` not dividing `embed`, weight lengths that do not
    /// match `shape`, a weight that is not finite, short storage.
    pub fn encoder(
        weights: &EncoderWeights<'a, f32>,
        shape: EncoderShape,
        config: &LayerConfig<'a>,
        weights_q: &'a mut [i8],
        weight_scales: &'a mut [f32],
    ) -> Result<Self, Error> {
        let EncoderShape {
            embed: e,
            heads,
            hidden,
            ..
        } = shape;
        let (mut q, mut s) = (weights_q, weight_scales);
        let self_attn =
            Self::check_and_mha(e, heads, hidden, &weights.self_attn, config, &mut q, &mut s)?;
        let (linear1, linear2) = ffn(weights.ffn, e, hidden, &mut q, &mut s)?;
        let norms = [weights.norm1, weights.norm2, weights.norm2];
        check_norms(&norms[..2], e)?;
        Ok(Int8LayerQuant {
            self_attn,
            cross_attn: None,
            linear1,
            linear2,
            norms,
            activation: config.activation,
            norm_first: config.norm_first,
            eps: config.eps,
            embed: e,
            heads,
            hidden,
        })
    }

    /// As [`encoder`](Self::encoder) for a decoder layer ([`int8_decoder_storage_len`]);
    /// the cross-attention's mask, score and scale come from `config.cross_attention`.
    pub fn decoder(
        weights: &DecoderWeights<'a, f32>,
        shape: DecoderShape,
        config: &LayerConfig<'a>,
        weights_q: &'a mut [i8],
        weight_scales: &'a mut [f32],
    ) -> Result<Self, Error> {
        let DecoderShape {
            embed: e,
            heads,
            hidden,
            ..
        } = shape;
        let (mut q, mut s) = (weights_q, weight_scales);
        let self_attn =
            Self::check_and_mha(e, heads, hidden, &weights.self_attn, config, &mut q, &mut s)?;
        let cross_attn = QMha::new(
            &weights.cross_attn,
            config.cross_attention,
            e,
            &mut q,
            &mut s,
        )?;
        let (linear1, linear2) = ffn(weights.ffn, e, hidden, &mut q, &mut s)?;
        let norms = [weights.norm1, weights.norm2, weights.norm3];
        check_norms(&norms, e)?;
        Ok(Int8LayerQuant {
            self_attn,
            cross_attn: Some(cross_attn),
            linear1,
            linear2,
            norms,
            activation: config.activation,
            norm_first: config.norm_first,
            eps: config.eps,
            embed: e,
            heads,
            hidden,
        })
    }

    fn check_and_mha(
        e: usize,
        heads: usize,
        hidden: usize,
        m: &MhaWeights<'a, f32>,
        config: &LayerConfig<'a>,
        q: &mut &'a mut [i8],
        s: &mut &'a mut [f32],
    ) -> Result<QMha<'a>, Error> {
        nonzero(&[e, heads, hidden])?;
        if e % heads != 0 {
            return Err(Error::HeadsMismatch);
        }
        if !(config.eps.is_finite() && config.eps >= 0.0) {
            return Err(Error::InvalidParameter);
        }
        QMha::new(m, config.self_attention, e, q, s)
    }

    /// Number of sublayers (2 encoder, 3 decoder).
    fn sublayers(&self) -> usize {
        if self.cross_attn.is_some() {
            3
        } else {
            2
        }
    }

    /// `sqrt(E) · max|γ| + max|β|`: no output of norm `i` is larger.
    fn norm_worst(&self, i: usize) -> f32 {
        let n = &self.norms[i];
        let g = max_abs(n.weight);
        let b = n.bias.map_or(0.0, max_abs);
        (crate::math::sqrt(n.weight.len() as f32) * g + b).max(f32::MIN_POSITIVE)
    }

    /// Stage scales no stage can saturate at, from the weights: the input at scale `input`
    /// (its values at most `127 · input`), a decoder's memory at scale `memory`.
    pub fn worst_case_scales(&self, input: f32, memory: f32) -> Int8LayerScales {
        let mut s = Int8LayerScales::default();
        let lim = 127.0;
        let mha = |m: &QMha<'_>, x_max: f32, kv_max: f32| {
            let v = m.v.worst(kv_max) / lim;
            Int8MhaScales {
                q: m.q.worst(x_max) / lim,
                k: m.k.worst(kv_max) / lim,
                v,
                attn: v,
                out: m.out.worst(v * lim) / lim,
            }
        };
        let subs = self.sublayers();
        let mut stream = input * lim;
        for i in 0..subs {
            let x_max = if self.norm_first {
                self.norm_worst(i)
            } else {
                stream
            };
            let sub_max = if i + 1 == subs {
                s.hidden = self.linear1.worst(x_max) / lim;
                s.ffn_out = self.linear2.worst(s.hidden * lim) / lim;
                s.ffn_out * lim
            } else if i == 0 {
                s.self_attn = mha(&self.self_attn, x_max, x_max);
                s.self_attn.out * lim
            } else {
                if let Some(cross) = &self.cross_attn {
                    s.cross_attn = mha(cross, x_max, memory * lim);
                }
                s.cross_attn.out * lim
            };
            s.norm[i] = self.norm_worst(i) / lim;
            if self.norm_first {
                stream += sub_max;
                s.residual[i] = stream / lim;
            } else {
                stream = self.norm_worst(i);
            }
        }
        s
    }

    fn flow(&self, s: &Int8LayerScales, input: f32) -> Flow {
        let subs = self.sublayers();
        let (mut stream, mut ins, mut x) = ([input; 3], [input; 3], input);
        for i in 0..subs {
            stream[i] = x;
            if self.norm_first {
                ins[i] = s.norm[i];
                x = s.residual[i];
            } else {
                ins[i] = x;
                x = s.norm[i];
            }
        }
        Flow {
            attn_in: [ins[0], ins[1]],
            ffn_in: ins[subs - 1],
            stream,
            out: x,
        }
    }

    /// The scale of the layer's output for stage scales `s` and input scale `input`.
    pub fn output_scale(&self, s: &Int8LayerScales, input: f32) -> f32 {
        self.flow(s, input).out
    }

    /// Norms, adds, FFN and self-attention, prepared.
    #[allow(clippy::type_complexity)]
    fn prepare_common<'p>(
        &'p self,
        s: &Int8LayerScales,
        fl: &Flow,
        ints: &mut &'p mut [i32],
        mults: &mut &'p mut [FixedMultiplier],
    ) -> Result<
        (
            [Int8LayerNorm<'p>; 3],
            [Int8Add; 3],
            Int8FfnParams<'p>,
            Int8MhaParams<'p>,
        ),
        Error,
    > {
        let subs = self.sublayers();
        let sub_out = [
            s.self_attn.out,
            if subs == 3 {
                s.cross_attn.out
            } else {
                s.ffn_out
            },
            s.ffn_out,
        ];
        let empty = Int8LayerNorm {
            gamma: &[],
            beta: &[],
            eps: 0,
            input: FixedMultiplier::ONE,
            sublayer: FixedMultiplier::ONE,
        };
        let mut norms = [empty; 3];
        let mut adds = [Int8Add::default(); 3];
        for i in 0..subs {
            let n = &self.norms[i];
            let sub = if self.norm_first {
                None
            } else {
                Some(sub_out[i])
            };
            let e = n.weight.len();
            norms[i] = Int8LayerNorm::prepare(
                n.weight,
                n.bias,
                self.eps,
                fl.stream[i],
                sub,
                s.norm[i],
                take(ints, mul(2, e)?)?,
            )?;
            if self.norm_first {
                adds[i] = Int8Add::prepare(fl.stream[i], sub_out[i], s.residual[i])?;
            }
        }
        let ffn = Int8FfnParams {
            linear1: self.linear1.prepare(fl.ffn_in, s.hidden, ints, mults)?,
            activation: Int8Lut::prepare(self.activation, s.hidden, s.hidden)?,
            linear2: self.linear2.prepare(s.hidden, s.ffn_out, ints, mults)?,
        };
        let x = fl.attn_in[0];
        let self_attn = self.prepare_mha(&self.self_attn, x, x, &s.self_attn, ints, mults)?;
        Ok((norms, adds, ffn, self_attn))
    }

    fn prepare_mha<'p>(
        &self,
        m: &QMha<'a>,
        x: f32,
        kv: f32,
        s: &Int8MhaScales,
        ints: &mut &'p mut [i32],
        mults: &mut &'p mut [FixedMultiplier],
    ) -> Result<Int8MhaParams<'p>, Error>
    where
        'a: 'p,
    {
        let scales = crate::attention::int8::Int8Scales {
            q: s.q,
            k: s.k,
            v: s.v,
            out: s.attn,
        };
        let hd = self.embed / self.heads.max(1);
        Ok(Int8MhaParams {
            q_proj: m.q.prepare(x, s.q, ints, mults)?,
            k_proj: m.k.prepare(kv, s.k, ints, mults)?,
            v_proj: m.v.prepare(kv, s.v, ints, mults)?,
            out_proj: m.out.prepare(s.attn, s.out, ints, mults)?,
            attention: Int8SdpaParams::new(
                scales,
                hd,
                m.attention.score,
                m.attention.scale,
                m.attention.mask,
                Int8Bias::None,
            )?,
        })
    }

    /// The integer params of the encoder layer for stage scales `s` and input scale `input`
    /// (float, once), their tables in `ints` / `multipliers`
    /// ([`int8_encoder_storage_len`]). Errors: a decoder layer
    /// ([`Error::InvalidParameter`]), a bad scale, short storage.
    pub fn prepare_encoder<'p>(
        &'p self,
        s: &Int8LayerScales,
        input: f32,
        ints: &'p mut [i32],
        multipliers: &'p mut [FixedMultiplier],
    ) -> Result<Int8EncoderParams<'p>, Error> {
        if self.cross_attn.is_some() {
            return Err(Error::InvalidParameter);
        }
        let fl = self.flow(s, input);
        let (mut ints, mut mults) = (ints, multipliers);
        let (norms, adds, ffn, self_attn) = self.prepare_common(s, &fl, &mut ints, &mut mults)?;
        Ok(Int8EncoderParams {
            self_attn,
            ffn,
            norm1: norms[0],
            norm2: norms[1],
            residual1: adds[0],
            residual2: adds[1],
            norm_first: self.norm_first,
        })
    }

    /// The integer params of the decoder layer for stage scales `s`, the target at scale
    /// `input` and the memory at scale `memory` (float, once), tables in `ints` /
    /// `multipliers` ([`int8_decoder_storage_len`]). Errors: an encoder layer
    /// ([`Error::InvalidParameter`]), a bad scale, short storage.
    pub fn prepare_decoder<'p>(
        &'p self,
        s: &Int8LayerScales,
        input: f32,
        memory: f32,
        ints: &'p mut [i32],
        multipliers: &'p mut [FixedMultiplier],
    ) -> Result<Int8DecoderParams<'p>, Error> {
        let cross = self.cross_attn.as_ref().ok_or(Error::InvalidParameter)?;
        let fl = self.flow(s, input);
        let (mut ints, mut mults) = (ints, multipliers);
        let (norms, adds, ffn, self_attn) = self.prepare_common(s, &fl, &mut ints, &mut mults)?;
        let cross_attn = self.prepare_mha(
            cross,
            fl.attn_in[1],
            memory,
            &s.cross_attn,
            &mut ints,
            &mut mults,
        )?;
        Ok(Int8DecoderParams {
            self_attn,
            cross_attn,
            ffn,
            norm1: norms[0],
            norm2: norms[1],
            norm3: norms[2],
            residual1: adds[0],
            residual2: adds[1],
            residual3: adds[2],
            norm_first: self.norm_first,
        })
    }

    /// Prepares the params for stage scales `s` and runs the layer once on `src` (`[L, E]`
    /// at scale `input`; a decoder's `memory` `[Ls, E]` with its scale) into `out`;
    /// returns the stage peaks. `scratch` and `acc` as
    /// [`int8_encoder_layer`] / [`int8_decoder_layer`], `ints` and `multipliers` as
    /// [`int8_encoder_storage_len`] / [`int8_decoder_storage_len`].
    ///
    /// Errors: `src` or `memory` not a whole number of rows, `memory` given to an encoder
    /// or missing for a decoder ([`Error::InvalidParameter`]); those of the prepare step
    /// and of the layer.
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        s: &Int8LayerScales,
        src: &[i8],
        input: f32,
        memory: Option<(&[i8], f32)>,
        out: &mut [i8],
        scratch: &mut [i8],
        acc: &mut [i64],
        ints: &mut [i32],
        multipliers: &mut [FixedMultiplier],
    ) -> Result<Int8LayerStats, Error> {
        let e = self.embed;
        let rows = |x: &[i8]| -> Result<usize, Error> {
            let n = x.len() / e;
            if n == 0 || n * e != x.len() {
                return Err(Error::InvalidParameter);
            }
            Ok(n)
        };
        let len = rows(src)?;
        let mut stats = Int8LayerStats::default();
        match (memory, self.cross_attn.is_some()) {
            (None, false) => {
                let shape = EncoderShape::new(len, e, self.heads, self.hidden);
                let p = self.prepare_encoder(s, input, ints, multipliers)?;
                int8_encoder_layer(src, &p, out, shape, scratch, acc, Some(&mut stats))?;
            }
            (Some((mem, mem_scale)), true) => {
                let shape = DecoderShape::new(len, rows(mem)?, e, self.heads, self.hidden);
                let p = self.prepare_decoder(s, input, mem_scale, ints, multipliers)?;
                int8_decoder_layer(src, mem, &p, out, shape, scratch, acc, Some(&mut stats))?;
            }
            _ => return Err(Error::InvalidParameter),
        }
        Ok(stats)
    }

    /// Calibrates the stage scales on a sample input: starts from
    /// [`worst_case_scales`](Self::worst_case_scales), runs the layer `rounds` times, each
    /// run's peaks refining the scales ([`Int8LayerScales::refined`]), then runs once more
    /// with the scales it returns, so `out` holds the layer's output at
    /// [`output_scale`](Self::output_scale). Arguments as [`run`](Self::run).
    ///
    /// Nothing here looks at a reference output: the scales come from the weights and from
    /// what the integer layer produces on `src`.
    #[allow(clippy::too_many_arguments)]
    pub fn calibrate(
        &self,
        src: &[i8],
        input: f32,
        memory: Option<(&[i8], f32)>,
        rounds: usize,
        out: &mut [i8],
        scratch: &mut [i8],
        acc: &mut [i64],
        ints: &mut [i32],
        multipliers: &mut [FixedMultiplier],
    ) -> Result<Int8LayerScales, Error> {
        let mut s = self.worst_case_scales(input, memory.map_or(input, |m| m.1));
        for _ in 0..rounds {
            let st = self.run(&s, src, input, memory, out, scratch, acc, ints, multipliers)?;
            s = s.refined(&st);
        }
        self.run(&s, src, input, memory, out, scratch, acc, ints, multipliers)?;
        Ok(s)
    }
}

/// Both FFN linears, quantized.
fn ffn<'a>(
    f: crate::layers::FfnWeights<'a, f32>,
    e: usize,
    hidden: usize,
    q: &mut &'a mut [i8],
    s: &mut &'a mut [f32],
) -> Result<(QLinear<'a>, QLinear<'a>), Error> {
    Ok((
        QLinear::new(f.w1, f.b1, hidden, e, q, s)?,
        QLinear::new(f.w2, f.b2, e, hidden, q, s)?,
    ))
}

fn check_norms(norms: &[LayerNormWeights<'_, f32>], e: usize) -> Result<(), Error> {
    for n in norms {
        check_len(n.weight, e)?;
        if let Some(b) = n.bias {
            check_len(b, e)?;
        }
    }
    Ok(())
}
