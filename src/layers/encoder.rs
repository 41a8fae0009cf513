//! Transformer encoder layer with the semantics and state dict of
//! `torch.nn.TransformerEncoderLayer` (batch-first, one sequence, inference: no dropout).
//!
//! Post-norm (`norm_first = false`, PyTorch's default, BERT):
//! `x = LN1(x + SelfAttn(x))`, `x = LN2(x + FFN(x))`.
//! Pre-norm (`norm_first = true`): `x = x + SelfAttn(LN1(x))`, `x = x + FFN(LN2(x))`.
//!
//! The attention is [`crate::mha`] with any [`SdpaParams`]: a key padding mask
//! ([`MaskTerm::KeyPadding`](crate::mask::MaskTerm::KeyPadding)) for BERT-style batches of
//! padded sequences, a causal or windowed mask, ALiBi or T5 biases. The FFN output stays in
//! f32 until the residual and the norm are applied, so the layer rounds to the storage type
//! only where a sublayer hands its result to the next one.
//!
//! Memory: weights as PyTorch has them, an activation buffer of [`encoder_buffer_len`]
//! storage elements (none for post-norm), and [`encoder_scratch_len`] f32 of scratch shared
//! by the attention and the FFN ([`encoder_footprint`] sums it up).

use super::ffn::{ffn_rows, ffn_rows_scratch_len};
use super::{
    add_layer_norm, layer_norm, Activation, FfnShape, FfnWeights, Footprint, LayerNormWeights,
};
use crate::attention::{AttentionShape, SdpaParams};
use crate::element::Element;
use crate::error::{check_len, mul, nonzero, product, Error};
use crate::mha::{mha_scratch_len, mha_typed, MhaShape, MhaWeights};

/// Sizes of an encoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EncoderShape {
    /// Sequence length `L`.
    pub len: usize,
    /// Model width `E` (`d_model`).
    pub embed: usize,
    /// Attention heads (`nhead`); must divide `embed`.
    pub heads: usize,
    /// FFN hidden width (`dim_feedforward`).
    pub hidden: usize,
}

impl EncoderShape {
    /// `len` tokens of width `embed`, `heads` heads, FFN width `hidden`.
    pub const fn new(len: usize, embed: usize, heads: usize, hidden: usize) -> Self {
        EncoderShape {
            len,
            embed,
            heads,
            hidden,
        }
    }
}

/// Everything about a layer except its weights and tensors.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LayerConfig<'a> {
    /// FFN activation (`relu` or `gelu` in PyTorch; any [`Activation`] here).
    pub activation: Activation,
    /// Pre-norm (`true`) or post-norm (`false`).
    pub norm_first: bool,
    /// LayerNorm epsilon; finite and non-negative.
    pub eps: f32,
    /// Self-attention mask, bias, scale and score.
    pub self_attention: SdpaParams<'a>,
    /// Cross-attention mask, bias, scale and score (decoder only; `memory_mask`).
    pub cross_attention: SdpaParams<'a>,
}

impl Default for LayerConfig<'_> {
    /// PyTorch's defaults: ReLU, post-norm, `eps = 1e-5`, no masks.
    fn default() -> Self {
        LayerConfig {
            activation: Activation::Relu,
            norm_first: false,
            eps: 1e-5,
            self_attention: SdpaParams::default(),
            cross_attention: SdpaParams::default(),
        }
    }
}

/// The parameters of one `TransformerEncoderLayer`, named as in its state dict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderWeights<'a, E = f32> {
    /// `self_attn.*`.
    pub self_attn: MhaWeights<'a, E>,
    /// `linear1.*` (as `w1`, `b1`) and `linear2.*` (as `w2`, `b2`).
    pub ffn: FfnWeights<'a, E>,
    /// `norm1.*`.
    pub norm1: LayerNormWeights<'a, E>,
    /// `norm2.*`.
    pub norm2: LayerNormWeights<'a, E>,
}

/// Storage elements of the activation buffer [`encoder_layer`] needs: `L·E` for pre-norm,
/// none for post-norm.
pub const fn encoder_buffer_len(shape: EncoderShape, norm_first: bool) -> usize {
    if norm_first {
        shape.len.saturating_mul(shape.embed)
    } else {
        0
    }
}

/// f32 scratch of [`encoder_layer`]: the attention's ([`mha_scratch_len`], `4·L·E`), which
/// the FFN reuses (it needs `hidden + E` per row and takes as many rows at a time as fit).
pub const fn encoder_scratch_len(shape: EncoderShape) -> usize {
    let attention = mha_scratch_len(shape.len, shape.len, shape.embed);
    let ffn = ffn_rows_scratch_len(FfnShape::new(shape.len, shape.embed, shape.hidden));
    if attention > ffn {
        attention
    } else {
        ffn
    }
}

