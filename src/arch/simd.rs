//! Kernels written once over a vector of f32 lanes ([`Vector`]).
//!
//! `x86.rs` and `aarch64.rs` implement [`Vector`] with their intrinsics and instantiate every
//! kernel here inside `#[target_feature]` functions ([`simd_backend!`]). The trait methods and
//! the kernels are `#[inline(always)]`, so they are inlined into those entry points, where the
//! intrinsics compile to the enabled instructions.
//!
//! Every function is `unsafe` for two reasons: it may only run on a CPU that has the vector
//! type's features, and it reads and writes through raw pointers within bounds that
//! `arch/mod.rs` checks before calling it. Each kernel states those bounds as "Caller:".

use super::BLOCK_ROWS as ROWS;
use half::{bf16, f16};

/// A vector of `LANES` f32 values and the operations the kernels need.
pub(super) trait Vector: Copy {
    /// Number of f32 lanes (at most 16).
    const LANES: usize;
    /// Every lane `x`.
    unsafe fn splat(x: f32) -> Self;
    /// `LANES` values from `p` (unaligned).
    unsafe fn load(p: *const f32) -> Self;
    /// Writes the lanes to `p` (unaligned).
    unsafe fn store(self, p: *mut f32);
    /// `LANES` f16 bit patterns from `p`, widened (exact).
    #[inline(always)]
    unsafe fn load_f16(p: *const u16) -> Self {
        let mut wide = [0.0f32; 16];
        for (i, w) in wide.iter_mut().enumerate().take(Self::LANES) {
            *w = f16::from_bits(*p.add(i)).to_f32();
        }
        Self::load(wide.as_ptr())
    }
    /// `LANES` bf16 bit patterns from `p`, widened (exact).
    #[inline(always)]
    unsafe fn load_bf16(p: *const u16) -> Self {
        let mut wide = [0.0f32; 16];
        for (i, w) in wide.iter_mut().enumerate().take(Self::LANES) {
            *w = f32::from_bits(u32::from(*p.add(i)) << 16);
        }
        Self::load(wide.as_ptr())
    }
    /// Writes the lanes to `p` as f16 bit patterns, rounded to nearest even.
    #[inline(always)]
    unsafe fn store_f16(self, p: *mut u16) {
        let mut wide = [0.0f32; 16];
        self.store(wide.as_mut_ptr());
        for (i, &w) in wide.iter().enumerate().take(Self::LANES) {
            *p.add(i) = f16::from_f32(w).to_bits();
        }
    }
    /// `self + b`.
    unsafe fn add(self, b: Self) -> Self;
    /// `self - b`.
    unsafe fn sub(self, b: Self) -> Self;
    /// `self * b`.
    unsafe fn mul(self, b: Self) -> Self;
    /// `self * b + c`, fused (one rounding).
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
    /// Lane maximum; a NaN in `self` yields `b`.
    unsafe fn max(self, b: Self) -> Self;
    /// Lane minimum; a NaN in `self` yields `b`.
    unsafe fn min(self, b: Self) -> Self;
    /// `|self|`.
    unsafe fn abs(self) -> Self;
    /// Sum of the lanes.
    unsafe fn sum(self) -> f32;
    /// The lane sums of eight vectors, written to `out[0..8]` (backends override this with a
    /// transposing reduction that shares the shuffles between the eight).
    #[inline(always)]
    unsafe fn sum8(v: &[Self; 8], out: *mut f32) {
        for (i, x) in v.iter().enumerate() {
            *out.add(i) = x.sum();
        }
    }
    /// `x` in the lanes where `self >= t`, 0 elsewhere (NaN compares false).
    unsafe fn keep_where_ge(self, t: Self, x: Self) -> Self;
    /// `y` in the lanes where `self` is `-inf`, `self` elsewhere.
    unsafe fn replace_neg_inf(self, y: Self) -> Self;
    /// The f32 whose bits are `(bits(self) << 23) + add` (wrapping): builds `2^n` for `exp`.
    unsafe fn shl23_add(self, add: i32) -> Self;
}

/// A storage element that kernels load straight into f32 vectors.
pub(super) trait Lane: Copy {
    /// `V::LANES` elements from `p`, widened to f32.
    unsafe fn load<V: Vector>(p: *const Self) -> V;
    /// One element, widened to f32.
    fn widen(self) -> f32;
}

impl Lane for f32 {
    #[inline(always)]
    unsafe fn load<V: Vector>(p: *const f32) -> V {
        V::load(p)
    }
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }
}

