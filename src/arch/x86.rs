//! x86_64 backends: AVX2 + FMA + F16C (8 lanes) and, with rustc ≥ 1.89 (which stabilized the
//! AVX-512 intrinsics; `build.rs` sets `cfg(microattn_avx512)`), AVX-512F (16 lanes).
//!
//! Each backend is a [`Vector`] implementation plus the `simd_backend!` entry points; every
//! intrinsic call is inside an `unsafe fn` that only runs once the features were detected.

use super::simd::Vector;
use core::arch::x86_64::*;

/// Whether the CPU has AVX2, FMA and F16C (run-time detection with `std`).
#[cfg(feature = "std")]
pub(super) fn has_avx2() -> bool {
    std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
}

/// Whether AVX2, FMA and F16C are enabled at compile time (no `std`: no detection).
#[cfg(not(feature = "std"))]
pub(super) fn has_avx2() -> bool {
    cfg!(all(
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    ))
}

/// Whether the CPU has AVX-512F, AVX2, FMA and F16C (run-time detection with `std`).
#[cfg(all(microattn_avx512, feature = "std"))]
pub(super) fn has_avx512() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
}

/// Whether AVX-512F, AVX2, FMA and F16C are enabled at compile time.
#[cfg(all(microattn_avx512, not(feature = "std")))]
pub(super) fn has_avx512() -> bool {
    cfg!(all(
        target_feature = "avx512f",
        target_feature = "avx2",
        target_feature = "fma",
        target_feature = "f16c"
    ))
}

/// The lane sums of eight `ymm` vectors as one vector, `[Σv0, ..., Σv7]`: three levels of
/// horizontal adds share the shuffles between the eight (needs AVX).
#[inline(always)]
unsafe fn sum8_ymm(v: [__m256; 8]) -> __m256 {
    // [v0 01, v0 23, v1 01, v1 23 | v0 45, v0 67, v1 45, v1 67], ...
    let h01 = _mm256_hadd_ps(v[0], v[1]);
    let h23 = _mm256_hadd_ps(v[2], v[3]);
    let h45 = _mm256_hadd_ps(v[4], v[5]);
    let h67 = _mm256_hadd_ps(v[6], v[7]);
    // [Σv0 0..3, Σv1 0..3, Σv2 0..3, Σv3 0..3 | the same over lanes 4..7]
    let h0123 = _mm256_hadd_ps(h01, h23);
    let h4567 = _mm256_hadd_ps(h45, h67);
    let low = _mm256_permute2f128_ps::<0x20>(h0123, h4567);
    let high = _mm256_permute2f128_ps::<0x31>(h0123, h4567);
    _mm256_add_ps(low, high)
}

/// Eight f32 lanes in a `ymm` register.
#[derive(Clone, Copy)]
pub(super) struct Avx2(__m256);

