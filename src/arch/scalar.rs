//! Portable scalar primitives: the reference for every other backend.
//!
//! Sums use eight independent accumulators: that breaks the add dependency chain (so a
//! superscalar core or the auto-vectorizer can overlap them) and keeps rounding error growth
//! at O(n/8) instead of O(n).

const LANES: usize = 8;

/// Sums eight partial accumulators pairwise.
#[inline(always)]
fn reduce(acc: [f32; LANES]) -> f32 {
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// Sum over `i` of `term(a[i], b[i])`, over the common length of `a` and `b`.
#[inline(always)]
fn reduce_pairs<T: Copy>(a: &[T], b: &[T], term: impl Fn(T, T) -> f32) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (a_tail, b_tail) = (a_chunks.remainder(), b_chunks.remainder());
    for (x, y) in a_chunks.zip(b_chunks) {
        for l in 0..LANES {
            acc[l] += term(x[l], y[l]);
        }
    }
    for (l, (&x, &y)) in a_tail.iter().zip(b_tail).enumerate() {
        acc[l] += term(x, y);
    }
    reduce(acc)
}

/// Dot product over the common length of `a` and `b`.
///
/// ```
/// assert_eq!(microattn::arch::dot(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]), 32.0);
/// ```
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    reduce_pairs(a, b, |x, y| x * y)
}

/// Squared Euclidean distance over the common length.
#[inline]
pub fn sq_l2_distance(a: &[f32], b: &[f32]) -> f32 {
    reduce_pairs(a, b, |x, y| (x - y) * (x - y))
}

/// Manhattan distance over the common length.
#[inline]
pub fn l1_distance(a: &[f32], b: &[f32]) -> f32 {
    reduce_pairs(a, b, |x, y| libm::fabsf(x - y))
}

/// [`dot`] of any element type, widened to f32 by `widen`.
#[inline]
pub fn dot_by<T: Copy>(a: &[T], b: &[T], widen: impl Fn(T) -> f32) -> f32 {
    reduce_pairs(a, b, |x, y| widen(x) * widen(y))
}

/// [`sq_l2_distance`] of any element type, widened to f32 by `widen`.
#[inline]
pub fn sq_l2_distance_by<T: Copy>(a: &[T], b: &[T], widen: impl Fn(T) -> f32) -> f32 {
    reduce_pairs(a, b, |x, y| {
        let d = widen(x) - widen(y);
        d * d
    })
}

/// [`l1_distance`] of any element type, widened to f32 by `widen`.
#[inline]
pub fn l1_distance_by<T: Copy>(a: &[T], b: &[T], widen: impl Fn(T) -> f32) -> f32 {
    reduce_pairs(a, b, |x, y| libm::fabsf(widen(x) - widen(y)))
}

/// `y += alpha * x` over the common length.
#[inline]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// `y *= alpha`.
#[inline]
pub fn scale(y: &mut [f32], alpha: f32) {
    for yi in y.iter_mut() {
        *yi *= alpha;
    }
}
