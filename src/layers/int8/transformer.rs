//! Int8 transformer encoder and decoder layers (`torch.nn.TransformerEncoderLayer` /
//! `TransformerDecoderLayer` semantics, post-norm and pre-norm) from the int8 blocks:
//! [`int8_mha`], [`int8_layer_norm`](super::int8_layer_norm), [`int8_add`](super::int8_add)
//! and [`int8_ffn`]. Every tensor between two blocks is int8 with its own scale; integers
//! only.

use super::ffn::{int8_ffn, Int8FfnParams, Int8FfnStats};
use super::norm::{add_into, norm_row, Int8Add, Int8LayerNorm};
use crate::attention::int8::{int8_mha, Int8MhaParams, Int8MhaStats};
use crate::error::{check_len, mul, nonzero, Error};
use crate::layers::{DecoderShape, EncoderShape, FfnShape};
use crate::mha::MhaShape;

/// The prepared blocks of an int8 encoder layer.
///
/// Post-norm (`norm_first = false`): `h = LN1(x + SelfAttn(x))`, `out = LN2(h + FFN(h))`;
/// the norms take both inputs (`input` and `sublayer` multipliers), `residual*` are unused.
/// Pre-norm: `r = x + SelfAttn(LN1(x))` (`residual1`), `out = r + FFN(LN2(r))`
/// (`residual2`); the norms take one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Int8EncoderParams<'a> {
    /// `self_attn`.
    pub self_attn: Int8MhaParams<'a>,
    /// `linear1`, activation, `linear2`.
    pub ffn: Int8FfnParams<'a>,
    /// `norm1`.
    pub norm1: Int8LayerNorm<'a>,
    /// `norm2`.
    pub norm2: Int8LayerNorm<'a>,
    /// Pre-norm: `x + SelfAttn(..)`.
    pub residual1: Int8Add,
    /// Pre-norm: `r + FFN(..)`.
    pub residual2: Int8Add,
    /// Pre-norm (`true`) or post-norm.
    pub norm_first: bool,
}

/// The prepared blocks of an int8 decoder layer; as [`Int8EncoderParams`] with the
/// cross-attention over the memory between self-attention and FFN (`norm2`, `residual2`),
/// the FFN's norm and residual being `norm3`, `residual3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Int8DecoderParams<'a> {
    /// `self_attn`.
    pub self_attn: Int8MhaParams<'a>,
    /// `multihead_attn`: queries from the target stream, keys and values from the memory.
    pub cross_attn: Int8MhaParams<'a>,
    /// `linear1`, activation, `linear2`.
    pub ffn: Int8FfnParams<'a>,
    /// `norm1`.
    pub norm1: Int8LayerNorm<'a>,
    /// `norm2`.
    pub norm2: Int8LayerNorm<'a>,
    /// `norm3`.
    pub norm3: Int8LayerNorm<'a>,
    /// Pre-norm: after the self-attention.
    pub residual1: Int8Add,
    /// Pre-norm: after the cross-attention.
    pub residual2: Int8Add,
    /// Pre-norm: after the FFN.
    pub residual3: Int8Add,
    /// Pre-norm (`true`) or post-norm.
    pub norm_first: bool,
}

/// Largest value each stage produced before saturation, in its output steps (above 127: the
/// stage's scale clipped), for calibration. Stages a layer does not have stay 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Int8LayerStats {
    /// Self-attention stages.
    pub self_attn: Int8MhaStats,
    /// Cross-attention stages (decoder).
    pub cross_attn: Int8MhaStats,
    /// FFN stages.
    pub ffn: Int8FfnStats,
    /// `norm1..3` outputs.
    pub norm: [i64; 3],
    /// Pre-norm residual sums after each sublayer.
    pub residual: [i64; 3],
}

/// `i8` scratch of [`int8_encoder_layer`]: the attention's `4·L·E`, two `L·E` buffers and one
/// FFN hidden row. Saturates.
pub const fn int8_encoder_scratch_len(shape: EncoderShape) -> usize {
    let le = shape.len.saturating_mul(shape.embed);
    le.saturating_mul(6).saturating_add(shape.hidden)
}

/// `i8` scratch of [`int8_decoder_layer`]: the larger attention's, two `Lt·E` buffers and one
/// FFN hidden row. Saturates.
pub const fn int8_decoder_scratch_len(shape: DecoderShape) -> usize {
    let le = shape.tgt_len.saturating_mul(shape.embed);
    let self_attn = le.saturating_mul(4);
    let cross = shape
        .tgt_len
        .saturating_add(shape.mem_len)
        .saturating_mul(shape.embed)
        .saturating_mul(2);
    let attn = if cross > self_attn { cross } else { self_attn };
    attn.saturating_add(le.saturating_mul(2))
        .saturating_add(shape.hidden)
}

