//! Int8 ViT patch embedding: int8 image, int8 patch weights (per-channel scales), the bias
//! and the position embedding folded into `i32` accumulator offsets, one requantization
//! per output. Integer only.

use crate::error::{check_len, mul, nonzero, product, Error};
use crate::layers::PatchShape;
use crate::quant::{saturate_i8, FixedMultiplier, QParams};

/// A prepared int8 patch embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Int8PatchEmbed<'a> {
    /// Patch weight `[E, C·P·P]` (int8, one scale per output channel).
    pub weight: &'a [i8],
    /// Per patch row and channel, `(bias[c] + pos_embed[row][c]) / (image_scale · w_scale[c])`
    /// rounded: `[NP, E]` accumulator units.
    pub offsets: &'a [i32],
    /// `image_scale · w_scale[c] / out_scale`, `[E]` or one.
    pub multipliers: &'a [FixedMultiplier],
    /// The class token row `cls_token + pos_embed[0]` at the output scale, `[E]`; or none.
    pub cls: Option<&'a [i8]>,
}

/// `i32` storage [`Int8PatchEmbed::prepare`] needs: `NP · E` offsets.
pub const fn int8_patch_offsets_len(shape: PatchShape) -> usize {
    shape.patches().saturating_mul(shape.embed)
}

impl<'a> Int8PatchEmbed<'a> {
    /// Prepares the embedding (float, once) from int8 `weight` with `w_scales` (one per
    /// output channel, or one), the f32 `bias`, `cls_token` and `pos_embed` (`[tokens, E]`,
    /// tokens counting the class token when there is one), for an image of scale
    /// `image_scale` and tokens of scale `out_scale`. Storage: `offsets`
    /// ([`int8_patch_offsets_len`]), `multipliers` (`w_scales.len()`), `cls` (`E`, used only
    /// with a class token).
    ///
    /// Errors: lengths that do not match `shape`, a bad scale ([`Error::InvalidScale`]),
    /// an offset that does not fit an `i32` ([`Error::InvalidBias`]), short storage.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare(
        weight: &'a [i8],
        w_scales: &[f32],
        bias: Option<&[f32]>,
        cls_token: Option<&[f32]>,
        pos_embed: Option<&[f32]>,
        image_scale: f32,
        out_scale: f32,
        shape: PatchShape,
        offsets: &'a mut [i32],
        multipliers: &'a mut [FixedMultiplier],
        cls: &'a mut [i8],
    ) -> Result<Self, Error> {
        let e = shape.embed;
        let patches = shape.patches();
        nonzero(&[e, patches, shape.channels])?;
        check_len(weight, mul(e, shape.patch_len())?)?;
        if w_scales.len() != e && w_scales.len() != 1 {
            return Err(Error::LengthMismatch {
                expected: e,
                found: w_scales.len(),
            });
        }
        if let Some(b) = bias {
            check_len(b, e)?;
        }
        let first = usize::from(cls_token.is_some());
        if let Some(c) = cls_token {
            check_len(c, e)?;
        }
        if let Some(p) = pos_embed {
            check_len(p, mul(patches + first, e)?)?;
        }
        let x = QParams::new(image_scale)?.scale() as f64;
        let out = QParams::new(out_scale)?;
        let w = |c: usize| -> Result<f64, Error> {
            let s = w_scales.get(c).or(w_scales.first()).copied().unwrap_or(0.0);
            Ok(QParams::new(s)?.scale() as f64)
        };
        let found = multipliers.len();
        let multipliers = multipliers
            .get_mut(..w_scales.len())
            .ok_or(Error::ScratchTooSmall {
                needed: w_scales.len(),
                found,
            })?;
        for (c, m) in multipliers.iter_mut().enumerate() {
            *m = FixedMultiplier::from_real(x * w(c)? / out.scale() as f64)?;
        }
        let needed = patches * e;
        let found = offsets.len();
        let offsets = offsets
            .get_mut(..needed)
            .ok_or(Error::ScratchTooSmall { needed, found })?;
        for (p, row) in offsets.chunks_exact_mut(e).enumerate() {
            for (c, o) in row.iter_mut().enumerate() {
                let b = bias.map_or(0.0, |b| b[c]) as f64;
                let pe = pos_embed.map_or(0.0, |pe| pe[(first + p) * e + c]) as f64;
                let q = libm::round((b + pe) / (x * w(c)?));
                if !(q.is_finite() && q.abs() <= i32::MAX as f64) {
                    return Err(Error::InvalidBias);
                }
                *o = q as i32;
            }
        }
        let cls = match cls_token {
            None => None,
            Some(token) => {
                let found = cls.len();
                let row = cls
                    .get_mut(..e)
                    .ok_or(Error::ScratchTooSmall { needed: e, found })?;
                for (c, o) in row.iter_mut().enumerate() {
                    *o = out.quantize(token[c] + pos_embed.map_or(0.0, |pe| pe[c]));
                }
                Some(&*row)
            }
        };
        Ok(Int8PatchEmbed {
            weight,
            offsets,
            multipliers,
            cls,
        })
    }
}

