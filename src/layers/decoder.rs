//! Transformer decoder layer with the semantics and state dict of
//! `torch.nn.TransformerDecoderLayer` (batch-first, one sequence, inference).
//!
//! Post-norm (`norm_first = false`): `x = LN1(x + SelfAttn(x))`,
//! `x = LN2(x + CrossAttn(x, memory))`, `x = LN3(x + FFN(x))`.
//! Pre-norm: `x = x + SelfAttn(LN1(x))`, `x = x + CrossAttn(LN2(x), memory)`,
//! `x = x + FFN(LN3(x))`.
//!
//! The self-attention takes `config.self_attention` (`tgt_mask`: causal for a language model
//! decoder, with `q_pos_offset` when the target continues a prefix), the cross-attention
//! `config.cross_attention` (`memory_mask`, e.g. key padding of the source). Memory:
//! [`decoder_footprint`].

use super::encoder::{
    add_in_place, check_eps, check_ffn_weights, check_mha_weights, ffn_and_norms_len, ffn_sublayer,
    mha_weights_len, take, LayerConfig,
};
use super::ffn::ffn_rows_scratch_len;
use super::{add_layer_norm, layer_norm, FfnShape, FfnWeights, Footprint, LayerNormWeights};
use crate::attention::AttentionShape;
use crate::element::Element;
use crate::error::{check_len, mul, nonzero, Error};
use crate::mha::{mha_scratch_len, mha_typed, MhaShape, MhaWeights};

/// Sizes of a decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DecoderShape {
    /// Target length `Lt`.
    pub tgt_len: usize,
    /// Memory (encoder output) length `Ls`.
    pub mem_len: usize,
    /// Model width `E`.
    pub embed: usize,
    /// Attention heads; must divide `embed`.
    pub heads: usize,
    /// FFN hidden width.
    pub hidden: usize,
}

impl DecoderShape {
    /// `tgt_len` target tokens attending to `mem_len` memory tokens, all of width `embed`.
    pub const fn new(
        tgt_len: usize,
        mem_len: usize,
        embed: usize,
        heads: usize,
        hidden: usize,
    ) -> Self {
        DecoderShape {
            tgt_len,
            mem_len,
            embed,
            heads,
            hidden,
        }
    }
}

/// The parameters of one `TransformerDecoderLayer`, named as in its state dict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecoderWeights<'a, E = f32> {
    /// `self_attn.*`.
    pub self_attn: MhaWeights<'a, E>,
    /// `multihead_attn.*` (the cross-attention).
    pub cross_attn: MhaWeights<'a, E>,
    /// `linear1.*` and `linear2.*`.
    pub ffn: FfnWeights<'a, E>,
    /// `norm1.*`.
    pub norm1: LayerNormWeights<'a, E>,
    /// `norm2.*`.
    pub norm2: LayerNormWeights<'a, E>,
    /// `norm3.*`.
    pub norm3: LayerNormWeights<'a, E>,
}

/// Storage elements of the activation buffer [`decoder_layer`] needs: `Lt·E` for post-norm
/// (the cross-attention output), `2·Lt·E` for pre-norm (also the normalized input).
pub const fn decoder_buffer_len(shape: DecoderShape, norm_first: bool) -> usize {
    let one = shape.tgt_len.saturating_mul(shape.embed);
    if norm_first {
        one.saturating_mul(2)
    } else {
        one
    }
}

/// f32 scratch of [`decoder_layer`]: the larger attention's ([`mha_scratch_len`]), reused by
/// the FFN.
pub const fn decoder_scratch_len(shape: DecoderShape) -> usize {
    let (lt, ls, e) = (shape.tgt_len, shape.mem_len, shape.embed);
    let mut needed = mha_scratch_len(lt, lt, e);
    let cross = mha_scratch_len(lt, ls, e);
    if cross > needed {
        needed = cross;
    }
    let ffn = ffn_rows_scratch_len(FfnShape::new(lt, e, shape.hidden));
    if ffn > needed {
        needed = ffn;
    }
    needed
}

/// Memory of a decoder layer with every bias: weights, activation buffer, scratch.
pub const fn decoder_footprint(shape: DecoderShape, norm_first: bool) -> Footprint {
    Footprint {
        weights: mha_weights_len(shape.embed)
            .saturating_mul(2)
            .saturating_add(ffn_and_norms_len(shape.embed, shape.hidden, 3)),
        buffers: decoder_buffer_len(shape, norm_first),
        scratch: decoder_scratch_len(shape),
        state: 0,
    }
}

