//! Storage element types: `f32`, `half::f16` and `half::bf16`.
//!
//! The float kernels are written once, generic over [`Element`]: tensors are stored in the
//! element type, arithmetic runs in f32 (products, sums, softmax). The inner primitives are
//! trait methods so that a backend can give one element type a faster version (SIMD for f32,
//! F16C for f16) without touching the kernels.

use half::{bf16, f16};

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// A float storage type whose arithmetic runs in f32.
pub trait Element:
    Copy + Default + PartialEq + core::fmt::Debug + sealed::Sealed + 'static
{
    /// Widens to f32 (exact for every implementor).
    fn to_f32(self) -> f32;
    /// Rounds an f32 to this type (round to nearest even).
    fn from_f32(x: f32) -> Self;

    /// Dot product in f32 over the common length.
    #[inline]
    fn dot(a: &[Self], b: &[Self]) -> f32 {
        crate::arch::scalar::dot_by(a, b, Self::to_f32)
    }

    /// Squared Euclidean distance in f32 over the common length.
    #[inline]
    fn sq_l2_distance(a: &[Self], b: &[Self]) -> f32 {
        crate::arch::scalar::sq_l2_distance_by(a, b, Self::to_f32)
    }

    /// Manhattan distance in f32 over the common length.
    #[inline]
    fn l1_distance(a: &[Self], b: &[Self]) -> f32 {
        crate::arch::scalar::l1_distance_by(a, b, Self::to_f32)
    }

    /// `acc += alpha * x` in f32 over the common length.
    #[inline]
    fn axpy(alpha: f32, x: &[Self], acc: &mut [f32]) {
        for (a, &xi) in acc.iter_mut().zip(x) {
            *a += alpha * xi.to_f32();
        }
    }

    /// `out[j] = scale · q·k_j` in f32 for every `j < out.len()`, key `j` being
    /// `keys[j·key_stride..][..q.len()]`; `false` (nothing written) when `keys` is too short.
    #[inline]
    fn dot_keys(q: &[Self], keys: &[Self], key_stride: usize, scale: f32, out: &mut [f32]) -> bool {
        let fits = out.is_empty()
            || (out.len() - 1)
                .checked_mul(key_stride)
                .and_then(|x| x.checked_add(q.len()))
                .is_some_and(|needed| needed <= keys.len());
        if fits {
            for (j, o) in out.iter_mut().enumerate() {
                *o = scale * Self::dot(q, &keys[j * key_stride..][..q.len()]);
            }
        }
        fits
    }

    /// `acc += Σ_j p[j] · v_j` in f32, row `j` being `v[j·v_stride..][..acc.len()]`; `false`
    /// (nothing done) when `v` is too short.
    #[inline]
    fn pv_row(p: &[f32], v: &[Self], v_stride: usize, acc: &mut [f32]) -> bool {
        let fits = p.is_empty()
            || (p.len() - 1)
                .checked_mul(v_stride)
                .and_then(|x| x.checked_add(acc.len()))
                .is_some_and(|needed| needed <= v.len());
        if fits {
            for (j, &w) in p.iter().enumerate() {
                Self::axpy(w, &v[j * v_stride..][..acc.len()], acc);
            }
        }
        fits
    }

    /// `dst = src` widened to f32, over the common length.
    #[inline]
    fn widen(src: &[Self], dst: &mut [f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = s.to_f32();
        }
    }

    /// `dst = src` rounded to this type, over the common length.
    #[inline]
    fn narrow(src: &[f32], dst: &mut [Self]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = Self::from_f32(s);
        }
    }

    /// The slice itself when `Self` is `f32` (kernels then skip widening copies), else `None`.
    #[inline]
    fn as_f32(_x: &[Self]) -> Option<&[f32]> {
        None
    }

    /// The slice itself when `Self` is `f32`, else `None`.
    #[inline]
    fn as_f32_mut(_x: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
}