/// `i8` scratch of [`int8_patch_embed`]: one flattened patch, `C·P·P`.
pub const fn int8_patch_embed_scratch_len(shape: PatchShape) -> usize {
    shape.patch_len()
}

/// Int8 ViT patch embedding of `image` (`[C, H, W]`) into `tokens` (`[1 + NP, E]` with a
/// class token, `[NP, E]` without), as [`patch_embed`](crate::layers::patch_embed) does in
/// float. Returns the peak `|token|` before saturation. Integer only.
///
/// Errors: a zero dimension or a patch larger than the image, lengths that do not match,
/// short scratch, a patch of more than
/// [`MAX_DENSE_IN`](crate::attention::int8::MAX_DENSE_IN) features
/// ([`Error::InvalidParameter`]), multipliers out of range.
pub fn int8_patch_embed(
    image: &[i8],
    params: &Int8PatchEmbed<'_>,
    tokens: &mut [i8],
    shape: PatchShape,
    scratch: &mut [i8],
) -> Result<i64, Error> {
    let PatchShape {
        channels: c,
        height,
        width,
        patch: p,
        embed: e,
    } = shape;
    nonzero(&[c, height, width, p, e])?;
    let (Some(grid_h), Some(grid_w)) = (height.checked_div(p), width.checked_div(p)) else {
        return Err(Error::ZeroDimension);
    };
    nonzero(&[grid_h, grid_w])?;
    let patches = mul(grid_h, grid_w)?;
    let patch_len = product(&[c, p, p])?;
    if patch_len > crate::attention::int8::MAX_DENSE_IN {
        return Err(Error::InvalidParameter);
    }
    check_len(image, product(&[c, height, width])?)?;
    check_len(params.weight, mul(e, patch_len)?)?;
    check_len(params.offsets, mul(patches, e)?)?;
    if params.multipliers.len() != e && params.multipliers.len() != 1 {
        return Err(Error::LengthMismatch {
            expected: e,
            found: params.multipliers.len(),
        });
    }
    for m in params.multipliers {
        FixedMultiplier::from_raw(m.multiplier(), m.shift())?;
    }
    if let Some(cls) = params.cls {
        check_len(cls, e)?;
    }
    let first = usize::from(params.cls.is_some());
    check_len(tokens, mul(patches + first, e)?)?;
    let found = scratch.len();
    let flat = scratch.get_mut(..patch_len).ok_or(Error::ScratchTooSmall {
        needed: patch_len,
        found,
    })?;

    // Sizes are positive after the checks above (`max` only keeps the chunking from asserting
    // it); rows, offsets and pixels found by `get` are in bounds for the checked shapes.
    let mut out_rows = tokens.chunks_exact_mut(e.max(1));
    let mut peak = 0;
    if let Some(cls) = params.cls {
        if let Some(row) = out_rows.next() {
            for (o, &v) in row.iter_mut().zip(cls) {
                *o = v;
            }
            peak = cls.iter().map(|&v| (v as i64).abs()).max().unwrap_or(0);
        }
    }
    for (index, out) in out_rows.enumerate() {
        let (Some(offs), Some(gy), Some(gx)) = (
            params.offsets.get(index * e..(index + 1) * e),
            index.checked_div(grid_w),
            index.checked_rem(grid_w),
        ) else {
            break;
        };
        // Gather the patch in (channel, row, column) order: P contiguous pixels at a time.
        for (segment, dst) in flat.chunks_exact_mut(p).enumerate() {
            let (ch, dy) = (segment / p, segment % p);
            let start = (ch * height + gy * p + dy) * width + gx * p;
            let Some(src) = image.get(start..start + p) else {
                break;
            };
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = v;
            }
        }
        for (ch, ((o, w_row), &off)) in out
            .iter_mut()
            .zip(params.weight.chunks_exact(patch_len.max(1)))
            .zip(offs)
            .enumerate()
        {
            let dot: i32 = flat
                .iter()
                .zip(w_row)
                .map(|(&a, &b)| a as i32 * b as i32)
                .sum();
            let m = params
                .multipliers
                .get(ch)
                .or(params.multipliers.first())
                .copied()
                .unwrap_or(FixedMultiplier::ONE);
            let v = m.mul_round(dot.saturating_add(off));
            peak = peak.max(v.abs());
            *o = saturate_i8(v);
        }
    }
    Ok(peak)
}

