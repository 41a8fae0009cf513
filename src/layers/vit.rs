//! ViT patch embedding: an image `[C, H, W]` cut into `P×P` patches, each projected to `E`
//! features (the stride-`P` convolution of ViT, computed as a matrix product), a class token
//! in front, and a learned position embedding added.
//!
//! As the convolution does, the patch grid is `(H / P) × (W / P)`: rows and columns past the
//! last whole patch are ignored. Patches are numbered row-major over the grid.

use super::Footprint;
use crate::element::Element;
use crate::error::{check_len, mul, nonzero, product, Error};
use crate::projection::{linear_mixed, LinearShape};

/// Sizes of a patch embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PatchShape {
    /// Image channels `C`.
    pub channels: usize,
    /// Image height `H` in pixels.
    pub height: usize,
    /// Image width `W` in pixels.
    pub width: usize,
    /// Patch side `P`.
    pub patch: usize,
    /// Embedding width `E`.
    pub embed: usize,
}

impl PatchShape {
    /// A `channels × height × width` image in `patch × patch` patches embedded in `embed`.
    pub const fn new(
        channels: usize,
        height: usize,
        width: usize,
        patch: usize,
        embed: usize,
    ) -> Self {
        PatchShape {
            channels,
            height,
            width,
            patch,
            embed,
        }
    }

    /// Number of patches, `(H / P) · (W / P)` (0 when `P` is 0).
    pub const fn patches(&self) -> usize {
        match (
            self.height.checked_div(self.patch),
            self.width.checked_div(self.patch),
        ) {
            (Some(rows), Some(cols)) => rows.saturating_mul(cols),
            _ => 0,
        }
    }

    /// Output tokens: the class token and one per patch.
    pub const fn tokens(&self) -> usize {
        self.patches().saturating_add(1)
    }

    /// Features of one flattened patch, `C·P·P`.
    pub const fn patch_len(&self) -> usize {
        self.channels
            .saturating_mul(self.patch)
            .saturating_mul(self.patch)
    }
}

/// The parameters of a ViT embedding, stored as `E`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PatchEmbedWeights<'a, E = f32> {
    /// Convolution weight `[E, C, P, P]`.
    pub patch_weight: &'a [E],
    /// Convolution bias `[E]`, or none.
    pub patch_bias: Option<&'a [E]>,
    /// Class token `[E]`, or none (no class token: only patch tokens, as in DeiT-style
    /// models without one).
    pub cls_token: Option<&'a [E]>,
    /// Position embedding `[tokens, E]` (with a row for the class token when there is one),
    /// or none.
    pub pos_embed: Option<&'a [E]>,
}

/// f32 scratch of [`patch_embed`]: one flattened patch and one output row, `C·P·P + E`.
pub const fn patch_embed_scratch_len(shape: PatchShape) -> usize {
    shape.patch_len().saturating_add(shape.embed)
}

/// Memory of a ViT embedding with class token and position embedding.
pub const fn patch_embed_footprint(shape: PatchShape) -> Footprint {
    let e = shape.embed;
    Footprint {
        weights: e
            .saturating_mul(shape.patch_len())
            .saturating_add(e.saturating_mul(2))
            .saturating_add(shape.tokens().saturating_mul(e)),
        scratch: patch_embed_scratch_len(shape),
        ..Footprint::NONE
    }
}

