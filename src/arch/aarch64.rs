//! aarch64 backend: NEON (4 lanes, 32 vector registers).
//!
//! NEON is part of every aarch64 Linux target, so it is almost always available; it is still
//! detected (with `std`) or checked at compile time like the x86 backends. f16 loads use the
//! generic widening in `simd.rs` (the NEON f16 conversion intrinsics are not stable Rust).

use super::simd::Vector;
use core::arch::aarch64::*;

/// Whether the CPU has NEON (run-time detection with `std`).
#[cfg(feature = "std")]
pub(super) fn has_neon() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

/// Whether NEON is enabled at compile time (no `std`: no detection).
#[cfg(not(feature = "std"))]
pub(super) fn has_neon() -> bool {
    cfg!(target_feature = "neon")
}

/// Four f32 lanes in a `q` register.
#[derive(Clone, Copy)]
pub(super) struct Neon(float32x4_t);

// SAFETY (every method): callers run only on CPUs with NEON (the `neon` entry points are
// reached only through a `Backend` made after detection) and pass pointers valid for the
// lanes read or written, as the `simd.rs` kernels document.
impl Vector for Neon {
    const LANES: usize = 4;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Neon(vdupq_n_f32(x))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Neon(vld1q_f32(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        vst1q_f32(p, self.0)
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const u16) -> Self {
        // bf16 is the top half of an f32: widen the bit patterns and shift them into place.
        Neon(vreinterpretq_f32_u32(vshll_n_u16::<16>(vld1_u16(p))))
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        Neon(vaddq_f32(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        Neon(vsubq_f32(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        Neon(vmulq_f32(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        Neon(vfmaq_f32(c.0, self.0, b.0))
    }
    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        // maxNum: a NaN in either operand yields the other.
        Neon(vmaxnmq_f32(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn min(self, b: Self) -> Self {
        Neon(vminnmq_f32(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        Neon(vabsq_f32(self.0))
    }
    #[inline(always)]
    unsafe fn sum(self) -> f32 {
        vaddvq_f32(self.0)
    }
    #[inline(always)]
    unsafe fn sum8(v: &[Self; 8], out: *mut f32) {
        // Two levels of pairwise adds reduce four vectors to their four sums.
        let quad = |a: Self, b: Self, c: Self, d: Self| {
            vpaddq_f32(vpaddq_f32(a.0, b.0), vpaddq_f32(c.0, d.0))
        };
        let [a, b, c, d, e, f, g, h] = *v;
        vst1q_f32(out, quad(a, b, c, d));
        vst1q_f32(out.add(4), quad(e, f, g, h));
    }
    #[inline(always)]
    unsafe fn keep_where_ge(self, t: Self, x: Self) -> Self {
        let ge = vcgeq_f32(self.0, t.0);
        Neon(vreinterpretq_f32_u32(vandq_u32(
            ge,
            vreinterpretq_u32_f32(x.0),
        )))
    }
    #[inline(always)]
    unsafe fn replace_neg_inf(self, y: Self) -> Self {
        let is_neg_inf = vceqq_f32(self.0, vdupq_n_f32(f32::NEG_INFINITY));
        Neon(vbslq_f32(is_neg_inf, y.0, self.0))
    }
    #[inline(always)]
    unsafe fn shl23_add(self, add: i32) -> Self {
        let shifted = vshlq_n_s32::<23>(vreinterpretq_s32_f32(self.0));
        Neon(vreinterpretq_f32_s32(vaddq_s32(shifted, vdupq_n_s32(add))))
    }
}

/// The NEON backend. Q·Kᵀ: 4 row vectors × 6 keys = 24 accumulators; P·V: 4 rows × 4 column
/// vectors = 16 (of the 32 `q` registers).
pub(super) mod neon {
    super::super::simd::simd_backend!(
        super::Neon,
        "neon",
        "neon",
        qk = (4, 6),
        pv = (4, 4),
        peak_chains = 16
    );
}