// SAFETY (every method): callers run only on CPUs with AVX2, FMA and F16C (the `avx2` entry
// points are reached only through a `Backend` made after detection) and pass pointers valid
// for the lanes read or written, as the `simd.rs` kernels document.
impl Vector for Avx2 {
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Avx2(_mm256_set1_ps(x))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Avx2(_mm256_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm256_storeu_ps(p, self.0)
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const u16) -> Self {
        Avx2(_mm256_cvtph_ps(_mm_loadu_si128(p.cast())))
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const u16) -> Self {
        // bf16 is the top half of an f32: zero-extend and shift into place.
        let wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast()));
        Avx2(_mm256_castsi256_ps(_mm256_slli_epi32::<16>(wide)))
    }
    #[inline(always)]
    unsafe fn store_f16(self, p: *mut u16) {
        let half = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(self.0);
        _mm_storeu_si128(p.cast(), half)
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        Avx2(_mm256_add_ps(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        Avx2(_mm256_sub_ps(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        Avx2(_mm256_mul_ps(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        Avx2(_mm256_fmadd_ps(self.0, b.0, c.0))
    }
    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        // maxps returns its second operand when either is NaN.
        Avx2(_mm256_max_ps(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn min(self, b: Self) -> Self {
        Avx2(_mm256_min_ps(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        Avx2(_mm256_andnot_ps(_mm256_set1_ps(-0.0), self.0))
    }
    #[inline(always)]
    unsafe fn sum(self) -> f32 {
        let half = _mm_add_ps(
            _mm256_castps256_ps128(self.0),
            _mm256_extractf128_ps::<1>(self.0),
        );
        let pair = _mm_add_ps(half, _mm_movehl_ps(half, half));
        _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps::<1>(pair, pair)))
    }
    #[inline(always)]
    unsafe fn sum8(v: &[Self; 8], out: *mut f32) {
        let [a, b, c, d, e, f, g, h] = *v;
        _mm256_storeu_ps(out, sum8_ymm([a.0, b.0, c.0, d.0, e.0, f.0, g.0, h.0]));
    }
    #[inline(always)]
    unsafe fn keep_where_ge(self, t: Self, x: Self) -> Self {
        Avx2(_mm256_and_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(self.0, t.0), x.0))
    }
    #[inline(always)]
    unsafe fn replace_neg_inf(self, y: Self) -> Self {
        let is_neg_inf = _mm256_cmp_ps::<_CMP_EQ_OQ>(self.0, _mm256_set1_ps(f32::NEG_INFINITY));
        Avx2(_mm256_blendv_ps(self.0, y.0, is_neg_inf))
    }
    #[inline(always)]
    unsafe fn shl23_add(self, add: i32) -> Self {
        let shifted = _mm256_slli_epi32::<23>(_mm256_castps_si256(self.0));
        Avx2(_mm256_castsi256_ps(_mm256_add_epi32(
            shifted,
            _mm256_set1_epi32(add),
        )))
    }
}

/// The AVX2 + FMA + F16C backend. Q·Kᵀ: 2 row vectors × 6 keys = 12 accumulators; P·V:
/// 4 rows × 2 column vectors = 8 (of the 16 `ymm` registers).
pub(super) mod avx2 {
    super::super::simd::simd_backend!(
        super::Avx2,
        "avx2,fma,f16c",
        "avx2",
        qk = (2, 6),
        pv = (4, 2),
        peak_chains = 12
    );
}

/// Sixteen f32 lanes in a `zmm` register.
#[cfg(microattn_avx512)]
#[derive(Clone, Copy)]
pub(super) struct Avx512(__m512);

// SAFETY (every method): callers run only on CPUs with AVX-512F, FMA and F16C and pass
// pointers valid for the lanes read or written, as the `simd.rs` kernels document.
// The intrinsics are stable from rustc 1.89; `build.rs` enables this code only there.
#[cfg(microattn_avx512)]
#[allow(clippy::incompatible_msrv)]
impl Vector for Avx512 {
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Avx512(_mm512_set1_ps(x))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        Avx512(_mm512_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm512_storeu_ps(p, self.0)
    }
    #[inline(always)]
    unsafe fn load_f16(p: *const u16) -> Self {
        Avx512(_mm512_cvtph_ps(_mm256_loadu_si256(p.cast())))
    }
    #[inline(always)]
    unsafe fn load_bf16(p: *const u16) -> Self {
        let wide = _mm512_cvtepu16_epi32(_mm256_loadu_si256(p.cast()));
        Avx512(_mm512_castsi512_ps(_mm512_slli_epi32::<16>(wide)))
    }
    #[inline(always)]
    unsafe fn store_f16(self, p: *mut u16) {
        let half = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(self.0);
        _mm256_storeu_si256(p.cast(), half)
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        Avx512(_mm512_add_ps(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        Avx512(_mm512_sub_ps(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        Avx512(_mm512_mul_ps(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        Avx512(_mm512_fmadd_ps(self.0, b.0, c.0))
    }
    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        // vmaxps returns its second operand when either is NaN.
        Avx512(_mm512_max_ps(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn min(self, b: Self) -> Self {
        Avx512(_mm512_min_ps(self.0, b.0))
    }
    #[inline(always)]
    unsafe fn abs(self) -> Self {
        Avx512(_mm512_abs_ps(self.0))
    }
    #[inline(always)]
    unsafe fn sum(self) -> f32 {
        _mm512_reduce_add_ps(self.0)
    }
    #[inline(always)]
    unsafe fn sum8(v: &[Self; 8], out: *mut f32) {
        // Fold each vector to 256 bits (AVX-512F has no 256-bit extract: go through the
        // 128-bit quarters' sum of the upper half), then the AVX reduction.
        let fold = |x: Self| {
            let high = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(x.0)));
            _mm256_add_ps(_mm512_castps512_ps256(x.0), high)
        };
        let [a, b, c, d, e, f, g, h] = *v;
        let halves = [
            fold(a),
            fold(b),
            fold(c),
            fold(d),
            fold(e),
            fold(f),
            fold(g),
            fold(h),
        ];
        _mm256_storeu_ps(out, sum8_ymm(halves));
    }
    #[inline(always)]
    unsafe fn keep_where_ge(self, t: Self, x: Self) -> Self {
        let ge = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(self.0, t.0);
        Avx512(_mm512_maskz_mov_ps(ge, x.0))
    }
    #[inline(always)]
    unsafe fn replace_neg_inf(self, y: Self) -> Self {
        let is_neg_inf =
            _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(self.0, _mm512_set1_ps(f32::NEG_INFINITY));
        Avx512(_mm512_mask_blend_ps(is_neg_inf, self.0, y.0))
    }
    #[inline(always)]
    unsafe fn shl23_add(self, add: i32) -> Self {
        let shifted = _mm512_slli_epi32::<23>(_mm512_castps_si512(self.0));
        Avx512(_mm512_castsi512_ps(_mm512_add_epi32(
            shifted,
            _mm512_set1_epi32(add),
        )))
    }
}

/// The AVX-512F backend. Q·Kᵀ: 2 row vectors × 12 keys = 24 accumulators; P·V: 4 rows × 4
/// column vectors = 16 (of the 32 `zmm` registers).
#[cfg(microattn_avx512)]
#[allow(clippy::incompatible_msrv)]
pub(super) mod avx512 {
    super::super::simd::simd_backend!(
        super::Avx512,
        "avx512f,avx2,fma,f16c",
        "avx512",
        qk = (2, 12),
        pv = (4, 4),
        peak_chains = 12
    );
}