/// Weights of one `nn.MultiheadAttention` with biases: `4·E² + 4·E`.
pub(super) const fn mha_weights_len(embed: usize) -> usize {
    embed
        .saturating_mul(embed)
        .saturating_add(embed)
        .saturating_mul(4)
}

/// Weights of the FFN with biases and of `norms` LayerNorms.
pub(super) const fn ffn_and_norms_len(embed: usize, hidden: usize, norms: usize) -> usize {
    embed
        .saturating_mul(hidden)
        .saturating_mul(2)
        .saturating_add(hidden)
        .saturating_add(embed)
        .saturating_add(embed.saturating_mul(2).saturating_mul(norms))
}

/// Memory of an encoder layer with every bias: weights, activation buffer, scratch.
pub const fn encoder_footprint(shape: EncoderShape, norm_first: bool) -> Footprint {
    Footprint {
        weights: mha_weights_len(shape.embed).saturating_add(ffn_and_norms_len(
            shape.embed,
            shape.hidden,
            2,
        )),
        buffers: encoder_buffer_len(shape, norm_first),
        scratch: encoder_scratch_len(shape),
        state: 0,
    }
}

/// Checks the lengths of attention weights for width `e`.
pub(super) fn check_mha_weights<E>(w: &MhaWeights<'_, E>, e: usize) -> Result<(), Error> {
    check_len(w.in_proj_weight, product(&[3, e, e])?)?;
    if let Some(b) = w.in_proj_bias {
        check_len(b, mul(3, e)?)?;
    }
    check_len(w.out_proj_weight, mul(e, e)?)?;
    if let Some(b) = w.out_proj_bias {
        check_len(b, e)?;
    }
    Ok(())
}

/// Checks FFN weights for width `e` and hidden width `f`.
pub(super) fn check_ffn_weights<E>(w: &FfnWeights<'_, E>, e: usize, f: usize) -> Result<(), Error> {
    let wlen = mul(e, f)?;
    check_len(w.w1, wlen)?;
    check_len(w.w2, wlen)?;
    if let Some(b) = w.b1 {
        check_len(b, f)?;
    }
    if let Some(b) = w.b2 {
        check_len(b, e)?;
    }
    Ok(())
}

/// Checks an epsilon (finite, non-negative).
pub(super) fn check_eps(eps: f32) -> Result<(), Error> {
    if eps.is_finite() && eps >= 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidScale)
    }
}

/// `buffer[..needed]`, or [`Error::ScratchTooSmall`].
pub(super) fn take<T>(buffer: &mut [T], needed: usize) -> Result<&mut [T], Error> {
    let found = buffer.len();
    buffer
        .get_mut(..needed)
        .ok_or(Error::ScratchTooSmall { needed, found })
}

/// `out[i] = out[i] + add[i]`, rounded once to the storage type.
pub(super) fn add_in_place<E: Element, A: Element>(out: &mut [E], add: &[A]) {
    for (o, &a) in out.iter_mut().zip(add) {
        *o = E::from_f32(o.to_f32() + a.to_f32());
    }
}

/// Runs the FFN sublayer on `x` and folds its f32 output into the residual stream:
/// post-norm `x = LN(x + FFN(x))` in place; pre-norm `residual += FFN(x)` (`x` holds the
/// normalized input then).
pub(super) fn ffn_sublayer<E: Element>(
    x: &mut [E],
    residual: Option<&mut [E]>,
    weights: &FfnWeights<'_, E>,
    norm: &LayerNormWeights<'_, E>,
    config: &LayerConfig<'_>,
    shape: FfnShape,
    scratch: &mut [f32],
) -> Result<(), Error> {
    let (e, eps) = (shape.dim, config.eps);
    // Never 0 from the layers (validated); checked so that the chunking cannot panic.
    if e == 0 {
        return Err(Error::ZeroDimension);
    }
    match residual {
        None => ffn_rows(x, weights, config.activation, shape, scratch, |row, y| {
            add_layer_norm(row, y, norm.weight, norm.bias, e, eps)
        }),
        Some(residual) => {
            let mut rows = residual.chunks_exact_mut(e);
            ffn_rows(x, weights, config.activation, shape, scratch, |_, y| {
                let row = rows.next().ok_or(Error::LengthMismatch {
                    expected: shape.rows * e,
                    found: 0,
                })?;
                add_in_place(row, y);
                Ok(())
            })
        }
    }
}