/// `i64` accumulator scratch of the int8 layers: one head row, `E / heads`.
pub const fn int8_layer_acc_len(embed: usize, heads: usize) -> usize {
    match embed.checked_div(heads) {
        Some(hd) => hd,
        None => 0,
    }
}

/// Scratch areas: attention scratch, two `rows·E` buffers, the FFN hidden row.
struct Areas<'s> {
    attn: &'s mut [i8],
    t1: &'s mut [i8],
    t2: &'s mut [i8],
    hidden: &'s mut [i8],
}

fn split(scratch: &mut [i8], attn: usize, n: usize, hidden: usize) -> Result<Areas<'_>, Error> {
    let needed = attn
        .checked_add(n.checked_mul(2).ok_or(Error::ShapeOverflow)?)
        .and_then(|v| v.checked_add(hidden))
        .ok_or(Error::ShapeOverflow)?;
    let found = scratch.len();
    if found < needed {
        return Err(Error::ScratchTooSmall { needed, found });
    }
    // `needed` covers the four areas; the checked splits only keep panics out of the code.
    let short = Error::ScratchTooSmall { needed, found };
    let (attn, rest) = scratch.split_at_mut_checked(attn).ok_or(short)?;
    let (t1, rest) = rest.split_at_mut_checked(n).ok_or(short)?;
    let (t2, rest) = rest.split_at_mut_checked(n).ok_or(short)?;
    Ok(Areas {
        attn,
        t1,
        t2,
        hidden: rest.get_mut(..hidden).ok_or(short)?,
    })
}

/// LayerNorm of the rows of `x` (+ `sublayer`) into `y`; shapes checked. Returns the peak.
fn norm_rows(
    x: &[i8],
    sublayer: Option<&[i8]>,
    p: &Int8LayerNorm<'_>,
    y: &mut [i8],
    e: usize,
) -> i64 {
    let mut peak = 0;
    // Rows by `get` (in bounds for checked shapes), not by zipping chunk iterators, whose
    // out-of-line `zip` keeps a division by the chunk size.
    for (r, y_row) in y.chunks_exact_mut(e.max(1)).enumerate() {
        let rows = r * e..(r + 1) * e;
        let Some(x_row) = x.get(rows.clone()) else {
            break;
        };
        let s_row = sublayer.map(|s| s.get(rows).unwrap_or(&[]));
        peak = peak.max(norm_row(x_row, s_row, p, y_row));
    }
    peak
}