impl Element for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        x
    }
    #[inline]
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        crate::arch::dot(a, b)
    }
    #[inline]
    fn sq_l2_distance(a: &[f32], b: &[f32]) -> f32 {
        crate::arch::sq_l2_distance(a, b)
    }
    #[inline]
    fn l1_distance(a: &[f32], b: &[f32]) -> f32 {
        crate::arch::l1_distance(a, b)
    }
    #[inline]
    fn axpy(alpha: f32, x: &[f32], acc: &mut [f32]) {
        crate::arch::axpy(alpha, x, acc)
    }
    #[inline]
    fn widen(src: &[f32], dst: &mut [f32]) {
        let n = src.len().min(dst.len());
        dst[..n].copy_from_slice(&src[..n]);
    }
    #[inline]
    fn narrow(src: &[f32], dst: &mut [f32]) {
        Self::widen(src, dst)
    }
    #[inline]
    fn dot_keys(q: &[f32], keys: &[f32], key_stride: usize, scale: f32, out: &mut [f32]) -> bool {
        crate::arch::backend()
            .dot_keys(q, keys, key_stride, scale, out)
            .is_ok()
    }
    #[inline]
    fn pv_row(p: &[f32], v: &[f32], v_stride: usize, acc: &mut [f32]) -> bool {
        crate::arch::backend().pv_row(p, v, v_stride, acc).is_ok()
    }
    #[inline]
    fn as_f32(x: &[f32]) -> Option<&[f32]> {
        Some(x)
    }
    #[inline]
    fn as_f32_mut(x: &mut [f32]) -> Option<&mut [f32]> {
        Some(x)
    }
}

impl Element for f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    // F16C (x86) converts eight or sixteen at a time.
    #[inline]
    fn dot(a: &[f16], b: &[f16]) -> f32 {
        crate::arch::backend().dot_f16(a, b)
    }
    #[inline]
    fn axpy(alpha: f32, x: &[f16], acc: &mut [f32]) {
        crate::arch::backend().axpy_f16(alpha, x, acc)
    }
    #[inline]
    fn widen(src: &[f16], dst: &mut [f32]) {
        crate::arch::backend().widen_f16(src, dst)
    }
    #[inline]
    fn narrow(src: &[f32], dst: &mut [f16]) {
        crate::arch::backend().narrow_f16(src, dst)
    }
    #[inline]
    fn dot_keys(q: &[f16], keys: &[f16], key_stride: usize, scale: f32, out: &mut [f32]) -> bool {
        crate::arch::backend()
            .dot_keys_f16(q, keys, key_stride, scale, out)
            .is_ok()
    }
    #[inline]
    fn pv_row(p: &[f32], v: &[f16], v_stride: usize, acc: &mut [f32]) -> bool {
        crate::arch::backend()
            .pv_row_f16(p, v, v_stride, acc)
            .is_ok()
    }
}

impl Element for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    // bf16 widens with an integer shift, a vector at a time.
    #[inline]
    fn dot(a: &[bf16], b: &[bf16]) -> f32 {
        crate::arch::backend().dot_bf16(a, b)
    }
    #[inline]
    fn axpy(alpha: f32, x: &[bf16], acc: &mut [f32]) {
        crate::arch::backend().axpy_bf16(alpha, x, acc)
    }
    #[inline]
    fn widen(src: &[bf16], dst: &mut [f32]) {
        crate::arch::backend().widen_bf16(src, dst)
    }
    #[inline]
    fn dot_keys(q: &[bf16], keys: &[bf16], key_stride: usize, scale: f32, out: &mut [f32]) -> bool {
        crate::arch::backend()
            .dot_keys_bf16(q, keys, key_stride, scale, out)
            .is_ok()
    }
    #[inline]
    fn pv_row(p: &[f32], v: &[bf16], v_stride: usize, acc: &mut [f32]) -> bool {
        crate::arch::backend()
            .pv_row_bf16(p, v, v_stride, acc)
            .is_ok()
    }
}
