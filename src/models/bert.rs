//! A BERT encoder (Hugging Face `BertModel` weights in a safetensors file) with
//! sentence-transformers pooling: `all-MiniLM-L6-v2` and other BERT-style sentence encoders.
//!
//! # Model
//!
//! Embeddings: `word[token] + position[i] + token_type[0]`, then LayerNorm. Then `layers`
//! post-norm encoder layers, each the library's [`encoder_layer`] (the semantics of
//! `torch.nn.TransformerEncoderLayer` with `norm_first = false` and exact erf GELU), with
//! bidirectional attention over the first `valid` tokens (a key padding mask, so a padded
//! batch row gives the same result as the unpadded sentence). The sentence embedding is the
//! mean of the first `valid` output rows, L2-normalised (sentence-transformers' `Pooling`
//! with `mean` and `Normalize`).
//!
//! Hugging Face names map onto the encoder layer as
//!
//! | `encoder.layer.{i}.` | encoder layer |
//! |---|---|
//! | `attention.self.{query,key,value}.{weight,bias}` | `self_attn.in_proj_{weight,bias}` (stacked) |
//! | `attention.output.dense` | `self_attn.out_proj` |
//! | `attention.output.LayerNorm` | `norm1` |
//! | `intermediate.dense` | `linear1` |
//! | `output.dense` | `linear2` |
//! | `output.LayerNorm` | `norm2` |
//!
//! The library's attention takes PyTorch's stacked `in_proj_weight` `[3E, E]`, while BERT
//! stores `query`, `key` and `value` separately; [`Bert::new`] copies them once into a
//! caller buffer of [`BertConfig::packed_len`] f32s. Every other tensor is used in place
//! from the file's bytes (which must be 4-aligned).
//!
//! # Int8
//!
//! [`BertInt8`] quantizes every linear layer per output channel (`max|w| / 127` per row,
//! [`quantize_per_channel`]) and the word embedding per row. Each matmul quantizes its input
//! rows on the fly (one scale per token, `max|x| / 127`), takes the int8 × int8 dot products
//! exactly in `i32` and scales the sum back to f32 (`dot · s_x · s_w[c] + b[c]`).
//! Attention is the integer-only [`int8_sdpa`] on each head, with `Q`, `K`, `V` quantized per
//! head per call (one scale each); its int8 output uses the value scale, so it cannot
//! saturate. In f32: the embedding sum and its LayerNorm, biases, residual sums,
//! LayerNorms, GELU, the choice of the dynamic scales and the pooling.
//!
//! # Memory
//!
//! f32: the file (all weights used in place) plus [`BertConfig::packed_len`] f32s of stacked
//! `Q/K/V` weights, hidden states `[len, E]` and [`BertConfig::scratch_len`] f32s of scratch.
//! Int8: [`BertInt8::i8_len`] int8 weights and [`BertInt8::f32_len`] f32 scales (the biases,
//! norms, position and token-type embeddings stay in the f32 file), and
//! [`BertInt8::scratch_lens`] of scratch.
//!
//! [`quantize_per_channel`]: crate::quant::quantize_per_channel

use super::safetensors::{SafeTensors, SafetensorsError};
use super::ModelError;
use crate::attention::int8::{int8_sdpa, Int8Bias, Int8Scales, Int8SdpaParams};
use crate::attention::{AttentionShape, Score, SdpaParams};
use crate::error::Error;
use crate::layers::{
    add_layer_norm, encoder_layer, encoder_scratch_len, gelu, layer_norm_in_place, Activation,
    EncoderShape, EncoderWeights, FfnWeights, LayerConfig, LayerNormWeights,
};
use crate::mask::{Mask, MaskTerm};
use crate::mha::MhaWeights;
use crate::quant::{quantize_per_channel, I8_LIMIT};
use core::fmt;

/// Most encoder layers a model may have (BERT-large has 24).
pub const MAX_LAYERS: usize = 24;

/// Why a BERT model could not be loaded or run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum BertError {
    /// The weights file is malformed, or a tensor is missing or has the wrong dtype or shape.
    Weights(SafetensorsError),
    /// A bad configuration, input or buffer.
    Model(ModelError),
}