/// Calibrates an int8 patch embedding on a sample image (the offline step, float): quantizes
/// the f32 `patch_weight` per output channel into `weight_q` (`E·C·P·P`) and
/// `weight_scales` (`E`), starts from the token scale no token can exceed (`Σ|w| · max|x|`
/// per channel or the class token, plus the largest bias and position embedding), runs the
/// integer kernel `rounds` times, each run's peak refining the scale
/// ([`refine_scale`](super::refine_scale)), and once more at the scale it returns: `tokens`
/// then holds the embedding at that scale. `image` is int8 at `image_scale`; the storage
/// arguments are those of [`Int8PatchEmbed::prepare`], which deployment calls once with
/// `weight_q`, `weight_scales` and the returned scale.
///
/// Errors: those of [`Int8PatchEmbed::prepare`] and [`int8_patch_embed`], a weight that is
/// not finite ([`Error::InvalidScale`]).
#[allow(clippy::too_many_arguments)]
pub fn calibrate_patch_embed(
    image: &[i8],
    image_scale: f32,
    weights: &crate::layers::PatchEmbedWeights<'_, f32>,
    shape: PatchShape,
    weight_q: &mut [i8],
    weight_scales: &mut [f32],
    rounds: usize,
    tokens: &mut [i8],
    scratch: &mut [i8],
    offsets: &mut [i32],
    multipliers: &mut [FixedMultiplier],
    cls: &mut [i8],
) -> Result<f32, Error> {
    use super::calibrate::{max_abs, quantize_per_row, refine_scale};
    let e = shape.embed;
    nonzero(&[e])?;
    let pw = weights.patch_weight;
    check_len(pw, mul(e, shape.patch_len())?)?;
    let scales = weight_scales.get_mut(..e).ok_or(Error::ScratchTooSmall {
        needed: e,
        found: 0,
    })?;
    quantize_per_row(pw, scales, weight_q)?;
    let scales = &*scales;
    let weight_q = &*weight_q;
    let mut run = |out_scale: f32, tokens: &mut [i8]| -> Result<i64, Error> {
        let params = Int8PatchEmbed::prepare(
            weight_q,
            scales,
            weights.patch_bias,
            weights.cls_token,
            weights.pos_embed,
            image_scale,
            out_scale,
            shape,
            &mut *offsets,
            &mut *multipliers,
            &mut *cls,
        )?;
        int8_patch_embed(image, &params, tokens, shape, scratch)
    };
    let mut worst = 0.0f32;
    for row in pw.chunks_exact(shape.patch_len().max(1)) {
        let s: f32 = row.iter().map(|v| libm::fabsf(*v)).sum();
        worst = worst.max(s * image_scale * 127.0);
    }
    let opt = |v: Option<&[f32]>| v.map_or(0.0, max_abs);
    let worst =
        worst.max(opt(weights.cls_token)) + opt(weights.patch_bias) + opt(weights.pos_embed);
    let mut out_scale = worst.max(f32::MIN_POSITIVE) / 127.0;
    for _ in 0..rounds {
        let peak = run(out_scale, tokens)?;
        out_scale = refine_scale(out_scale, peak);
    }
    run(out_scale, tokens)?;
    Ok(out_scale)
}
