//! Scalar math functions used by the f32 kernels, accurate to a few ulp (`libm`).
//!
//! Kernels call these wrappers, never `f32` methods (which need `std`), so that one place
//! decides the accuracy of the whole library.

/// `e^x`, within 1 ulp (libm `expf`).
#[inline]
pub fn exp(x: f32) -> f32 {
    libm::expf(x)
}

/// Square root, correctly rounded.
#[inline]
pub fn sqrt(x: f32) -> f32 {
    libm::sqrtf(x)
}

/// Hyperbolic tangent, within a few ulp (libm `tanhf`).
#[inline]
pub fn tanh(x: f32) -> f32 {
    libm::tanhf(x)
}

/// `e^x - 1`, accurate near zero (libm `expm1f`).
#[inline]
pub fn exp_m1(x: f32) -> f32 {
    libm::expm1f(x)
}

/// Natural logarithm (libm `logf`).
#[inline]
pub fn ln(x: f32) -> f32 {
    libm::logf(x)
}

/// Error function, within a few ulp (libm `erff`): exact GELU.
#[inline]
pub fn erf(x: f32) -> f32 {
    libm::erff(x)
}

/// Complementary error function `1 - erf(x)`, accurate where it is tiny (libm `erfcf`):
/// GELU of very negative inputs.
#[inline]
pub fn erfc(x: f32) -> f32 {
    libm::erfcf(x)
}

/// Sine, within 1 ulp (libm `sinf`, with full argument reduction).
#[inline]
pub fn sin(x: f32) -> f32 {
    libm::sinf(x)
}

/// Cosine, within 1 ulp (libm `cosf`, with full argument reduction).
#[inline]
pub fn cos(x: f32) -> f32 {
    libm::cosf(x)
}

/// `ln(1 + x)`, accurate near zero (libm `log1pf`): softplus.
#[inline]
pub fn ln_1p(x: f32) -> f32 {
    libm::log1pf(x)
}