impl From<SafetensorsError> for BertError {
    fn from(e: SafetensorsError) -> Self {
        BertError::Weights(e)
    }
}

impl From<ModelError> for BertError {
    fn from(e: ModelError) -> Self {
        BertError::Model(e)
    }
}

impl From<Error> for BertError {
    fn from(e: Error) -> Self {
        BertError::Model(ModelError::Kernel(e))
    }
}

impl fmt::Display for BertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BertError::Weights(e) => write!(f, "weights: {e}"),
            BertError::Model(e) => write!(f, "{e}"),
        }
    }
}

impl core::error::Error for BertError {}

/// The sizes of a BERT model (Hugging Face `BertConfig` names in the docs).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BertConfig {
    /// `vocab_size`.
    pub vocab: usize,
    /// `max_position_embeddings`: the longest input.
    pub max_positions: usize,
    /// `type_vocab_size`.
    pub type_vocab: usize,
    /// `hidden_size` `E`.
    pub hidden: usize,
    /// `num_attention_heads`; divides `hidden`.
    pub heads: usize,
    /// `intermediate_size` `F`.
    pub intermediate: usize,
    /// `num_hidden_layers`, at most [`MAX_LAYERS`].
    pub layers: usize,
    /// `layer_norm_eps`.
    pub eps: f32,
}

impl BertConfig {
    /// `sentence-transformers/all-MiniLM-L6-v2`.
    pub const ALL_MINILM_L6_V2: BertConfig = BertConfig {
        vocab: 30522,
        max_positions: 512,
        type_vocab: 2,
        hidden: 384,
        heads: 12,
        intermediate: 1536,
        layers: 6,
        eps: 1e-12,
    };

    /// f32s of the stacked `Q/K/V` weights and biases [`Bert::new`] keeps:
    /// `layers · (3E² + 3E)`.
    pub const fn packed_len(&self) -> usize {
        self.layers.saturating_mul(3).saturating_mul(
            self.hidden
                .saturating_mul(self.hidden)
                .saturating_add(self.hidden),
        )
    }

    /// f32 scratch of [`Bert::forward`] for `len` tokens: the encoder layer's and one
    /// `[len, E]` output buffer.
    pub const fn scratch_len(&self, len: usize) -> usize {
        encoder_scratch_len(self.encoder_shape(len)).saturating_add(len.saturating_mul(self.hidden))
    }

    const fn encoder_shape(&self, len: usize) -> EncoderShape {
        EncoderShape::new(len, self.hidden, self.heads, self.intermediate)
    }

    fn validate(&self) -> Result<(), ModelError> {
        let sizes = [
            self.vocab,
            self.max_positions,
            self.type_vocab,
            self.hidden,
            self.heads,
            self.intermediate,
            self.layers,
        ];
        let eps_ok = self.eps.is_finite() && self.eps >= 0.0;
        if sizes.contains(&0)
            || self.hidden % self.heads != 0
            || self.layers > MAX_LAYERS
            || !eps_ok
        {
            return Err(ModelError::InvalidConfig);
        }
        // Every tensor size must fit a usize.
        let big = self
            .vocab
            .max(self.max_positions)
            .max(self.intermediate)
            .max(self.hidden.saturating_mul(3));
        if big.checked_mul(self.hidden).is_none() || self.packed_len() == usize::MAX {
            return Err(ModelError::InvalidConfig);
        }
        Ok(())
    }

    /// Checks `tokens` against the vocabulary and positions, and `valid`; returns the length.
    fn check_input(&self, tokens: &[u32], valid: usize) -> Result<usize, ModelError> {
        let len = tokens.len();
        if len == 0 || len > self.max_positions {
            return Err(ModelError::PositionOutOfRange {
                pos: len,
                capacity: self.max_positions,
            });
        }
        if valid == 0 || valid > len {
            return Err(ModelError::InvalidConfig);
        }
        for &t in tokens {
            if t as usize >= self.vocab {
                return Err(ModelError::TokenOutOfRange {
                    token: t,
                    vocab_size: self.vocab,
                });
            }
        }
        Ok(len)
    }
}

