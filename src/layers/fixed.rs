//! Fixed-size tier of LayerNorm, RMSNorm and the ViT patch embedding: shapes are const
//! generics on arrays, so a tensor of the wrong shape does not compile; each function
//! flattens its arrays (`as_flattened`) and calls the slice tier, which does the work.

use super::norm::{layer_norm, rms_norm};
use super::vit::{patch_embed, patch_embed_scratch_len, PatchEmbedWeights, PatchShape};
use crate::element::Element;
use crate::error::Error;

/// Fixed-size [`layer_norm`](super::layer_norm) of `ROWS` rows of `DIM` features: `y =
/// (x - mean) / sqrt(var + eps) · weight + bias` per row. Errors only for a zero `ROWS` or
/// `DIM` ([`Error::ZeroDimension`]) and an `eps` negative or not finite.
///
/// ```
/// use microattn::layers::layer_norm_fixed;
/// let x = [[1.0f32, 3.0], [2.0, 2.0]];
/// let mut y = [[0.0f32; 2]; 2];
/// layer_norm_fixed(&x, &[1.0f32, 2.0], Some(&[0.0, 1.0]), &mut y, 0.0)?;
/// assert_eq!(y, [[-1.0, 3.0], [0.0, 1.0]]);
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn layer_norm_fixed<E: Element, W: Element, const ROWS: usize, const DIM: usize>(
    x: &[[E; DIM]; ROWS],
    weight: &[W; DIM],
    bias: Option<&[W; DIM]>,
    y: &mut [[E; DIM]; ROWS],
    eps: f32,
) -> Result<(), Error> {
    layer_norm(
        x.as_flattened(),
        weight,
        bias.map(|b| &b[..]),
        y.as_flattened_mut(),
        DIM,
        eps,
    )
}

/// Fixed-size [`rms_norm`](super::rms_norm) of `ROWS` rows of `DIM` features: `y = x /
/// sqrt(mean(x²) + eps) · weight`. Errors as [`layer_norm_fixed`].
///
/// ```
/// use microattn::layers::rms_norm_fixed;
/// let x = [[3.0f32, -4.0]];
/// let mut y = [[0.0f32; 2]];
/// rms_norm_fixed(&x, &[1.0f32, 2.0], &mut y, 0.0)?;
/// let rms = 12.5f32.sqrt();
/// assert_eq!(y, [[3.0 / rms, -8.0 / rms]]);
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn rms_norm_fixed<E: Element, W: Element, const ROWS: usize, const DIM: usize>(
    x: &[[E; DIM]; ROWS],
    weight: &[W; DIM],
    y: &mut [[E; DIM]; ROWS],
    eps: f32,
) -> Result<(), Error> {
    rms_norm(x.as_flattened(), weight, y.as_flattened_mut(), DIM, eps)
}

/// The parameters of a ViT embedding as arrays, for [`patch_embed_fixed`]: `EMB` output
/// features, `C` channels, `P`×`P` patches, `TOK` tokens (the patches, plus one for the
/// class token when there is one).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PatchEmbedWeightsFixed<
    'a,
    E,
    const C: usize,
    const P: usize,
    const EMB: usize,
    const TOK: usize,
> {
    /// Convolution weight `[EMB, C, P, P]`.
    pub patch_weight: &'a [[[[E; P]; P]; C]; EMB],
    /// Convolution bias, or none.
    pub patch_bias: Option<&'a [E; EMB]>,
    /// Class token, or none.
    pub cls_token: Option<&'a [E; EMB]>,
    /// Position embedding `[TOK, EMB]`, or none.
    pub pos_embed: Option<&'a [[E; EMB]; TOK]>,
}

impl<'a, E, const C: usize, const P: usize, const EMB: usize, const TOK: usize>
    PatchEmbedWeightsFixed<'a, E, C, P, EMB, TOK>
{
    /// The same weights as slices, for [`patch_embed`](super::patch_embed).
    pub fn as_slices(&self) -> PatchEmbedWeights<'a, E> {
        PatchEmbedWeights {
            patch_weight: self
                .patch_weight
                .as_flattened()
                .as_flattened()
                .as_flattened(),
            patch_bias: self.patch_bias.map(|b| &b[..]),
            cls_token: self.cls_token.map(|b| &b[..]),
            pos_embed: self.pos_embed.map(|p| p.as_flattened()),
        }
    }
}

/// Fixed-size [`patch_embed`](super::patch_embed): the `C`×`H`×`W` image in `P`×`P` patches,
/// projected to `EMB` features, into `TOK` token rows (`TOK` must be the number of patches,
/// plus one with a class token). `scratch` is an array of at least
/// [`patch_embed_scratch_len`] f32 (`C·P·P + EMB`); a shorter one, or `TOK` neither the
/// patch count nor one more, does not compile. Errors only for a zero dimension and, with
/// `TOK` one more than the patches, a missing class token (and the reverse)
/// ([`Error::LengthMismatch`]).
///
/// ```
/// use microattn::layers::{patch_embed_fixed, patch_embed_scratch_len, PatchEmbedWeightsFixed, PatchShape};
/// // A 1×2×4 image in two 2×2 patches; each token is the sum of its patch, after a class token.
/// let image = [[[1.0f32, 2.0, 10.0, 20.0], [3.0, 4.0, 30.0, 40.0]]];
/// let weights = PatchEmbedWeightsFixed::<f32, 1, 2, 1, 3> {
///     patch_weight: &[[[[1.0; 2]; 2]; 1]; 1],
///     patch_bias: None,
///     cls_token: Some(&[-1.0]),
///     pos_embed: None,
/// };
/// let mut tokens = [[0.0f32; 1]; 3];
/// let mut scratch = [0.0f32; patch_embed_scratch_len(PatchShape::new(1, 2, 4, 2, 1))];
/// patch_embed_fixed(&image, &weights, &mut tokens, &mut scratch)?;
/// assert_eq!(tokens, [[-1.0], [10.0], [100.0]]);
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn patch_embed_fixed<
    E: Element,
    const C: usize,
    const H: usize,
    const W: usize,
    const P: usize,
    const EMB: usize,
    const TOK: usize,
    const S: usize,
>(
    image: &[[[E; W]; H]; C],
    weights: &PatchEmbedWeightsFixed<'_, E, C, P, EMB, TOK>,
    tokens: &mut [[E; EMB]; TOK],
    scratch: &mut [f32; S],
) -> Result<(), Error> {
    const {
        let shape = PatchShape::new(C, H, W, P, EMB);
        let patches = shape.patches();
        assert!(
            TOK == patches || TOK == patches + 1,
            "TOK must be the patch count, plus one with a class token"
        );
        assert!(
            S >= patch_embed_scratch_len(shape),
            "scratch shorter than patch_embed_scratch_len"
        );
    };
    patch_embed(
        image.as_flattened().as_flattened(),
        &weights.as_slices(),
        tokens.as_flattened_mut(),
        PatchShape::new(C, H, W, P, EMB),
        scratch,
    )
}
