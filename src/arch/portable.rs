//! Portable backend (`nightly` feature): the `simd.rs` kernels over `core::simd::Simd<f32, 8>`.
//!
//! It needs no CPU feature, so it runs wherever the crate compiles; LLVM lowers the 8 lanes to
//! whatever vectors the compile-time target features allow (two SSE registers on a baseline
//! x86_64, one `ymm` with `-C target-cpu=native`, two NEON registers on aarch64). It is ranked
//! above `scalar` and below every ISA-specific backend, so it is the default only where none
//! of those is available; `MICROATTN_BACKEND=portable` selects it for testing.
//!
//! `mul_add` is a multiply then an add (two roundings): `core::simd` has no fused multiply-add
//! outside `std` (`StdFloat`), and an emulated one would be far slower than this.
//! f16 loads and stores use the generic per-lane conversions of [`Vector`].

use super::simd::Vector;
use core::simd::prelude::*;

/// Eight f32 lanes.
#[derive(Clone, Copy)]
pub(super) struct Portable(f32x8);

// SAFETY (every method): callers pass pointers valid for the eight lanes read or written, as
// the `simd.rs` kernels document; there are no CPU-feature requirements.
impl Vector for Portable {
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Portable(f32x8::splat(x))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Portable(f32x8::from_array(p.cast::<[f32; 8]>().read_unaligned()))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        p.cast::<[f32; 8]>().write_unaligned(self.0.to_array())
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const u16) -> Self {
        // bf16 is the top half of an f32: widen the bit patterns and shift them into place.
        let bits = u16x8::from_array(p.cast::<[u16; 8]>().read_unaligned());
        Portable(f32x8::from_bits(bits.cast::<u32>() << 16))
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        Portable(self.0 + b.0)
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        Portable(self.0 - b.0)
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        Portable(self.0 * b.0)
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        // Not fused: see the module docs.
        Portable(self.0 * b.0 + c.0)
    }
    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        // `simd_max` returns the other operand when one is NaN.
        Portable(self.0.simd_max(b.0))
    }
    #[inline(always)]
    unsafe fn min(self, b: Self) -> Self {
        Portable(self.0.simd_min(b.0))
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        Portable(self.0.abs())
    }
    #[inline(always)]
    unsafe fn sum(self) -> f32 {
        self.0.reduce_sum()
    }
    #[inline(always)]
    unsafe fn keep_where_ge(self, t: Self, x: Self) -> Self {
        Portable(self.0.simd_ge(t.0).select(x.0, f32x8::splat(0.0)))
    }
    #[inline(always)]
    unsafe fn replace_neg_inf(self, y: Self) -> Self {
        let is_neg_inf = self.0.simd_eq(f32x8::splat(f32::NEG_INFINITY));
        Portable(is_neg_inf.select(y.0, self.0))
    }
    #[inline(always)]
    unsafe fn shl23_add(self, add: i32) -> Self {
        // Integer lane arithmetic wraps, as the trait asks.
        let bits = (self.0.to_bits().cast::<i32>() << 23) + i32x8::splat(add);
        Portable(f32x8::from_bits(bits.cast::<u32>()))
    }
}

/// The portable backend, blocked as `avx2` (also 8 lanes): Q·Kᵀ 2 row vectors × 6 keys, P·V
/// 4 rows × 2 column vectors.
pub(super) mod entry_points {
    super::super::simd::simd_backend!(
        super::Portable,
        portable,
        "portable",
        qk = (2, 6),
        pv = (4, 2),
        peak_chains = 12
    );
}