/// One encoder layer's f32 weights.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Layer<'a> {
    in_proj_weight: &'a [f32],
    in_proj_bias: &'a [f32],
    out_weight: &'a [f32],
    out_bias: &'a [f32],
    norm1: (&'a [f32], &'a [f32]),
    w1: &'a [f32],
    b1: &'a [f32],
    w2: &'a [f32],
    b2: &'a [f32],
    norm2: (&'a [f32], &'a [f32]),
}

impl<'a> Layer<'a> {
    fn encoder_weights(&self) -> EncoderWeights<'a, f32> {
        let norm = |(weight, bias): (&'a [f32], &'a [f32])| LayerNormWeights {
            weight,
            bias: Some(bias),
        };
        EncoderWeights {
            self_attn: MhaWeights {
                in_proj_weight: self.in_proj_weight,
                in_proj_bias: Some(self.in_proj_bias),
                out_proj_weight: self.out_weight,
                out_proj_bias: Some(self.out_bias),
            },
            ffn: FfnWeights {
                w1: self.w1,
                b1: Some(self.b1),
                w2: self.w2,
                b2: Some(self.b2),
            },
            norm1: norm(self.norm1),
            norm2: norm(self.norm2),
        }
    }
}

/// A tensor name built on the stack (`encoder.layer.{i}.{suffix}`).
struct Name {
    buf: [u8; 128],
    len: usize,
}

impl fmt::Write for Name {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len.checked_add(s.len()).ok_or(fmt::Error)?;
        self.buf
            .get_mut(self.len..end)
            .ok_or(fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// `f32` tensor `encoder.layer.{layer}.{suffix}` of shape `shape`.
fn layer_tensor<'a>(
    st: &SafeTensors<'a>,
    layer: usize,
    suffix: fmt::Arguments<'_>,
    shape: &[usize],
) -> Result<&'a [f32], BertError> {
    let mut name = Name {
        buf: [0; 128],
        len: 0,
    };
    // A name too long for the buffer cannot be in a BERT file.
    fmt::write(&mut name, format_args!("encoder.layer.{layer}.{suffix}"))
        .map_err(|_| SafetensorsError::NotFound)?;
    let name =
        core::str::from_utf8(&name.buf[..name.len]).map_err(|_| SafetensorsError::NotFound)?;
    Ok(st.f32(name, shape)?)
}

/// An f32 BERT encoder whose weights are views of a safetensors file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bert<'a> {
    config: BertConfig,
    word: &'a [f32],
    position: &'a [f32],
    token_type: &'a [f32],
    embedding_norm: (&'a [f32], &'a [f32]),
    layers: [Layer<'a>; MAX_LAYERS],
}