/// One `TransformerDecoderLayer` on `tgt` (`[Lt, E]`) with `memory` (`[Ls, E]`) into `out`
/// (`[Lt, E]`).
///
/// `buffer` holds at least [`decoder_buffer_len`] storage elements and `scratch` at least
/// [`decoder_scratch_len`] f32; both are clobbered.
///
/// Errors, all checked before anything is written: as
/// [`encoder_layer`](super::encoder_layer), for both attentions.
#[allow(clippy::too_many_arguments)]
pub fn decoder_layer<E: Element>(
    tgt: &[E],
    memory: &[E],
    weights: &DecoderWeights<'_, E>,
    out: &mut [E],
    shape: DecoderShape,
    config: &LayerConfig<'_>,
    buffer: &mut [E],
    scratch: &mut [f32],
) -> Result<(), Error> {
    let DecoderShape {
        tgt_len: lt,
        mem_len: ls,
        embed: e,
        heads,
        hidden,
    } = shape;
    nonzero(&[lt, ls, e, heads, hidden])?;
    if e % heads != 0 {
        return Err(Error::HeadsMismatch);
    }
    let n = mul(lt, e)?;
    check_len(tgt, n)?;
    check_len(memory, mul(ls, e)?)?;
    check_len(out, n)?;
    check_mha_weights(&weights.self_attn, e)?;
    check_mha_weights(&weights.cross_attn, e)?;
    check_ffn_weights(&weights.ffn, e, hidden)?;
    for norm in [&weights.norm1, &weights.norm2, &weights.norm3] {
        norm.check(e)?;
    }
    check_eps(config.eps)?;
    let hd = e / heads;
    let self_shape = AttentionShape::multi_head(heads, heads, lt, lt, hd, hd);
    config.self_attention.validate(&self_shape)?;
    let cross_shape = AttentionShape::multi_head(heads, heads, lt, ls, hd, hd);
    config.cross_attention.validate(&cross_shape)?;
    let buffer = take(buffer, decoder_buffer_len(shape, config.norm_first))?;
    let needed = decoder_scratch_len(shape);
    if scratch.len() < needed {
        return Err(Error::ScratchTooSmall {
            needed,
            found: scratch.len(),
        });
    }

    let self_mha = MhaShape::new(lt, lt, e, heads);
    let cross_mha = MhaShape::new(lt, ls, e, heads);
    let ffn_shape = FfnShape::new(lt, e, hidden);
    let (sa, ca) = (&weights.self_attn, &weights.cross_attn);
    let (n1, n2, n3) = (&weights.norm1, &weights.norm2, &weights.norm3);
    let (self_params, cross_params) = (&config.self_attention, &config.cross_attention);
    let eps = config.eps;
    if config.norm_first {
        // `buffer` holds `2n` (taken above); checked so that the split cannot panic.
        let found = buffer.len();
        let (normed, attended) = buffer
            .split_at_mut_checked(n)
            .ok_or(Error::ScratchTooSmall { needed: n, found })?;
        layer_norm(tgt, n1.weight, n1.bias, normed, e, eps)?;
        mha_typed(
            normed,
            normed,
            normed,
            sa,
            out,
            self_mha,
            self_params,
            scratch,
        )?;
        add_in_place(out, tgt);
        layer_norm(out, n2.weight, n2.bias, normed, e, eps)?;
        mha_typed(
            normed,
            memory,
            memory,
            ca,
            attended,
            cross_mha,
            cross_params,
            scratch,
        )?;
        add_in_place(out, attended);
        layer_norm(out, n3.weight, n3.bias, normed, e, eps)?;
        ffn_sublayer(
            normed,
            Some(out),
            &weights.ffn,
            n3,
            config,
            ffn_shape,
            scratch,
        )
    } else {
        mha_typed(tgt, tgt, tgt, sa, out, self_mha, self_params, scratch)?;
        add_layer_norm(out, tgt, n1.weight, n1.bias, e, eps)?;
        mha_typed(
            out,
            memory,
            memory,
            ca,
            buffer,
            cross_mha,
            cross_params,
            scratch,
        )?;
        add_layer_norm(out, buffer, n2.weight, n2.bias, e, eps)?;
        ffn_sublayer(out, None, &weights.ffn, n3, config, ffn_shape, scratch)
    }
}