/// One `TransformerEncoderLayer` on `src` (`[L, E]`) into `out` (`[L, E]`).
///
/// `buffer` holds at least [`encoder_buffer_len`] storage elements and `scratch` at least
/// [`encoder_scratch_len`] f32; both are clobbered. The self-attention uses
/// `config.self_attention` (`cross_attention` is ignored).
///
/// Errors, all checked before anything is written: a zero dimension, `heads` not dividing
/// `embed` ([`Error::HeadsMismatch`]), a tensor or weight length that does not match, a bad
/// epsilon ([`Error::InvalidScale`]), an invalid mask, bias or scale, a buffer or scratch too
/// small ([`Error::ScratchTooSmall`]).
///
/// ```
/// use microattn::layers::{
///     encoder_buffer_len, encoder_layer, encoder_scratch_len, EncoderShape, EncoderWeights,
///     FfnWeights, LayerConfig, LayerNormWeights,
/// };
/// use microattn::mha::MhaWeights;
///
/// const SHAPE: EncoderShape = EncoderShape::new(3, 4, 2, 8);
/// let (in_w, out_w, w1, w2) = ([0.1f32; 48], [0.1f32; 16], [0.1f32; 32], [0.1f32; 32]);
/// let (ones, zeros) = ([1.0f32; 4], [0.0f32; 4]);
/// let norm = LayerNormWeights { weight: &ones, bias: Some(&zeros) };
/// let weights = EncoderWeights {
///     self_attn: MhaWeights {
///         in_proj_weight: &in_w, in_proj_bias: None, out_proj_weight: &out_w, out_proj_bias: None,
///     },
///     ffn: FfnWeights { w1: &w1, b1: None, w2: &w2, b2: None },
///     norm1: norm,
///     norm2: norm,
/// };
/// let src = [1.0f32, 2.0, 3.0, 4.0, 0.0, 1.0, 0.0, 1.0, 4.0, 3.0, 2.0, 1.0];
/// let mut out = [0.0f32; 12];
/// let mut buffer = [0.0f32; encoder_buffer_len(SHAPE, false)];
/// let mut scratch = [0.0f32; encoder_scratch_len(SHAPE)];
/// let config = LayerConfig::default();
/// encoder_layer(&src, &weights, &mut out, SHAPE, &config, &mut buffer, &mut scratch)?;
/// // Post-norm: every output row is normalized (mean 0).
/// assert!(out[..4].iter().sum::<f32>().abs() < 1e-5);
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn encoder_layer<E: Element>(
    src: &[E],
    weights: &EncoderWeights<'_, E>,
    out: &mut [E],
    shape: EncoderShape,
    config: &LayerConfig<'_>,
    buffer: &mut [E],
    scratch: &mut [f32],
) -> Result<(), Error> {
    let EncoderShape {
        len,
        embed: e,
        heads,
        hidden,
    } = shape;
    nonzero(&[len, e, heads, hidden])?;
    if e % heads != 0 {
        return Err(Error::HeadsMismatch);
    }
    let n = mul(len, e)?;
    check_len(src, n)?;
    check_len(out, n)?;
    check_mha_weights(&weights.self_attn, e)?;
    check_ffn_weights(&weights.ffn, e, hidden)?;
    weights.norm1.check(e)?;
    weights.norm2.check(e)?;
    check_eps(config.eps)?;
    let hd = e / heads;
    let attention = AttentionShape::multi_head(heads, heads, len, len, hd, hd);
    config.self_attention.validate(&attention)?;
    let buffer = take(buffer, encoder_buffer_len(shape, config.norm_first))?;
    let needed = encoder_scratch_len(shape);
    if scratch.len() < needed {
        return Err(Error::ScratchTooSmall {
            needed,
            found: scratch.len(),
        });
    }

    let mha_shape = MhaShape::new(len, len, e, heads);
    let ffn_shape = FfnShape::new(len, e, hidden);
    let (sa, n1, n2) = (&weights.self_attn, &weights.norm1, &weights.norm2);
    let params = &config.self_attention;
    if config.norm_first {
        layer_norm(src, n1.weight, n1.bias, buffer, e, config.eps)?;
        mha_typed(buffer, buffer, buffer, sa, out, mha_shape, params, scratch)?;
        add_in_place(out, src);
        layer_norm(out, n2.weight, n2.bias, buffer, e, config.eps)?;
        ffn_sublayer(
            buffer,
            Some(out),
            &weights.ffn,
            n2,
            config,
            ffn_shape,
            scratch,
        )
    } else {
        mha_typed(src, src, src, sa, out, mha_shape, params, scratch)?;
        add_layer_norm(out, src, n1.weight, n1.bias, e, config.eps)?;
        ffn_sublayer(out, None, &weights.ffn, n2, config, ffn_shape, scratch)
    }
}