impl<'a> Bert<'a> {
    /// Finds every tensor of `config` in `st` (checking dtype F32 and shape) and stacks the
    /// `query`/`key`/`value` weights and biases into `packed` (at least
    /// [`BertConfig::packed_len`] f32s). The names are those of `BertModel`
    /// (`embeddings.*`, `encoder.layer.{i}.*`), as sentence-transformers saves them.
    ///
    /// Errors: a bad configuration ([`ModelError::InvalidConfig`]), a short `packed`, a
    /// missing tensor, one of another dtype or shape, data not 4-aligned.
    pub fn new(
        st: &SafeTensors<'a>,
        config: BertConfig,
        packed: &'a mut [f32],
    ) -> Result<Self, BertError> {
        config.validate()?;
        let (e, f) = (config.hidden, config.intermediate);
        let needed = config.packed_len();
        let found = packed.len();
        let mut packed = packed
            .get_mut(..needed)
            .ok_or(ModelError::BufferTooSmall { needed, found })?;
        let mut model = Bert {
            config,
            word: st.f32("embeddings.word_embeddings.weight", &[config.vocab, e])?,
            position: st.f32(
                "embeddings.position_embeddings.weight",
                &[config.max_positions, e],
            )?,
            token_type: st.f32(
                "embeddings.token_type_embeddings.weight",
                &[config.type_vocab, e],
            )?,
            embedding_norm: (
                st.f32("embeddings.LayerNorm.weight", &[e])?,
                st.f32("embeddings.LayerNorm.bias", &[e])?,
            ),
            layers: [Layer::default(); MAX_LAYERS],
        };
        for (i, layer) in model.layers[..config.layers].iter_mut().enumerate() {
            let t = |suffix: &str, shape: &[usize]| {
                layer_tensor(st, i, format_args!("{suffix}"), shape)
            };
            // Stack Wq, Wk, Wv, then bq, bk, bv, as `in_proj_weight` / `in_proj_bias`.
            let (weight, rest) = core::mem::take(&mut packed).split_at_mut(3 * e * e);
            let (bias, rest) = rest.split_at_mut(3 * e);
            packed = rest;
            for (j, part) in ["query", "key", "value"].iter().enumerate() {
                let w = layer_tensor(st, i, format_args!("attention.self.{part}.weight"), &[e, e])?;
                weight[j * e * e..][..e * e].copy_from_slice(w);
                let b = layer_tensor(st, i, format_args!("attention.self.{part}.bias"), &[e])?;
                bias[j * e..][..e].copy_from_slice(b);
            }
            *layer = Layer {
                in_proj_weight: weight,
                in_proj_bias: bias,
                out_weight: t("attention.output.dense.weight", &[e, e])?,
                out_bias: t("attention.output.dense.bias", &[e])?,
                norm1: (
                    t("attention.output.LayerNorm.weight", &[e])?,
                    t("attention.output.LayerNorm.bias", &[e])?,
                ),
                w1: t("intermediate.dense.weight", &[f, e])?,
                b1: t("intermediate.dense.bias", &[f])?,
                w2: t("output.dense.weight", &[e, f])?,
                b2: t("output.dense.bias", &[e])?,
                norm2: (
                    t("output.LayerNorm.weight", &[e])?,
                    t("output.LayerNorm.bias", &[e])?,
                ),
            };
        }
        Ok(model)
    }

    /// The configuration.
    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Runs the encoder on `tokens` (`len` ids, of which the first `valid` are the sentence
    /// and the rest padding that no token attends to), writing the last hidden states
    /// `[len, E]` to `hidden`. `scratch` holds [`BertConfig::scratch_len`]`(len)` f32s.
    ///
    /// Errors: an empty input or one longer than `max_positions`, `valid` not in `1..=len`,
    /// a token outside the vocabulary, short buffers.
    pub fn forward(
        &self,
        tokens: &[u32],
        valid: usize,
        hidden: &mut [f32],
        scratch: &mut [f32],
    ) -> Result<(), BertError> {
        let c = &self.config;
        let len = c.check_input(tokens, valid)?;
        let n = len * c.hidden;
        check_buffer(hidden, n)?;
        check_buffer(scratch, c.scratch_len(len))?;
        let hidden = &mut hidden[..n];
        let (out, scratch) = scratch.split_at_mut(n);
        embed(self, self.word_row_f32(), tokens, hidden)?;

        let terms = [MaskTerm::KeyPadding { valid }];
        let config = LayerConfig {
            activation: Activation::Gelu,
            norm_first: false,
            eps: c.eps,
            self_attention: SdpaParams {
                mask: Mask::new(&terms),
                ..SdpaParams::default()
            },
            cross_attention: SdpaParams::default(),
        };
        let shape = c.encoder_shape(len);
        for layer in &self.layers[..c.layers] {
            let weights = layer.encoder_weights();
            encoder_layer(hidden, &weights, out, shape, &config, &mut [], scratch)?;
            hidden.copy_from_slice(out);
        }
        Ok(())
    }

    /// The word-embedding lookup of the f32 model.
    fn word_row_f32(&self) -> impl Fn(usize, &mut [f32]) -> Result<(), ModelError> + '_ {
        move |token, row| {
            let e = self.config.hidden;
            let src = self
                .word
                .get(token * e..(token + 1) * e)
                .ok_or(ModelError::InvalidConfig)?;
            row.copy_from_slice(src);
            Ok(())
        }
    }
}

/// `buffer.len() >= needed`, or [`ModelError::BufferTooSmall`].
fn check_buffer<T>(buffer: &[T], needed: usize) -> Result<(), ModelError> {
    if buffer.len() < needed {
        Err(ModelError::BufferTooSmall {
            needed,
            found: buffer.len(),
        })
    } else {
        Ok(())
    }
}

