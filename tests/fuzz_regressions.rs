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
