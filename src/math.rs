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