/// The embedding layer: `word(token) + position[i] + token_type[0]`, then LayerNorm.
fn embed(
    model: &Bert<'_>,
    word: impl Fn(usize, &mut [f32]) -> Result<(), ModelError>,
    tokens: &[u32],
    hidden: &mut [f32],
) -> Result<(), BertError> {
    let c = &model.config;
    let e = c.hidden;
    let type0 = model.token_type.get(..e).ok_or(ModelError::InvalidConfig)?;
    for ((row, &token), pos) in hidden
        .chunks_exact_mut(e)
        .zip(tokens)
        .zip(model.position.chunks_exact(e))
    {
        word(token as usize, row)?;
        for ((x, &p), &t) in row.iter_mut().zip(pos).zip(type0) {
            *x += p + t;
        }
    }
    let (w, b) = model.embedding_norm;
    layer_norm_in_place(hidden, w, Some(b), e, c.eps)?;
    Ok(())
}

/// The sentence embedding: the mean of the first `valid` rows of `hidden` (`[len, dim]`),
/// divided by its L2 norm (by `1e-12` if the norm is smaller, as `torch.nn.functional.normalize`).
///
/// Errors: `dim` zero or `hidden` not a multiple of it, `valid` zero or more than the rows,
/// `out` not `dim` long.
///
/// ```
/// use microattn::models::bert::mean_pool_normalize;
/// let hidden = [2.0f32, 3.0, 4.0, 5.0, 100.0, 100.0];
/// let mut out = [0.0f32; 2];
/// mean_pool_normalize(&hidden, 2, 2, &mut out)?; // the third row is padding
/// assert_eq!(out, [0.6, 0.8]);
/// # Ok::<(), microattn::models::ModelError>(())
/// ```
pub fn mean_pool_normalize(
    hidden: &[f32],
    dim: usize,
    valid: usize,
    out: &mut [f32],
) -> Result<(), ModelError> {
    if dim == 0 || hidden.len() % dim != 0 || out.len() != dim {
        return Err(ModelError::InvalidConfig);
    }
    if valid == 0 || valid > hidden.len() / dim {
        return Err(ModelError::InvalidConfig);
    }
    out.fill(0.0);
    for row in hidden.chunks_exact(dim).take(valid) {
        for (o, &x) in out.iter_mut().zip(row) {
            *o += x;
        }
    }
    let inv_n = 1.0 / valid as f32;
    let mut sq = 0.0f32;
    for o in out.iter_mut() {
        *o *= inv_n;
        sq += *o * *o;
    }
    let norm = crate::math::sqrt(sq).max(1e-12);
    for o in out.iter_mut() {
        *o /= norm;
    }
    Ok(())
}

/// One int8 linear layer: per-output-channel int8 weights `[out, in]`, their scales, and
/// the f32 bias.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct QLinear<'a> {
    weight: &'a [i8],
    scales: &'a [f32],
    bias: &'a [f32],
}

/// One encoder layer in int8 (norms stay those of the f32 layer).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct QLayer<'a> {
    q: QLinear<'a>,
    k: QLinear<'a>,
    v: QLinear<'a>,
    out: QLinear<'a>,
    ffn1: QLinear<'a>,
    ffn2: QLinear<'a>,
}

/// Quantizes `w` (`[rows, cols]`) per row into the front of `values` / `scales`; returns the
/// quantized parts and leaves the rest in the two cursors.
fn quantize_matrix<'a>(
    w: &[f32],
    rows: usize,
    values: &mut &'a mut [i8],
    scales: &mut &'a mut [f32],
) -> Result<(&'a [i8], &'a [f32]), BertError> {
    let total_v = w.len();
    let found_v = values.len();
    let (v, rest_v) = core::mem::take(values)
        .split_at_mut_checked(w.len())
        .ok_or(ModelError::BufferTooSmall {
            needed: total_v,
            found: found_v,
        })?;
    *values = rest_v;
    let found_s = scales.len();
    let (s, rest_s) =
        core::mem::take(scales)
            .split_at_mut_checked(rows)
            .ok_or(ModelError::BufferTooSmall {
                needed: rows,
                found: found_s,
            })?;
    *scales = rest_s;
    let cols = w.len() / rows;
    for (scale, row) in s.iter_mut().zip(w.chunks_exact(cols)) {
        *scale = step(row);
    }
    quantize_per_channel(w, s, v)?;
    Ok((v, s))
}