/// Checks norms, adds and the FFN (with a trial row through `areas`) before any output is
/// written; the attentions check themselves before they write.
fn prevalidate(
    norms: &[&Int8LayerNorm<'_>],
    adds: &[&Int8Add],
    ffn: &Int8FfnParams<'_>,
    first_row: &[i8],
    e: usize,
    hidden: usize,
    areas: &mut Areas<'_>,
) -> Result<(), Error> {
    for n in norms {
        n.validate(e)?;
    }
    for a in adds {
        a.validate()?;
    }
    int8_ffn(
        first_row,
        ffn,
        areas.t1.get_mut(..e).ok_or(Error::ZeroDimension)?,
        FfnShape::new(1, e, hidden),
        areas.hidden,
    )?;
    Ok(())
}

/// One int8 `TransformerEncoderLayer` on `src` (`[L, E]`, int8 at the scale the params were
/// prepared for) into `out` (`[L, E]`). `scratch` holds [`int8_encoder_scratch_len`] `i8`s,
/// `acc` [`int8_layer_acc_len`] `i64`s; `stats`, when given, receives the stage peaks.
/// Integer only.
///
/// Errors, all checked before `out` is written: a zero dimension, `heads` not dividing
/// `embed`, lengths that do not match (tensors, weights, norms), invalid attention
/// parameters (see [`int8_mha`]), short scratch.
#[allow(clippy::too_many_arguments)]
pub fn int8_encoder_layer(
    src: &[i8],
    params: &Int8EncoderParams<'_>,
    out: &mut [i8],
    shape: EncoderShape,
    scratch: &mut [i8],
    acc: &mut [i64],
    stats: Option<&mut Int8LayerStats>,
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
    let mut a = split(scratch, mul(n, 4)?, n, hidden)?;
    let p = params;
    prevalidate(
        &[&p.norm1, &p.norm2],
        &[&p.residual1, &p.residual2],
        &p.ffn,
        src.get(..e).ok_or(Error::ZeroDimension)?,
        e,
        hidden,
        &mut a,
    )?;
    let mha_shape = MhaShape::new(len, len, e, heads);
    let ffn_shape = FfnShape::new(len, e, hidden);
    let mut st = Int8LayerStats::default();
    if p.norm_first {
        st.norm[0] = norm_rows(src, None, &p.norm1, a.t2, e);
        let x = &*a.t2;
        int8_mha(
            x,
            x,
            x,
            &p.self_attn,
            a.t1,
            mha_shape,
            a.attn,
            acc,
            Some(&mut st.self_attn),
        )?;
        out.copy_from_slice(src);
        st.residual[0] = add_into(out, a.t1, &p.residual1);
        st.norm[1] = norm_rows(out, None, &p.norm2, a.t2, e);
        st.ffn = int8_ffn(a.t2, &p.ffn, a.t1, ffn_shape, a.hidden)?;
        st.residual[1] = add_into(out, a.t1, &p.residual2);
    } else {
        int8_mha(
            src,
            src,
            src,
            &p.self_attn,
            a.t1,
            mha_shape,
            a.attn,
            acc,
            Some(&mut st.self_attn),
        )?;
        st.norm[0] = norm_rows(src, Some(a.t1), &p.norm1, out, e);
        st.ffn = int8_ffn(out, &p.ffn, a.t1, ffn_shape, a.hidden)?;
        st.norm[1] = norm_rows(out, Some(a.t1), &p.norm2, a.t2, e);
        out.copy_from_slice(a.t2);
    }
    if let Some(stats) = stats {
        *stats = st;
    }
    Ok(())
}

/// One int8 `TransformerDecoderLayer` on `tgt` (`[Lt, E]`) with `memory` (`[Ls, E]`) into
/// `out` (`[Lt, E]`). `scratch` holds [`int8_decoder_scratch_len`] `i8`s, `acc`
/// [`int8_layer_acc_len`] `i64`s. Integer only.
///
/// Errors, all checked before `out` is written: as [`int8_encoder_layer`], for both
/// attentions.
#[allow(clippy::too_many_arguments)]
pub fn int8_decoder_layer(
    tgt: &[i8],
    memory: &[i8],
    params: &Int8DecoderParams<'_>,
    out: &mut [i8],
    shape: DecoderShape,
    scratch: &mut [i8],
    acc: &mut [i64],
    stats: Option<&mut Int8LayerStats>,
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
    let cross_len = mul(lt.checked_add(ls).ok_or(Error::ShapeOverflow)?, mul(e, 2)?)?;
    let mut a = split(scratch, mul(n, 4)?.max(cross_len), n, hidden)?;
    let p = params;
    prevalidate(
        &[&p.norm1, &p.norm2, &p.norm3],
        &[&p.residual1, &p.residual2, &p.residual3],
        &p.ffn,
        tgt.get(..e).ok_or(Error::ZeroDimension)?,
        e,
        hidden,
        &mut a,
    )?;
    let self_shape = MhaShape::new(lt, lt, e, heads);
    let cross_shape = MhaShape::new(lt, ls, e, heads);
    let ffn_shape = FfnShape::new(lt, e, hidden);
    let mut st = Int8LayerStats::default();
    let (sa, ca) = (&p.self_attn, &p.cross_attn);
    if p.norm_first {
        st.norm[0] = norm_rows(tgt, None, &p.norm1, a.t2, e);
        let x = &*a.t2;
        int8_mha(
            x,
            x,
            x,
            sa,
            a.t1,
            self_shape,
            a.attn,
            acc,
            Some(&mut st.self_attn),
        )?;
        a.t2.copy_from_slice(tgt);
        st.residual[0] = add_into(a.t2, a.t1, &p.residual1);
        st.norm[1] = norm_rows(a.t2, None, &p.norm2, a.t1, e);
        int8_mha(
            a.t1,
            memory,
            memory,
            ca,
            out,
            cross_shape,
            a.attn,
            acc,
            Some(&mut st.cross_attn),
        )?;
        // out = r1 + cross: the residual stream r1 is in t2, the sublayer output in out.
        a.t1.copy_from_slice(out);
        out.copy_from_slice(a.t2);
        st.residual[1] = add_into(out, a.t1, &p.residual2);
        st.norm[2] = norm_rows(out, None, &p.norm3, a.t1, e);
        st.ffn = int8_ffn(a.t1, &p.ffn, a.t2, ffn_shape, a.hidden)?;
        st.residual[2] = add_into(out, a.t2, &p.residual3);
    } else {
        int8_mha(
            tgt,
            tgt,
            tgt,
            sa,
            a.t1,
            self_shape,
            a.attn,
            acc,
            Some(&mut st.self_attn),
        )?;
        st.norm[0] = norm_rows(tgt, Some(a.t1), &p.norm1, a.t2, e);
        int8_mha(
            a.t2,
            memory,
            memory,
            ca,
            a.t1,
            cross_shape,
            a.attn,
            acc,
            Some(&mut st.cross_attn),
        )?;
        st.norm[1] = norm_rows(a.t2, Some(a.t1), &p.norm2, out, e);
        st.ffn = int8_ffn(out, &p.ffn, a.t1, ffn_shape, a.hidden)?;
        st.norm[2] = norm_rows(out, Some(a.t1), &p.norm3, a.t2, e);
        out.copy_from_slice(a.t2);
    }
    if let Some(stats) = stats {
        *stats = st;
    }
    Ok(())
}
