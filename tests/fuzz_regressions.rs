//! Regression tests of bugs found by the fuzz targets (`scripts/fuzz`): each is the smallest
//! reproducer of a fuzz finding. Both are fixed; an open one would be `#[ignore]`d with its
//! reason, and its fuzz target would skip the input until the fix.

use microattn::layers::int8::{int8_patch_embed, Int8PatchEmbed};
use microattn::layers::PatchShape;
use microattn::quant::FixedMultiplier;
use microattn::Error;

/// Found while writing the `int8_layers` fuzz target: `int8_patch_embed` multiplies
/// `grid_h * grid_w` unchecked before validating anything, so a huge image shape panics with
/// "attempt to multiply with overflow" in builds with overflow checks (debug, fuzz) and
/// wraps in release. The f32 `patch_embed` returns `ShapeOverflow` here
/// (tests/bad_input.rs `patch_embed_huge_shape_is_an_error`); the int8 one must too.
#[test]
fn int8_patch_embed_huge_shape_is_an_error() {
    let shape = PatchShape::new(1, usize::MAX, usize::MAX / 2, 1, 1);
    let params = Int8PatchEmbed {
        weight: &[1],
        offsets: &[0],
        multipliers: &[FixedMultiplier::ONE],
        cls: None,
    };
    let result = int8_patch_embed(&[0], &params, &mut [0i8; 2], shape, &mut [0i8; 2]);
    assert_eq!(result, Err(Error::ShapeOverflow));
}

/// Found by the `layers_more` fuzz target (`sinusoidal_add`): a valid (finite, positive)
/// base below 1 and a huge position make the angle `pos · base^(-2k/dim)` about 1e55; its
/// reduction modulo 2π in f64 (src/position.rs `sin_cos`) leaves a remainder past f32::MAX
/// (the f64 rounding error of the angle alone is ~1e39), which becomes inf in f32, and the
/// sine of inf is NaN: NaN from finite, valid inputs. The same `sin_cos` serves `rope`.
#[test]
fn sinusoid_of_a_huge_angle_is_finite() {
    use microattn::position::sinusoidal_table;
    let (len, dim) = (1, 7);
    let mut pe = [0.0f32; 7];
    sinusoidal_table(&mut pe, len, dim, usize::MAX, 4.012e-42).unwrap();
    assert!(pe.iter().all(|v| v.is_finite()), "{pe:?}");
}

/// Found by the `sdpa_typed` fuzz target: with an ALiBi slope of `-f32::MAX` the bias of a
/// distant key overflowed to +inf, and a cosine logit scaled by `-f32::MAX` could round to
/// -inf: their sum was NaN, the row's softmax sum NaN, and the row came out as zeros. Every
/// value is `-f32::MAX`, so every output must be too (up to the saturation's rounding).
#[test]
fn alibi_overflow_plus_overflowing_logit_is_not_nan() {
    use microattn::attention::{sdpa_typed, AttentionShape, Bias, Score, SdpaParams};
    use microattn::mask::Mask;
    const MAX: f32 = f32::MAX;
    const TINY: f32 = f32::MIN_POSITIVE;
    let shape = AttentionShape::multi_head(1, 1, 4, 9, 3, 2);
    let q = [
        -MAX, -MAX, -MAX, -MAX, -MAX, -MAX, -MAX, TINY, TINY, TINY, TINY, TINY,
    ];
    let mut k = [-MAX; 27];
    k[..9].fill(TINY);
    k[14..20].copy_from_slice(&[-1e30, -3.5, -1e30, 3.4375, 5.5625, -3.5]);
    let v = [-MAX; 18];
    let slopes = [-MAX];
    let params = SdpaParams {
        scale: Some(-MAX),
        score: Score::Cosine,
        mask: Mask::NONE.with_offset(4),
        bias: Bias::Alibi { slopes: &slopes },
    };
    // Every backend (the fuzz build has no `std`, so it ran the scalar one).
    // Without `std` the backend is fixed at compile time.
    for backend in microattn::arch::backends() {
        #[cfg(feature = "std")]
        microattn::arch::select(backend.name());
        let mut out = [0.0f32; 8];
        let mut scratch = [0.0f32; 2];
        sdpa_typed(&q, &k, &v, &mut out, shape, &params, &mut scratch).unwrap();
        for x in out {
            assert!(x.is_finite() && x <= -3.0e38, "{}: {out:?}", backend.name());
        }
    }
    // Back to the best backend (the last one listed).
    #[cfg(feature = "std")]
    if let Some(best) = microattn::arch::backends().last() {
        microattn::arch::select(best.name());
    }
}