/// The symmetric int8 step of `x`: `max|x| / 127`, or 1 for an all-zero (or non-finite) `x`.
fn step(x: &[f32]) -> f32 {
    let max = x.iter().fold(0.0f32, |m, v| m.max(libm::fabsf(*v)));
    let s = max / I8_LIMIT as f32;
    if s > 0.0 && s.is_finite() {
        s
    } else {
        1.0
    }
}

/// A BERT encoder with int8 weights, int8 matmuls and int8 attention (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BertInt8<'a> {
    f32_model: Bert<'a>,
    word: &'a [i8],
    word_scales: &'a [f32],
    layers: [QLayer<'a>; MAX_LAYERS],
}

impl<'a> BertInt8<'a> {
    /// int8 values of the quantized weights: the word embedding and the six matrices of
    /// every layer, `V·E + layers · (4E² + 2EF)`.
    pub const fn i8_len(config: &BertConfig) -> usize {
        let e = config.hidden;
        let layer = e
            .saturating_mul(e)
            .saturating_mul(4)
            .saturating_add(e.saturating_mul(config.intermediate).saturating_mul(2));
        config
            .vocab
            .saturating_mul(e)
            .saturating_add(config.layers.saturating_mul(layer))
    }

    /// f32 scales of the quantized weights: one per embedding row and per output channel,
    /// `V + layers · (5E + F)`.
    pub const fn f32_len(config: &BertConfig) -> usize {
        let layer = config
            .hidden
            .saturating_mul(5)
            .saturating_add(config.intermediate);
        config
            .vocab
            .saturating_add(config.layers.saturating_mul(layer))
    }

    /// Scratch of [`BertInt8::forward`] for `len` tokens: `(f32, i8, i64)` elements,
    /// `len · (5E + F + 1)`, `len · (4E + max(E, F))` and `E / heads`.
    pub const fn scratch_lens(config: &BertConfig, len: usize) -> (usize, usize, usize) {
        let (e, f) = (config.hidden, config.intermediate);
        let wide = if e > f { e } else { f };
        let f32s = len.saturating_mul(e.saturating_mul(5).saturating_add(f).saturating_add(1));
        let i8s = len.saturating_mul(e.saturating_mul(4).saturating_add(wide));
        let hd = match e.checked_div(config.heads) {
            Some(hd) => hd,
            None => 0,
        };
        (f32s, i8s, hd)
    }