/// ViT patch embedding of `image` (`[C, H, W]`) into `tokens`: `[1 + NP, E]` with a class
/// token (row 0: `cls_token + pos_embed[0]`), `[NP, E]` without; patch row `p` is
/// `W · patch_p + b + pos_embed[row]`, with `patch_p` flattened in `(c, y, x)` order as the
/// weight `[E, C, P, P]` is.
///
/// Errors: a zero dimension or a patch larger than the image (no patch at all), a tensor or
/// weight length that does not match, scratch shorter than [`patch_embed_scratch_len`].
///
/// ```
/// use microattn::layers::{patch_embed, patch_embed_scratch_len, PatchEmbedWeights, PatchShape};
/// // A 1×2×4 image in two 2×2 patches; each token is the sum of its patch.
/// const SHAPE: PatchShape = PatchShape::new(1, 2, 4, 2, 1);
/// let image = [1.0f32, 2.0, 10.0, 20.0, 3.0, 4.0, 30.0, 40.0];
/// let weights = PatchEmbedWeights {
///     patch_weight: &[1.0f32; 4],
///     patch_bias: None,
///     cls_token: Some(&[-1.0]),
///     pos_embed: None,
/// };
/// let mut tokens = [0.0f32; 3];
/// let mut scratch = [0.0f32; patch_embed_scratch_len(SHAPE)];
/// patch_embed(&image, &weights, &mut tokens, SHAPE, &mut scratch)?;
/// assert_eq!(tokens, [-1.0, 10.0, 100.0]);
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn patch_embed<E: Element>(
    image: &[E],
    weights: &PatchEmbedWeights<'_, E>,
    tokens: &mut [E],
    shape: PatchShape,
    scratch: &mut [f32],
) -> Result<(), Error> {
    let PatchShape {
        channels: c,
        height,
        width,
        patch: p,
        embed: e,
    } = shape;
    nonzero(&[c, height, width, p, e])?;
    let (grid_h, grid_w) = (height / p, width / p);
    // A patch larger than the image leaves no patch.
    nonzero(&[grid_h, grid_w])?;
    let patches = mul(grid_h, grid_w)?;
    let patch_len = product(&[c, p, p])?;
    check_len(image, product(&[c, height, width])?)?;
    check_len(weights.patch_weight, mul(e, patch_len)?)?;
    if let Some(b) = weights.patch_bias {
        check_len(b, e)?;
    }
    if let Some(cls) = weights.cls_token {
        check_len(cls, e)?;
    }
    let first = usize::from(weights.cls_token.is_some());
    let rows = patches.checked_add(first).ok_or(Error::ShapeOverflow)?;
    let out_len = mul(rows, e)?;
    if let Some(pos) = weights.pos_embed {
        check_len(pos, out_len)?;
    }
    check_len(tokens, out_len)?;
    let needed = patch_len.checked_add(e).ok_or(Error::ShapeOverflow)?;
    if scratch.len() < needed {
        return Err(Error::ScratchTooSmall {
            needed,
            found: scratch.len(),
        });
    }
    // The checks above make every access below in bounds; the checked forms (and counters
    // instead of divisions) only keep panics out of the code.
    let short = Error::ScratchTooSmall {
        needed,
        found: scratch.len(),
    };
    let (flat, rest) = scratch.split_at_mut_checked(patch_len).ok_or(short)?;
    let row = rest.get_mut(..e).ok_or(short)?;
    if p == 0 || e == 0 {
        return Err(Error::ZeroDimension);
    }

    let pos = |r: usize, k: usize| {
        weights
            .pos_embed
            .and_then(|pe| pe.get(r * e + k))
            .map_or(0.0, |v| v.to_f32())
    };
    let mut out_rows = tokens.chunks_exact_mut(e);
    if let Some(cls) = weights.cls_token {
        if let Some(out) = out_rows.next() {
            for (k, (o, &t)) in out.iter_mut().zip(cls).enumerate() {
                *o = E::from_f32(t.to_f32() + pos(0, k));
            }
        }
    }
    // Patch (gy, gx) of the grid, row by row.
    let (mut gy, mut gx) = (0, 0);
    for (index, out) in out_rows.enumerate() {
        // Gather the patch in (channel, row, column) order: P contiguous pixels at a time.
        let (mut ch, mut dy) = (0, 0);
        for dst in flat.chunks_exact_mut(p) {
            let start = (ch * height + gy * p + dy) * width + gx * p;
            let src = image.get(start..start + p).ok_or(Error::LengthMismatch {
                expected: start + p,
                found: image.len(),
            })?;
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = v.to_f32();
            }
            dy += 1;
            if dy == p {
                (ch, dy) = (ch + 1, 0);
            }
        }
        linear_mixed(
            flat,
            weights.patch_weight,
            weights.patch_bias,
            row,
            LinearShape::new(1, patch_len, e),
        )?;
        // The position embedding is added in f32 so the token is rounded once.
        for (k, (o, &v)) in out.iter_mut().zip(row.iter()).enumerate() {
            *o = E::from_f32(v + pos(first + index, k));
        }
        gx += 1;
        if gx == grid_w {
            (gy, gx) = (gy + 1, 0);
        }
    }
    Ok(())
}
