//! Pointwise activations: ReLU, GELU (exact erf form and tanh approximation), SiLU, and the
//! softplus used by state-space scans.
//!
//! All run in f32 through [`crate::math`] (libm, a few ulp), and none produces NaN for a
//! finite input: where an intermediate overflows (`exp(-x)` for very negative `x`, `x³` for
//! huge `x`) the result still has its limit value.

use crate::element::Element;

/// A pointwise activation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// Exact GELU, `x Φ(x) = x/2 (1 + erf(x/√2))` (PyTorch's default `gelu`).
    Gelu,
    /// GELU's tanh approximation, `x/2 (1 + tanh(√(2/π) (x + 0.044715 x³)))`
    /// (`approximate="tanh"`, GPT-2).
    GeluTanh,
    /// SiLU / swish, `x σ(x) = x / (1 + e^-x)` (SwiGLU gates).
    Silu,
}

impl Activation {
    /// The activation of one value.
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Relu => relu(x),
            Activation::Gelu => gelu(x),
            Activation::GeluTanh => gelu_tanh(x),
            Activation::Silu => silu(x),
        }
    }

    /// Applies the activation to every element of `x`, in f32, rounding once per element.
    ///
    /// ```
    /// use microattn::layers::Activation;
    /// let mut x = [-1.0f32, 0.0, 2.0];
    /// Activation::Relu.apply_in_place(&mut x);
    /// assert_eq!(x, [0.0, 0.0, 2.0]);
    /// ```
    pub fn apply_in_place<E: Element>(self, x: &mut [E]) {
        for v in x.iter_mut() {
            *v = E::from_f32(self.apply(v.to_f32()));
        }
    }
}

/// `max(x, 0)` (NaN stays NaN).
#[inline]
pub fn relu(x: f32) -> f32 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

/// Exact GELU: `x/2 (1 + erf(x/√2))`, computed as `x/2 erfc(-x/√2)` so that it keeps its
/// relative accuracy for negative `x`, where `1 + erf` cancels (below -5.5 it would be 0).
#[inline]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * crate::math::erfc(-x * core::f32::consts::FRAC_1_SQRT_2)
}

/// GELU, tanh approximation: `x/2 (1 + tanh(√(2/π) (x + 0.044715 x³)))`, computed as the
/// identical `x σ(2u)` (`1 + tanh(u) = 2σ(2u)`), which keeps its relative accuracy for
/// negative `x` where `1 + tanh` cancels.
#[inline]
pub fn gelu_tanh(x: f32) -> f32 {
    // √(2/π)
    const K: f32 = 0.797_884_6;
    let inner = K * (x + 0.044_715 * x * x * x);
    // For |x| large `inner` is ±inf: σ gives 1 or 0, so the result is x or 0, never NaN.
    x * sigmoid(2.0 * inner)
}

/// Logistic sigmoid `1 / (1 + e^-x)`.
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    // e^-x overflows to inf for x < -88: 1/inf = 0, the right limit.
    1.0 / (1.0 + crate::math::exp(-x))
}

/// SiLU: `x σ(x)`.
#[inline]
pub fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

/// Softplus `ln(1 + e^x)` with PyTorch's threshold: `x` itself above 20, where the two agree
/// to f32 precision and `e^x` would soon overflow.
#[inline]
pub fn softplus(x: f32) -> f32 {
    if x > 20.0 {
        x
    } else {
        crate::math::ln_1p(crate::math::exp(x))
    }
}