    /// Quantizes `model` into `values` ([`BertInt8::i8_len`] int8s) and `scales`
    /// ([`BertInt8::f32_len`] f32s). Biases, norms, position and token-type embeddings are
    /// borrowed from `model`.
    pub fn quantize(
        model: &Bert<'a>,
        values: &'a mut [i8],
        scales: &'a mut [f32],
    ) -> Result<Self, BertError> {
        let c = model.config;
        let (e, f) = (c.hidden, c.intermediate);
        let (mut values, mut scales) = (values, scales);
        let (word, word_scales) = quantize_matrix(model.word, c.vocab, &mut values, &mut scales)?;
        let mut layers = [QLayer::default(); MAX_LAYERS];
        for (q, l) in layers.iter_mut().zip(&model.layers[..c.layers]) {
            let mut linear = |w: &[f32], bias: &'a [f32], rows: usize| {
                quantize_matrix(w, rows, &mut values, &mut scales).map(|(weight, scales)| QLinear {
                    weight,
                    scales,
                    bias,
                })
            };
            let (ee, w, b) = (e * e, l.in_proj_weight, l.in_proj_bias);
            *q = QLayer {
                q: linear(&w[..ee], &b[..e], e)?,
                k: linear(&w[ee..2 * ee], &b[e..2 * e], e)?,
                v: linear(&w[2 * ee..], &b[2 * e..], e)?,
                out: linear(l.out_weight, l.out_bias, e)?,
                ffn1: linear(l.w1, l.b1, f)?,
                ffn2: linear(l.w2, l.b2, e)?,
            };
        }
        Ok(BertInt8 {
            f32_model: *model,
            word,
            word_scales,
            layers,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BertConfig {
        &self.f32_model.config
    }

    /// As [`Bert::forward`], in int8. Scratch: [`BertInt8::scratch_lens`]`(config, len)`
    /// f32s, int8s and i64s.
    pub fn forward(
        &self,
        tokens: &[u32],
        valid: usize,
        hidden: &mut [f32],
        scratch: &mut [f32],
        scratch_i8: &mut [i8],
        acc: &mut [i64],
    ) -> Result<(), BertError> {
        let c = self.f32_model.config;
        let len = c.check_input(tokens, valid)?;
        let (e, f, heads) = (c.hidden, c.intermediate, c.heads);
        let hd = e / heads;
        let n = len * e;
        let (need_f, need_i, need_acc) = Self::scratch_lens(&c, len);
        check_buffer(hidden, n)?;
        check_buffer(scratch, need_f)?;
        check_buffer(scratch_i8, need_i)?;
        check_buffer(acc, need_acc)?;
        let hidden = &mut hidden[..n];
        let acc = &mut acc[..hd];
        // f32 areas: Q, K, V, attention output [len, E]; FFN hidden [len, F]; sublayer
        // output [len, E]; per-row scales [len].
        let (q, rest) = scratch.split_at_mut(n);
        let (k, rest) = rest.split_at_mut(n);
        let (v, rest) = rest.split_at_mut(n);
        let (ctx, rest) = rest.split_at_mut(n);
        let (h, rest) = rest.split_at_mut(len * f);
        let (y, rest) = rest.split_at_mut(n);
        let row_scales = &mut rest[..len];
        // int8 areas: Q, K, V, attention output head-major [heads, len, hd]; quantized rows.
        let (qi, rest) = scratch_i8.split_at_mut(n);
        let (ki, rest) = rest.split_at_mut(n);
        let (vi, rest) = rest.split_at_mut(n);
        let (ci, rest) = rest.split_at_mut(n);
        let xq = &mut rest[..len * e.max(f)];

        embed(&self.f32_model, self.word_row(), tokens, hidden)?;
        let terms = [MaskTerm::KeyPadding { valid }];
        let shape = AttentionShape::single(len, len, hd, hd);
        for (ql, fl) in self.layers[..c.layers]
            .iter()
            .zip(&self.f32_model.layers[..c.layers])
        {
            // Self-attention: Q, K, V from the same quantized rows.
            quantize_rows(hidden, e, xq, row_scales);
            linear_i8(xq, row_scales, &ql.q, q, e);
            linear_i8(xq, row_scales, &ql.k, k, e);
            linear_i8(xq, row_scales, &ql.v, v, e);
            let head_len = len * hd;
            for hh in 0..heads {
                let at = hh * head_len..(hh + 1) * head_len;
                let sq = gather_head(q, e, hh, hd, valid, &mut qi[at.clone()]);
                let sk = gather_head(k, e, hh, hd, valid, &mut ki[at.clone()]);
                let sv = gather_head(v, e, hh, hd, valid, &mut vi[at.clone()]);
                let scales = Int8Scales {
                    q: sq,
                    k: sk,
                    v: sv,
                    out: sv,
                };
                let params = Int8SdpaParams::new(
                    scales,
                    hd,
                    Score::Dot,
                    None,
                    Mask::new(&terms),
                    Int8Bias::None,
                )?;
                int8_sdpa(
                    &qi[at.clone()],
                    &ki[at.clone()],
                    &vi[at.clone()],
                    &mut ci[at.clone()],
                    shape,
                    &params,
                    acc,
                )?;
                for (row, src) in ctx.chunks_exact_mut(e).zip(ci[at].chunks_exact(hd)) {
                    for (o, &x) in row[hh * hd..][..hd].iter_mut().zip(src) {
                        *o = f32::from(x) * sv;
                    }
                }
            }
            quantize_rows(ctx, e, xq, row_scales);
            linear_i8(xq, row_scales, &ql.out, y, e);
            let (w1, b1) = fl.norm1;
            add_layer_norm(hidden, &*y, w1, Some(b1), e, c.eps)?;

            // FFN.
            quantize_rows(hidden, e, xq, row_scales);
            linear_i8(xq, row_scales, &ql.ffn1, h, e);
            for x in h.iter_mut() {
                *x = gelu(*x);
            }
            quantize_rows(h, f, xq, row_scales);
            linear_i8(xq, row_scales, &ql.ffn2, y, f);
            let (w2, b2) = fl.norm2;
            add_layer_norm(hidden, &*y, w2, Some(b2), e, c.eps)?;
        }
        Ok(())
    }

    /// The word-embedding lookup of the int8 model (dequantized).
    fn word_row(&self) -> impl Fn(usize, &mut [f32]) -> Result<(), ModelError> + '_ {
        move |token, row| {
            let e = self.f32_model.config.hidden;
            let src = self
                .word
                .get(token * e..(token + 1) * e)
                .ok_or(ModelError::InvalidConfig)?;
            let s = *self
                .word_scales
                .get(token)
                .ok_or(ModelError::InvalidConfig)?;
            for (o, &q) in row.iter_mut().zip(src) {
                *o = f32::from(q) * s;
            }
            Ok(())
        }
    }
}

/// Quantizes every row of `x` (`[rows, cols]`) with its own step into `out`, the steps into
/// `scales`.
fn quantize_rows(x: &[f32], cols: usize, out: &mut [i8], scales: &mut [f32]) {
    for ((row, q), s) in x
        .chunks_exact(cols)
        .zip(out.chunks_exact_mut(cols))
        .zip(scales.iter_mut())
    {
        *s = step(row);
        let inv = 1.0 / *s;
        for (o, &v) in q.iter_mut().zip(row) {
            *o = libm::roundf(v * inv).clamp(-(I8_LIMIT as f32), I8_LIMIT as f32) as i8;
        }
    }
}

/// `y = (xq · Wqᵀ) · s_x · s_w + b` for int8 rows `xq` (`[rows, cols]`, steps `x_scales`):
/// exact `i32` dot products, scaled to f32 once per output.
fn linear_i8(xq: &[i8], x_scales: &[f32], layer: &QLinear<'_>, y: &mut [f32], cols: usize) {
    let outs = layer.scales.len();
    for ((x_row, &sx), y_row) in xq
        .chunks_exact(cols)
        .zip(x_scales)
        .zip(y.chunks_exact_mut(outs))
    {
        for (((o, w_row), &sw), &b) in y_row
            .iter_mut()
            .zip(layer.weight.chunks_exact(cols))
            .zip(layer.scales)
            .zip(layer.bias)
        {
            let dot: i32 = x_row
                .iter()
                .zip(w_row)
                .map(|(&a, &w)| i32::from(a) * i32::from(w))
                .sum();
            *o = dot as f32 * (sx * sw) + b;
        }
    }
}

/// Head `h` of `x` (`[rows, E]`, features `h·hd..`) quantized with one step into `out`
/// (`[rows, hd]`); returns the step. The step comes from the first `valid` rows only, so
/// padding (masked as keys, ignored as queries) does not change the result of real tokens.
fn gather_head(x: &[f32], e: usize, h: usize, hd: usize, valid: usize, out: &mut [i8]) -> f32 {
    let max = x
        .chunks_exact(e)
        .take(valid)
        .flat_map(|row| &row[h * hd..][..hd])
        .fold(0.0f32, |m, v| m.max(libm::fabsf(*v)));
    let s = if max > 0.0 && max.is_finite() {
        max / I8_LIMIT as f32
    } else {
        1.0
    };
    let inv = 1.0 / s;
    for (row, o) in x.chunks_exact(e).zip(out.chunks_exact_mut(hd)) {
        for (q, &v) in o.iter_mut().zip(&row[h * hd..][..hd]) {
            *q = libm::roundf(v * inv).clamp(-(I8_LIMIT as f32), I8_LIMIT as f32) as i8;
        }
    }
    s
}