impl Lane for f16 {
    #[inline(always)]
    unsafe fn load<V: Vector>(p: *const f16) -> V {
        // `half::f16` is `repr(transparent)` over its u16 bit pattern.
        V::load_f16(p.cast())
    }
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

impl Lane for bf16 {
    #[inline(always)]
    unsafe fn load<V: Vector>(p: *const bf16) -> V {
        // `half::bf16` is `repr(transparent)` over its u16 bit pattern.
        V::load_bf16(p.cast())
    }
    #[inline(always)]
    fn widen(self) -> f32 {
        self.to_f32()
    }
}

// ---------------------------------------------------------------------------------------------
// exp

/// Above this `exp` saturates (`e^88.376 ≈ 2^127.5`, the largest power the 2^n step can build).
const EXP_HI: f32 = 88.376_26;
/// `ln(2^-126)`: below it the result would be subnormal and `exp` returns 0.
const EXP_LO: f32 = -87.336_55;
/// Arguments are clamped here first so `2^n` stays a valid bit pattern (`n >= -127`).
const EXP_CLAMP_LO: f32 = -88.0;
/// `1.5 · 2^23`: adding it rounds to an integer held in the low mantissa bits.
const ROUND_MAGIC: f32 = 12_582_912.0;
/// `ln 2` split in two (Cody–Waite): `n · LN2_HI` is exact for `|n| <= 128`.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes `expf` polynomial: `e^r ≈ 1 + r + r²·P(r)` on `|r| <= ln2 / 2` (its last
/// coefficient, 0.50000001201, rounds to 0.5 in f32).
const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `e^x` per lane, within 2 ulp of the exact value for `EXP_LO <= x <= EXP_HI` (measured
/// against f64 `exp` in `tests/arch_backends.rs`); 0 below `EXP_LO` (including `-inf` and
/// NaN), `e^EXP_HI` above `EXP_HI`. `exp(0)` is exactly 1.
#[inline(always)]
pub(super) unsafe fn exp<V: Vector>(x: V) -> V {
    let xc = x.min(V::splat(EXP_HI)).max(V::splat(EXP_CLAMP_LO));
    // n = round(x / ln 2), both as a float and in the low mantissa bits of `t`.
    let t = xc.mul_add(V::splat(core::f32::consts::LOG2_E), V::splat(ROUND_MAGIC));
    let n = t.sub(V::splat(ROUND_MAGIC));
    let r = n.mul_add(V::splat(-LN2_HI), xc);
    let r = n.mul_add(V::splat(-LN2_LO), r);
    let mut p = V::splat(EXP_POLY[0]);
    for &c in &EXP_POLY[1..] {
        p = p.mul_add(r, V::splat(c));
    }
    let y = p.mul_add(r.mul(r), r).add(V::splat(1.0));
    // bits(t) = bits(MAGIC) + n and bits(MAGIC) has nine zero low bits, so shifting left by 23
    // leaves n << 23 (mod 2^32); adding 127 << 23 gives the bits of 2^n.
    let pow2n = t.shl23_add(127 << 23);
    x.keep_where_ge(V::splat(EXP_LO), y.mul(pow2n))
}

// ---------------------------------------------------------------------------------------------
// Reductions and element-wise kernels.

/// Caller: none (reads the common length of `a` and `b`).
#[inline(always)]
pub(super) unsafe fn dot<V: Vector, T: Lane>(a: &[T], b: &[T]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let l = V::LANES;
    let mut acc = [V::splat(0.0); 4];
    let mut i = 0;
    while i + 4 * l <= n {
        for (u, acc_u) in acc.iter_mut().enumerate() {
            let x = T::load::<V>(pa.add(i + u * l));
            *acc_u = x.mul_add(T::load::<V>(pb.add(i + u * l)), *acc_u);
        }
        i += 4 * l;
    }
    while i + l <= n {
        acc[0] = T::load::<V>(pa.add(i)).mul_add(T::load::<V>(pb.add(i)), acc[0]);
        i += l;
    }
    let mut sum = acc[0].add(acc[1]).add(acc[2].add(acc[3])).sum();
    for (x, y) in a[i..n].iter().zip(&b[i..n]) {
        sum += x.widen() * y.widen();
    }
    sum
}

/// `Σ term(a_i, b_i)` with the vector form `vterm(x, y, acc)` accumulating.
/// Caller: none.
#[inline(always)]
unsafe fn reduce_pairs<V: Vector>(
    a: &[f32],
    b: &[f32],
    vterm: impl Fn(V, V, V) -> V,
    term: impl Fn(f32, f32) -> f32,
) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let l = V::LANES;
    let mut acc = [V::splat(0.0); 4];
    let mut i = 0;
    while i + 4 * l <= n {
        for (u, acc_u) in acc.iter_mut().enumerate() {
            *acc_u = vterm(
                V::load(pa.add(i + u * l)),
                V::load(pb.add(i + u * l)),
                *acc_u,
            );
        }
        i += 4 * l;
    }
    while i + l <= n {
        acc[0] = vterm(V::load(pa.add(i)), V::load(pb.add(i)), acc[0]);
        i += l;
    }
    let mut sum = acc[0].add(acc[1]).add(acc[2].add(acc[3])).sum();
    for (&x, &y) in a[i..n].iter().zip(&b[i..n]) {
        sum += term(x, y);
    }
    sum
}

/// Caller: none.
#[inline(always)]
pub(super) unsafe fn sq_l2_distance<V: Vector>(a: &[f32], b: &[f32]) -> f32 {
    reduce_pairs::<V>(
        a,
        b,
        |x, y, acc| {
            let d = x.sub(y);
            d.mul_add(d, acc)
        },
        |x, y| (x - y) * (x - y),
    )
}

/// Caller: none.
#[inline(always)]
pub(super) unsafe fn l1_distance<V: Vector>(a: &[f32], b: &[f32]) -> f32 {
    reduce_pairs::<V>(
        a,
        b,
        |x, y, acc| acc.add(x.sub(y).abs()),
        |x, y| libm::fabsf(x - y),
    )
}

/// `y += alpha * x` over the common length. Caller: none.
#[inline(always)]
pub(super) unsafe fn axpy<V: Vector, T: Lane>(alpha: f32, x: &[T], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let (l, a) = (V::LANES, V::splat(alpha));
    let mut i = 0;
    while i + l <= n {
        a.mul_add(T::load::<V>(px.add(i)), V::load(py.add(i)))
            .store(py.add(i));
        i += l;
    }
    for (yi, xi) in y[i..n].iter_mut().zip(&x[i..n]) {
        *yi += alpha * xi.widen();
    }
}

/// `dst = src` widened, over the common length. Caller: none.
#[inline(always)]
pub(super) unsafe fn widen<V: Vector, T: Lane>(src: &[T], dst: &mut [f32]) {
    let n = src.len().min(dst.len());
    let (ps, pd) = (src.as_ptr(), dst.as_mut_ptr());
    let l = V::LANES;
    let mut i = 0;
    while i + l <= n {
        T::load::<V>(ps.add(i)).store(pd.add(i));
        i += l;
    }
    for (d, s) in dst[i..n].iter_mut().zip(&src[i..n]) {
        *d = s.widen();
    }
}

/// `dst = src` rounded to f16 (nearest even), over the common length. Caller: none.
#[inline(always)]
pub(super) unsafe fn narrow_f16<V: Vector>(src: &[f32], dst: &mut [f16]) {
    let n = src.len().min(dst.len());
    // `half::f16` is `repr(transparent)` over its u16 bit pattern.
    let (ps, pd) = (src.as_ptr(), dst.as_mut_ptr().cast::<u16>());
    let l = V::LANES;
    let mut i = 0;
    while i + l <= n {
        V::load(ps.add(i)).store_f16(pd.add(i));
        i += l;
    }
    for (d, &s) in dst[i..n].iter_mut().zip(&src[i..n]) {
        *d = f16::from_f32(s);
    }
}

/// `y *= alpha`. Caller: none.
#[inline(always)]
pub(super) unsafe fn scale<V: Vector>(y: &mut [f32], alpha: f32) {
    let n = y.len();
    let (py, a, l) = (y.as_mut_ptr(), V::splat(alpha), V::LANES);
    let mut i = 0;
    while i + l <= n {
        V::load(py.add(i)).mul(a).store(py.add(i));
        i += l;
    }
    for yi in &mut y[i..] {
        *yi *= alpha;
    }
}

/// Largest element ignoring NaN; `-inf` when empty. Caller: none.
#[inline(always)]
pub(super) unsafe fn max<V: Vector>(x: &[f32]) -> f32 {
    let (px, l) = (x.as_ptr(), V::LANES);
    let mut m = V::splat(f32::NEG_INFINITY);
    let mut i = 0;
    while i + l <= x.len() {
        m = V::load(px.add(i)).max(m);
        i += l;
    }
    let mut lanes = [0.0f32; 16];
    m.store(lanes.as_mut_ptr());
    lanes[..l]
        .iter()
        .chain(&x[i..])
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// `x_i = e^(x_i - shift)`; returns the sum. Caller: none.
#[inline(always)]
pub(super) unsafe fn exp_sum<V: Vector>(x: &mut [f32], shift: f32) -> f32 {
    let n = x.len();
    let (px, s, l) = (x.as_mut_ptr(), V::splat(shift), V::LANES);
    let mut sum = V::splat(0.0);
    let mut i = 0;
    while i + l <= n {
        let e = exp(V::load(px.add(i)).sub(s));
        e.store(px.add(i));
        sum = sum.add(e);
        i += l;
    }
    if i < n {
        // The tail through the same vector exp (so a value does not depend on its position),
        // padded with -inf, whose weight is 0.
        let mut tail = [f32::NEG_INFINITY; 16];
        tail[..n - i].copy_from_slice(&x[i..]);
        let e = exp(V::load(tail.as_ptr()).sub(s));
        e.store(tail.as_mut_ptr());
        x[i..].copy_from_slice(&tail[..n - i]);
        sum = sum.add(e);
    }
    sum.sum()
}

// ---------------------------------------------------------------------------------------------
// One query row against a tile of keys (the decode and general path).

/// `N` accumulators of `q·k_u` for keys at `k + u·ks`, over the first `d - d % LANES`
/// features (returned with the number of features covered).
/// Caller: `q` has `d` elements, every key `d` elements.
#[inline(always)]
unsafe fn dot_keys_acc<V: Vector, T: Lane, const N: usize>(
    q: *const T,
    d: usize,
    k: *const T,
    ks: usize,
) -> ([V; N], usize) {
    let l = V::LANES;
    let mut acc = [V::splat(0.0); N];
    let mut c = 0;
    while c + l <= d {
        let qv = T::load::<V>(q.add(c));
        for (u, acc_u) in acc.iter_mut().enumerate() {
            *acc_u = qv.mul_add(T::load::<V>(k.add(u * ks + c)), *acc_u);
        }
        c += l;
    }
    (acc, c)
}

/// `out[u] = scale · (sums[u] + q[c..d]·k_u[c..d])`: the scalar tail of `dot_keys`.
/// Caller: as `dot_keys_acc`, `out` writable for `sums.len()`.
#[inline(always)]
unsafe fn dot_keys_finish<T: Lane>(
    sums: &[f32],
    q: *const T,
    (c, d): (usize, usize),
    k: *const T,
    ks: usize,
    scale: f32,
    out: *mut f32,
) {
    for (u, &partial) in sums.iter().enumerate() {
        let mut sum = partial;
        for cc in c..d {
            sum += (*q.add(cc)).widen() * (*k.add(u * ks + cc)).widen();
        }
        *out.add(u) = scale * sum;
    }
}

/// `s[j] = scale · q·k_j` with key `j` at `k[j·ks..][..q.len()]`, eight keys per pass over
/// `q` (one accumulator per key, reduced together by `sum8`).
/// Caller: `s.is_empty()` or `k.len() >= (s.len() - 1)·ks + q.len()`.
#[inline(always)]
pub(super) unsafe fn dot_keys<V: Vector, T: Lane>(
    q: &[T],
    k: &[T],
    ks: usize,
    scale: f32,
    s: &mut [f32],
) {
    let (n, d) = (s.len(), q.len());
    let (pq, pk, ps) = (q.as_ptr(), k.as_ptr(), s.as_mut_ptr());
    // A query of at most four vectors stays in registers and each key is read front to back
    // (decode streams the keys: one sequential pass, not eight interleaved ones).
    let mut j = 0;
    if d % V::LANES == 0 {
        j = match d / V::LANES {
            1 => dot_keys_q_regs::<V, T, 1>(pq, pk, ks, scale, ps, n),
            2 => dot_keys_q_regs::<V, T, 2>(pq, pk, ks, scale, ps, n),
            3 => dot_keys_q_regs::<V, T, 3>(pq, pk, ks, scale, ps, n),
            4 => dot_keys_q_regs::<V, T, 4>(pq, pk, ks, scale, ps, n),
            _ => 0,
        };
    }
    while j + 8 <= n {
        let kj = pk.add(j * ks);
        let (acc, c) = dot_keys_acc::<V, T, 8>(pq, d, kj, ks);
        let mut sums = [0.0f32; 8];
        V::sum8(&acc, sums.as_mut_ptr());
        dot_keys_finish(&sums, pq, (c, d), kj, ks, scale, ps.add(j));
        j += 8;
    }
    while j < n {
        let kj = pk.add(j * ks);
        let (acc, c) = dot_keys_acc::<V, T, 1>(pq, d, kj, ks);
        dot_keys_finish(&[acc[0].sum()], pq, (c, d), kj, ks, scale, ps.add(j));
        j += 1;
    }
}

/// The blocks of eight keys of [`dot_keys`] when `d = QV·LANES`: the query in `QV` registers,
/// each key's vectors loaded in order. The same fused multiply-adds in the same order as
/// `dot_keys_acc`, so the same bits. Returns the number of keys done (a multiple of 8).
/// Caller: as `dot_keys`, `q` holds `QV·LANES` elements, `s` writable for `n`.
#[inline(always)]
unsafe fn dot_keys_q_regs<V: Vector, T: Lane, const QV: usize>(
    q: *const T,
    k: *const T,
    ks: usize,
    scale: f32,
    s: *mut f32,
    n: usize,
) -> usize {
    let l = V::LANES;
    let mut qv = [V::splat(0.0); QV];
    for (i, x) in qv.iter_mut().enumerate() {
        *x = T::load::<V>(q.add(i * l));
    }
    let mut j = 0;
    while j + 8 <= n {
        let mut acc = [V::splat(0.0); 8];
        for (u, a) in acc.iter_mut().enumerate() {
            let key = k.add((j + u) * ks);
            let mut sum = V::splat(0.0);
            for (i, x) in qv.iter().enumerate() {
                sum = x.mul_add(T::load::<V>(key.add(i * l)), sum);
            }
            *a = sum;
        }
        let mut sums = [0.0f32; 8];
        V::sum8(&acc, sums.as_mut_ptr());
        for (u, &sum) in sums.iter().enumerate() {
            *s.add(j + u) = scale * sum;
        }
        j += 8;
    }
    j
}

/// `acc[c..c + C·LANES] += Σ_j p_j · v_j[c..]`, the accumulators in registers over all keys:
/// `K` interleaved sets (key `j` into set `j mod K`) so that `C·K` independent FMA chains
/// hide the FMA latency.
/// Caller: `n` weights at `p`, `n` rows at `v + j·vs` readable for `C·LANES` elements, `acc`
/// writable for `C·LANES`.
#[inline(always)]
unsafe fn pv_row_cols<V: Vector, T: Lane, const C: usize, const K: usize>(
    p: *const f32,
    n: usize,
    v: *const T,
    vs: usize,
    acc: *mut f32,
) {
    let l = V::LANES;
    let mut a = [[V::splat(0.0); C]; K];
    for (u, a_u) in a[0].iter_mut().enumerate() {
        *a_u = V::load(acc.add(u * l));
    }
    let mut j = 0;
    while j + K <= n {
        for (i, a_i) in a.iter_mut().enumerate() {
            let w = V::splat(*p.add(j + i));
            let row = v.add((j + i) * vs);
            for (u, a_u) in a_i.iter_mut().enumerate() {
                *a_u = w.mul_add(T::load::<V>(row.add(u * l)), *a_u);
            }
        }
        j += K;
    }
    while j < n {
        let w = V::splat(*p.add(j));
        let row = v.add(j * vs);
        for (u, a_u) in a[0].iter_mut().enumerate() {
            *a_u = w.mul_add(T::load::<V>(row.add(u * l)), *a_u);
        }
        j += 1;
    }
    for u in 0..C {
        let mut total = a[0][u];
        for a_i in &a[1..] {
            total = total.add(a_i[u]);
        }
        total.store(acc.add(u * l));
    }
}

/// `acc += Σ_j p[j] · v[j·vs..][..acc.len()]`.
/// Caller: `p.is_empty()` or `v.len() >= (p.len() - 1)·vs + acc.len()`.
#[inline(always)]
pub(super) unsafe fn pv_row<V: Vector, T: Lane>(p: &[f32], v: &[T], vs: usize, acc: &mut [f32]) {
    let (n, dv, l) = (p.len(), acc.len(), V::LANES);
    let (pp, pv, pa) = (p.as_ptr(), v.as_ptr(), acc.as_mut_ptr());
    let mut c = 0;
    while c + 8 * l <= dv {
        pv_row_cols::<V, T, 8, 1>(pp, n, pv.add(c), vs, pa.add(c));
        c += 8 * l;
    }
    if c + 4 * l <= dv {
        pv_row_cols::<V, T, 4, 2>(pp, n, pv.add(c), vs, pa.add(c));
        c += 4 * l;
    }
    while c + l <= dv {
        pv_row_cols::<V, T, 1, 4>(pp, n, pv.add(c), vs, pa.add(c));
        c += l;
    }
    for (cc, a) in acc.iter_mut().enumerate().skip(c) {
        for (j, &w) in p.iter().enumerate() {
            *a += w * (*pv.add(j * vs + cc)).widen();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A block of ROWS query rows against a tile of keys (the blocked SDPA path). Rows are the
// vector lanes: `qt` is Qᵀ `[d][ROWS]`, logits and weights are `[keys][ROWS]`, so the softmax
// of every row runs down the columns with no horizontal reduction.

/// `J` keys × `RV·LANES` rows of Q·Kᵀ, all accumulators in registers. Adds `x - x` of every
/// stored logit to `check` (0 when finite, NaN otherwise).
/// Caller: `qt` readable for `d` rows of stride ROWS from this row offset (`RV·LANES` lanes),
/// `J` keys of `d` elements at `k + jj·ks`, `s` writable for `J` rows of stride ROWS.
#[inline(always)]
unsafe fn qk_micro<V: Vector, const RV: usize, const J: usize>(
    qt: *const f32,
    d: usize,
    k: *const f32,
    ks: usize,
    scale: f32,
    s: *mut f32,
    check: &mut V,
) {
    let l = V::LANES;
    let mut acc = [[V::splat(0.0); RV]; J];
    for c in 0..d {
        let mut qv = [V::splat(0.0); RV];
        for (i, q) in qv.iter_mut().enumerate() {
            *q = V::load(qt.add(c * ROWS + i * l));
        }
        for (jj, acc_j) in acc.iter_mut().enumerate() {
            let kv = V::splat(*k.add(jj * ks + c));
            for (a, q) in acc_j.iter_mut().zip(&qv) {
                *a = q.mul_add(kv, *a);
            }
        }
    }
    let sc = V::splat(scale);
    for (jj, acc_j) in acc.iter().enumerate() {
        for (i, a) in acc_j.iter().enumerate() {
            let x = a.mul(sc);
            x.store(s.add(jj * ROWS + i * l));
            *check = check.add(x.sub(x));
        }
    }
}

/// `s[j·ROWS + r] = scale · Σ_c qt[c·ROWS + r] · k[j·ks + c]` for `j < s.len() / ROWS`;
/// returns whether every logit is finite.
/// Caller: `qt.len() >= d·ROWS`, `s.len()` a multiple of ROWS, `ROWS % (RV·LANES) == 0`, and
/// `s.is_empty()` or `k.len() >= (s.len() / ROWS - 1)·ks + d`.
#[inline(always)]
pub(super) unsafe fn qk_block<V: Vector, const RV: usize, const J: usize>(
    qt: &[f32],
    d: usize,
    k: &[f32],
    ks: usize,
    scale: f32,
    s: &mut [f32],
) -> bool {
    let n = s.len() / ROWS;
    let (pq, pk, ps) = (qt.as_ptr(), k.as_ptr(), s.as_mut_ptr());
    let mut check = V::splat(0.0);
    let step = RV * V::LANES;
    let mut r0 = 0;
    while r0 + step <= ROWS {
        let mut j = 0;
        while j + J <= n {
            let (kj, sj) = (pk.add(j * ks), ps.add(j * ROWS + r0));
            qk_micro::<V, RV, J>(pq.add(r0), d, kj, ks, scale, sj, &mut check);
            j += J;
        }
        while j < n {
            let (kj, sj) = (pk.add(j * ks), ps.add(j * ROWS + r0));
            qk_micro::<V, RV, 1>(pq.add(r0), d, kj, ks, scale, sj, &mut check);
            j += 1;
        }
        r0 += step;
    }
    check.sum() == 0.0
}

/// The online softmax of a tile for every row at once: with `n = s.len() / ROWS` keys,
/// `m_new = max(m, max_j s)`, `alpha = e^(m - m_new)`, `s = e^(s - m_new)`,
/// `l = l·alpha + Σ_j s`, `m = m_new` (a row that has seen only `-inf` keeps `m = -inf`, gets
/// zero weights and `alpha = 0`).
/// Caller: `s.len()` a multiple of ROWS, `ROWS % LANES == 0`.
#[inline(always)]
pub(super) unsafe fn softmax_block<V: Vector>(
    s: &mut [f32],
    m: &mut [f32; ROWS],
    l: &mut [f32; ROWS],
    alpha: &mut [f32; ROWS],
) {
    let n = s.len() / ROWS;
    let lanes = V::LANES;
    let mut r = 0;
    while r + lanes <= ROWS {
        let sp = s.as_mut_ptr().add(r);
        let mut tile_max = V::splat(f32::NEG_INFINITY);
        for j in 0..n {
            tile_max = V::load(sp.add(j * ROWS)).max(tile_max);
        }
        let m_old = V::load(m.as_ptr().add(r));
        let m_new = tile_max.max(m_old);
        // A row with no finite logit yet subtracts 0, so -inf stays -inf (weight 0) rather
        // than becoming -inf - -inf = NaN.
        let shift = m_new.replace_neg_inf(V::splat(0.0));
        let a = exp(m_old.sub(shift));
        let mut sum = V::splat(0.0);
        for j in 0..n {
            let e = exp(V::load(sp.add(j * ROWS)).sub(shift));
            e.store(sp.add(j * ROWS));
            sum = sum.add(e);
        }
        m_new.store(m.as_mut_ptr().add(r));
        a.mul_add(V::load(l.as_ptr().add(r)), sum)
            .store(l.as_mut_ptr().add(r));
        a.store(alpha.as_mut_ptr().add(r));
        r += lanes;
    }
}

/// `R` rows × `C·LANES` columns of `acc = acc·alpha + P·V` over `n` keys, in registers.
/// Caller: `p` readable for `n` rows of stride ROWS (`R` lanes), `alpha` for `R`, `v` for `n`
/// rows of stride `vs` (`C·LANES` lanes), `acc` for `R` rows of stride `dvp`.
#[inline(always)]
unsafe fn pv_micro<V: Vector, const R: usize, const C: usize>(
    p: *const f32,
    n: usize,
    v: *const f32,
    vs: usize,
    alpha: *const f32,
    acc: *mut f32,
    dvp: usize,
) {
    let l = V::LANES;
    let mut a = [[V::splat(0.0); C]; R];
    for (rr, a_r) in a.iter_mut().enumerate() {
        let rescale = V::splat(*alpha.add(rr));
        for (u, x) in a_r.iter_mut().enumerate() {
            *x = V::load(acc.add(rr * dvp + u * l)).mul(rescale);
        }
    }
    for j in 0..n {
        let mut vv = [V::splat(0.0); C];
        for (u, x) in vv.iter_mut().enumerate() {
            *x = V::load(v.add(j * vs + u * l));
        }
        for (rr, a_r) in a.iter_mut().enumerate() {
            let w = V::splat(*p.add(j * ROWS + rr));
            for (x, vu) in a_r.iter_mut().zip(&vv) {
                *x = w.mul_add(*vu, *x);
            }
        }
    }
    for (rr, a_r) in a.iter().enumerate() {
        for (u, x) in a_r.iter().enumerate() {
            x.store(acc.add(rr * dvp + u * l));
        }
    }
}

/// `acc[r·dvp + c] = acc[r·dvp + c]·alpha[r] + Σ_j p[j·ROWS + r] · v[j·vs + c]` for every row
/// `r < ROWS` and column `c < dvp`, with `n = p.len() / ROWS` keys.
/// Caller: `p.len()` a multiple of ROWS, `ROWS % R == 0`, `dvp % LANES == 0`,
/// `acc.len() >= ROWS·dvp`, and `p.is_empty()` or `v.len() >= (n - 1)·vs + dvp`.
#[inline(always)]
pub(super) unsafe fn pv_block<V: Vector, const R: usize, const C: usize>(
    p: &[f32],
    v: &[f32],
    vs: usize,
    dvp: usize,
    alpha: &[f32; ROWS],
    acc: &mut [f32],
) {
    let n = p.len() / ROWS;
    let l = V::LANES;
    let (pp, pv, pa, al) = (p.as_ptr(), v.as_ptr(), acc.as_mut_ptr(), alpha.as_ptr());
    let mut r0 = 0;
    while r0 + R <= ROWS {
        let mut c = 0;
        while c + C * l <= dvp {
            let (vc, ac) = (pv.add(c), pa.add(r0 * dvp + c));
            pv_micro::<V, R, C>(pp.add(r0), n, vc, vs, al.add(r0), ac, dvp);
            c += C * l;
        }
        while c + l <= dvp {
            let (vc, ac) = (pv.add(c), pa.add(r0 * dvp + c));
            pv_micro::<V, R, 1>(pp.add(r0), n, vc, vs, al.add(r0), ac, dvp);
            c += l;
        }
        r0 += R;
    }
}

/// `iterations` rounds of FMAs on `CHAINS` independent accumulators; returns their sum so the
/// work cannot be optimized away. Does `iterations · CHAINS · LANES · 2` flops.
#[inline(always)]
pub(super) unsafe fn fma_peak<V: Vector, const CHAINS: usize>(iterations: usize) -> f32 {
    let mut acc = [V::splat(0.0); CHAINS];
    let (a, b) = (V::splat(0.999_999), V::splat(1e-6));
    for _ in 0..iterations {
        for x in acc.iter_mut() {
            *x = x.mul_add(a, b);
        }
    }
    acc.iter().fold(V::splat(0.0), |s, x| s.add(*x)).sum()
}

/// Defines the `#[target_feature]` entry points of one backend and its [`super::Table`]
/// `TABLE`: `simd_backend!(VectorType, "features", "name", qk = (RV, J), pv = (R, C))` with the
/// register blocking of the Q·Kᵀ (`RV` row vectors × `J` keys) and P·V (`R` rows × `C`
/// column vectors) micro-kernels.
///
/// `simd_backend!(VectorType, portable, "name", ...)` makes entry points without
/// `#[target_feature]`, for a vector type that runs on every CPU (`portable.rs`).
macro_rules! simd_backend {
    (@attrs [$($attr:meta)?] $v:ty, $name:literal, qk = ($rv:literal, $j:literal), pv = ($r:literal, $c:literal), peak_chains = $chains:literal) => {
        use crate::arch::{simd, Table, BLOCK_ROWS};
        use half::{bf16, f16};

        $(#[$attr])?
        unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
            simd::dot::<$v, f32>(a, b)
        }
        $(#[$attr])?
        unsafe fn dot_f16(a: &[f16], b: &[f16]) -> f32 {
            simd::dot::<$v, f16>(a, b)
        }
        $(#[$attr])?
        unsafe fn dot_bf16(a: &[bf16], b: &[bf16]) -> f32 {
            simd::dot::<$v, bf16>(a, b)
        }
        $(#[$attr])?
        unsafe fn sq_l2_distance(a: &[f32], b: &[f32]) -> f32 {
            simd::sq_l2_distance::<$v>(a, b)
        }
        $(#[$attr])?
        unsafe fn l1_distance(a: &[f32], b: &[f32]) -> f32 {
            simd::l1_distance::<$v>(a, b)
        }
        $(#[$attr])?
        unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
            simd::axpy::<$v, f32>(alpha, x, y)
        }
        $(#[$attr])?
        unsafe fn axpy_f16(alpha: f32, x: &[f16], y: &mut [f32]) {
            simd::axpy::<$v, f16>(alpha, x, y)
        }
        $(#[$attr])?
        unsafe fn axpy_bf16(alpha: f32, x: &[bf16], y: &mut [f32]) {
            simd::axpy::<$v, bf16>(alpha, x, y)
        }
        $(#[$attr])?
        unsafe fn widen_f16(src: &[f16], dst: &mut [f32]) {
            simd::widen::<$v, f16>(src, dst)
        }
        $(#[$attr])?
        unsafe fn widen_bf16(src: &[bf16], dst: &mut [f32]) {
            simd::widen::<$v, bf16>(src, dst)
        }
        $(#[$attr])?
        unsafe fn narrow_f16(src: &[f32], dst: &mut [f16]) {
            simd::narrow_f16::<$v>(src, dst)
        }
        $(#[$attr])?
        unsafe fn scale(y: &mut [f32], alpha: f32) {
            simd::scale::<$v>(y, alpha)
        }
        $(#[$attr])?
        unsafe fn max(x: &[f32]) -> f32 {
            simd::max::<$v>(x)
        }
        $(#[$attr])?
        unsafe fn exp_sum(x: &mut [f32], shift: f32) -> f32 {
            simd::exp_sum::<$v>(x, shift)
        }
        $(#[$attr])?
        unsafe fn dot_keys(q: &[f32], k: &[f32], ks: usize, scale: f32, s: &mut [f32]) {
            simd::dot_keys::<$v, f32>(q, k, ks, scale, s)
        }
        $(#[$attr])?
        unsafe fn dot_keys_f16(q: &[f16], k: &[f16], ks: usize, scale: f32, s: &mut [f32]) {
            simd::dot_keys::<$v, f16>(q, k, ks, scale, s)
        }
        $(#[$attr])?
        unsafe fn dot_keys_bf16(q: &[bf16], k: &[bf16], ks: usize, scale: f32, s: &mut [f32]) {
            simd::dot_keys::<$v, bf16>(q, k, ks, scale, s)
        }
        $(#[$attr])?
        unsafe fn pv_row(p: &[f32], v: &[f32], vs: usize, acc: &mut [f32]) {
            simd::pv_row::<$v, f32>(p, v, vs, acc)
        }
        $(#[$attr])?
        unsafe fn pv_row_f16(p: &[f32], v: &[f16], vs: usize, acc: &mut [f32]) {
            simd::pv_row::<$v, f16>(p, v, vs, acc)
        }
        $(#[$attr])?
        unsafe fn pv_row_bf16(p: &[f32], v: &[bf16], vs: usize, acc: &mut [f32]) {
            simd::pv_row::<$v, bf16>(p, v, vs, acc)
        }
        $(#[$attr])?
        unsafe fn qk_block(
            qt: &[f32],
            d: usize,
            k: &[f32],
            ks: usize,
            scale: f32,
            s: &mut [f32],
        ) -> bool {
            simd::qk_block::<$v, $rv, $j>(qt, d, k, ks, scale, s)
        }
        $(#[$attr])?
        unsafe fn softmax_block(
            s: &mut [f32],
            m: &mut [f32; BLOCK_ROWS],
            l: &mut [f32; BLOCK_ROWS],
            alpha: &mut [f32; BLOCK_ROWS],
        ) {
            simd::softmax_block::<$v>(s, m, l, alpha)
        }
        $(#[$attr])?
        unsafe fn pv_block(
            p: &[f32],
            v: &[f32],
            vs: usize,
            dvp: usize,
            alpha: &[f32; BLOCK_ROWS],
            acc: &mut [f32],
        ) {
            simd::pv_block::<$v, $r, $c>(p, v, vs, dvp, alpha, acc)
        }
        $(#[$attr])?
        unsafe fn fma_peak(iterations: usize) -> f32 {
            simd::fma_peak::<$v, $chains>(iterations)
        }

        /// The entry points above. Only [`super::Backend`] calls them, after checking the
        /// CPU features and the slice lengths.
        pub(in crate::arch) static TABLE: Table = Table {
            name: $name,
            lanes: <$v as simd::Vector>::LANES,
            peak_flops_per_iteration: $chains * 2 * <$v as simd::Vector>::LANES,
            dot,
            dot_f16,
            dot_bf16,
            sq_l2_distance,
            l1_distance,
            axpy,
            axpy_f16,
            axpy_bf16,
            widen_f16,
            widen_bf16,
            narrow_f16,
            scale,
            max,
            exp_sum,
            dot_keys,
            dot_keys_f16,
            dot_keys_bf16,
            pv_row,
            pv_row_f16,
            pv_row_bf16,
            qk_block,
            softmax_block,
            pv_block,
            fma_peak,
        };
    };
    ($v:ty, portable, $name:literal, qk = ($rv:literal, $j:literal), pv = ($r:literal, $c:literal), peak_chains = $chains:literal) => {
        $crate::arch::simd::simd_backend!(@attrs [] $v, $name, qk = ($rv, $j), pv = ($r, $c), peak_chains = $chains);
    };
    ($v:ty, $features:literal, $name:literal, qk = ($rv:literal, $j:literal), pv = ($r:literal, $c:literal), peak_chains = $chains:literal) => {
        $crate::arch::simd::simd_backend!(@attrs [target_feature(enable = $features)] $v, $name, qk = ($rv, $j), pv = ($r, $c), peak_chains = $chains);
    };
}
pub(super) use simd_backend;
