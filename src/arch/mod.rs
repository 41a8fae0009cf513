//! Inner primitives that isolate the hardware.
//!
//! Kernels are written once against these functions. [`scalar`] is the reference every other
//! backend is tested against (`tests/arch_backends.rs`); the SIMD backends implement the same
//! functions with one generic body per primitive (`simd.rs`) instantiated per instruction set:
//!
//! | backend | where | selected |
//! |---|---|---|
//! | `scalar` | everywhere | when nothing better is available |
//! | `avx2` | x86_64 with AVX2, FMA and F16C | at run time with `std`, else by `-C target-feature` |
//! | `avx512` | x86_64 with AVX-512F (and FMA, F16C), built with rustc ≥ 1.89 | likewise |
//! | `neon` | aarch64 | likewise (NEON is in every aarch64 Linux target) |
//! | `portable` | everywhere, with the `nightly` feature (`core::simd`, 8 lanes) | over `scalar` only: any ISA backend above wins |
//!
//! With the `std` feature the best backend the CPU supports is chosen once, at the first
//! call, with `is_x86_feature_detected!` (the environment variable `MICROATTN_BACKEND` may
//! name a lesser one, and `select` switches at run time); without `std` the choice is made
//! at compile time from the enabled target features. The free functions ([`dot`], [`axpy`], ...) use the selected
//! backend; [`backends`] lists every backend the machine can run, for tests and benchmarks.
//!
//! The blocked SDPA primitives ([`Backend::qk_block`], [`Backend::softmax_block`],
//! [`Backend::pv_block`]) work on blocks of [`BLOCK_ROWS`] query rows stored as the vector
//! lanes, so each row's softmax runs down a column with no horizontal reduction.

pub mod scalar;
// The generic vector kernels behind the x86, NEON and portable backends.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", feature = "nightly"))]
mod simd;
// `core::simd` backend (nightly only), on every target.
#[cfg(feature = "nightly")]
mod portable;
// Int8 primitives, backend chosen at compile time (Cortex-M DSP / Helium): see `int8.rs`.
#[cfg(all(target_arch = "arm", arm_dsp, not(arm_mve)))]
mod cortex_m_dsp;
// f32 dot products and weighted rows with VLDM/VMLA on hard-float Cortex-M (compile time;
// not with Helium, where the auto-vectorized scalar loops are faster), f16 with VCVTB/VCVTT.
#[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
mod cortex_m_fpu;
mod int8;
// Keys and values packed into 16-bit pairs once per call (the Cortex-M DSP cores' SMLAD).
pub(crate) mod int8_packed;
#[cfg(all(target_arch = "arm", arm_mve))]
mod mve;
#[cfg(all(target_arch = "arm", arm_mve))]
pub(crate) mod mve_softmax;
pub use int8::{dot_i8, dot_i8_keys, dot_weights_q15, pv_i8, Exp2Q15};
pub(crate) use int8::{max_i32, normalize_row_q};
#[cfg(target_arch = "x86_64")]
mod x86;
// Int8 primitives on x86_64 (AVX-512 VNNI, AVX2), run-time dispatch: see `x86_int8.rs`.
#[cfg(target_arch = "x86_64")]
mod x86_int8;
#[cfg(target_arch = "x86_64")]
pub use x86_int8::int8_path;

#[cfg(target_arch = "aarch64")]
mod aarch64;

use crate::error::Error;
use half::{bf16, f16};

/// Query rows per block of the blocked SDPA primitives: the lanes of [`Backend::qk_block`],
/// [`Backend::softmax_block`] and [`Backend::pv_block`].
pub const BLOCK_ROWS: usize = 32;

/// Column padding of the blocked P·V accumulators: every backend's vector width divides it.
pub const BLOCK_COLUMN_ALIGN: usize = 16;

/// The primitives of one backend as `unsafe fn` pointers. Their preconditions (the CPU has the
/// backend's features; the slice lengths that the [`Backend`] methods check) are upheld by
/// [`Backend`], the only caller. (The signatures are spelled out here, where each is used once.)
#[allow(clippy::type_complexity)]
pub(crate) struct Table {
    name: &'static str,
    lanes: usize,
    peak_flops_per_iteration: usize,
    dot: unsafe fn(&[f32], &[f32]) -> f32,
    dot_f16: unsafe fn(&[f16], &[f16]) -> f32,
    dot_bf16: unsafe fn(&[bf16], &[bf16]) -> f32,
    sq_l2_distance: unsafe fn(&[f32], &[f32]) -> f32,
    l1_distance: unsafe fn(&[f32], &[f32]) -> f32,
    axpy: unsafe fn(f32, &[f32], &mut [f32]),
    axpy_f16: unsafe fn(f32, &[f16], &mut [f32]),
    axpy_bf16: unsafe fn(f32, &[bf16], &mut [f32]),
    widen_f16: unsafe fn(&[f16], &mut [f32]),
    widen_bf16: unsafe fn(&[bf16], &mut [f32]),
    narrow_f16: unsafe fn(&[f32], &mut [f16]),
    scale: unsafe fn(&mut [f32], f32),
    max: unsafe fn(&[f32]) -> f32,
    exp_sum: unsafe fn(&mut [f32], f32) -> f32,
    dot_keys: unsafe fn(&[f32], &[f32], usize, f32, &mut [f32]),
    dot_keys_f16: unsafe fn(&[f16], &[f16], usize, f32, &mut [f32]),
    dot_keys_bf16: unsafe fn(&[bf16], &[bf16], usize, f32, &mut [f32]),
    pv_row: unsafe fn(&[f32], &[f32], usize, &mut [f32]),
    pv_row_f16: unsafe fn(&[f32], &[f16], usize, &mut [f32]),
    pv_row_bf16: unsafe fn(&[f32], &[bf16], usize, &mut [f32]),
    qk_block: unsafe fn(&[f32], usize, &[f32], usize, f32, &mut [f32]) -> bool,
    softmax_block: unsafe fn(
        &mut [f32],
        &mut [f32; BLOCK_ROWS],
        &mut [f32; BLOCK_ROWS],
        &mut [f32; BLOCK_ROWS],
    ),
    pv_block: unsafe fn(&[f32], &[f32], usize, usize, &[f32; BLOCK_ROWS], &mut [f32]),
    fma_peak: unsafe fn(usize) -> f32,
}

/// The portable reference: plain loops, `libm` exp.
static SCALAR: Table = Table {
    name: "scalar",
    lanes: 1,
    peak_flops_per_iteration: scalar::PEAK_CHAINS * 2,
    dot: scalar::dot,
    dot_f16: scalar::dot_f16,
    dot_bf16: scalar::dot_bf16,
    sq_l2_distance: scalar::sq_l2_distance,
    l1_distance: scalar::l1_distance,
    axpy: scalar::axpy,
    axpy_f16: scalar::axpy_f16,
    axpy_bf16: scalar::axpy_bf16,
    widen_f16: scalar::widen_f16,
    widen_bf16: scalar::widen_bf16,
    narrow_f16: scalar::narrow_f16,
    scale: scalar::scale,
    max: scalar::max,
    exp_sum: scalar::exp_sum,
    dot_keys: scalar::dot_keys,
    dot_keys_f16: scalar::dot_keys_f16,
    dot_keys_bf16: scalar::dot_keys_bf16,
    pv_row: scalar::pv_row,
    pv_row_f16: scalar::pv_row_f16,
    pv_row_bf16: scalar::pv_row_bf16,
    qk_block: scalar::qk_block,
    softmax_block: scalar::softmax_block,
    pv_block: scalar::pv_block,
    fma_peak: scalar::fma_peak,
};

/// Backends in order of preference (best last).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Id {
    Scalar = 1,
    #[cfg(feature = "nightly")]
    Portable = 6,
    #[cfg(target_arch = "x86_64")]
    Avx2 = 2,
    #[cfg(all(target_arch = "x86_64", microattn_avx512))]
    Avx512 = 3,
    #[cfg(target_arch = "aarch64")]
    Neon = 4,
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    CortexMFpu = 5,
}

const ALL: &[Id] = &[
    Id::Scalar,
    #[cfg(feature = "nightly")]
    Id::Portable,
    #[cfg(target_arch = "x86_64")]
    Id::Avx2,
    #[cfg(all(target_arch = "x86_64", microattn_avx512))]
    Id::Avx512,
    #[cfg(target_arch = "aarch64")]
    Id::Neon,
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    Id::CortexMFpu,
];

impl Id {
    fn table(self) -> &'static Table {
        match self {
            Id::Scalar => &SCALAR,
            #[cfg(feature = "nightly")]
            Id::Portable => &portable::entry_points::TABLE,
            #[cfg(target_arch = "x86_64")]
            Id::Avx2 => &x86::avx2::TABLE,
            #[cfg(all(target_arch = "x86_64", microattn_avx512))]
            Id::Avx512 => &x86::avx512::TABLE,
            #[cfg(target_arch = "aarch64")]
            Id::Neon => &aarch64::neon::TABLE,
            #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
            Id::CortexMFpu => &cortex_m_fpu::TABLE,
        }
    }

    /// Whether this machine runs the backend: detected at run time with `std`, from the
    /// compile-time target features without.
    fn available(self) -> bool {
        match self {
            // No CPU feature needed.
            Id::Scalar => true,
            #[cfg(feature = "nightly")]
            Id::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Id::Avx2 => x86::has_avx2(),
            #[cfg(all(target_arch = "x86_64", microattn_avx512))]
            Id::Avx512 => x86::has_avx512(),
            #[cfg(target_arch = "aarch64")]
            Id::Neon => aarch64::has_neon(),
            // The hard-float ABI implies the FPU.
            #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
            Id::CortexMFpu => true,
        }
    }
}

/// One set of primitive implementations that this machine can run.
///
/// Only [`backend`] and [`backends`] make values of this type, after checking that the CPU
/// supports it, so its methods are safe to call.
#[derive(Clone, Copy)]
pub struct Backend {
    table: &'static Table,
}

impl core::fmt::Debug for Backend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.table.name)
    }
}

/// `rows` rows of `width` elements, `stride` apart, fit in `len` elements.
fn rows_fit(len: usize, rows: usize, stride: usize, width: usize) -> Result<(), Error> {
    if rows == 0 {
        return Ok(());
    }
    let needed = (rows - 1)
        .checked_mul(stride)
        .and_then(|x| x.checked_add(width))
        .ok_or(Error::ShapeOverflow)?;
    if len >= needed {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            expected: needed,
            found: len,
        })
    }
}

/// `len` is a multiple of `unit` (non-zero).
fn multiple_of(len: usize, unit: usize) -> Result<(), Error> {
    if len % unit == 0 {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            expected: len - len % unit + unit,
            found: len,
        })
    }
}

// SAFETY (every `unsafe` block below): `self.table` belongs to a backend whose CPU features
// were checked when this `Backend` was made (`Id::available`), and each call's slice
// preconditions (stated on the `simd.rs` kernel as "Caller:") are checked just before it.
impl Backend {
    /// The backend's name: `scalar`, `avx2`, `avx512`, `neon` or `portable`.
    pub fn name(self) -> &'static str {
        self.table.name
    }

    /// f32 lanes per vector (1 for `scalar`).
    pub fn lanes(self) -> usize {
        self.table.lanes
    }

    /// Dot product over the common length.
    #[inline]
    pub fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: see the impl; any lengths are valid.
        unsafe { (self.table.dot)(a, b) }
    }

    /// Dot product of f16 vectors in f32, over the common length.
    #[inline]
    pub fn dot_f16(self, a: &[f16], b: &[f16]) -> f32 {
        // SAFETY: see the impl; any lengths are valid.
        unsafe { (self.table.dot_f16)(a, b) }
    }

    /// Dot product of bf16 vectors in f32, over the common length.
    #[inline]
    pub fn dot_bf16(self, a: &[bf16], b: &[bf16]) -> f32 {
        // SAFETY: see the impl; any lengths are valid.
        unsafe { (self.table.dot_bf16)(a, b) }
    }

    /// Squared Euclidean distance over the common length.
    #[inline]
    pub fn sq_l2_distance(self, a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: see the impl; any lengths are valid.
        unsafe { (self.table.sq_l2_distance)(a, b) }
    }

    /// Manhattan distance over the common length.
    #[inline]
    pub fn l1_distance(self, a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: see the impl; any lengths are valid.
        unsafe { (self.table.l1_distance)(a, b) }
    }

    /// `y += alpha * x` over the common length.
    #[inline]
    pub fn axpy(self, alpha: f32, x: &[f32], y: &mut [f32]) {
        // SAFETY: see the impl; any lengths are valid.
        unsafe { (self.table.axpy)(alpha, x, y) }
    }

    /// `y += alpha * x` with `x` stored as f16, over the common length.
    #[inline]
    pub fn axpy_f16(self, alpha: f32, x: &[f16], y: &mut [f32]) {
        // SAFETY: see the impl; any lengths are valid.
        unsafe { (self.table.axpy_f16)(alpha, x, y) }
    }

    /// `y += alpha * x` with `x` stored as bf16, over the common length.
    #[inline]
    pub fn axpy_bf16(self, alpha: f32, x: &[bf16], y: &mut [f32]) {
        // SAFETY: see the impl; any lengths are valid.
        unsafe { (self.table.axpy_bf16)(alpha, x, y) }
    }

    /// `dst = src` widened from f16 (exact), over the common length.
    #[inline]
    pub fn widen_f16(self, src: &[f16], dst: &mut [f32]) {
        // SAFETY: see the impl; any lengths are valid.
        unsafe { (self.table.widen_f16)(src, dst) }
    }

    /// `dst = src` widened from bf16 (exact), over the common length.
    #[inline]
    pub fn widen_bf16(self, src: &[bf16], dst: &mut [f32]) {
        // SAFETY: see the impl; any lengths are valid.
        unsafe { (self.table.widen_bf16)(src, dst) }
    }

    /// `dst = src` rounded to f16 (nearest even, as `f16::from_f32`), over the common length.
    #[inline]
    pub fn narrow_f16(self, src: &[f32], dst: &mut [f16]) {
        // SAFETY: see the impl; any lengths are valid.
        unsafe { (self.table.narrow_f16)(src, dst) }
    }

    /// `y *= alpha`.
    #[inline]
    pub fn scale(self, y: &mut [f32], alpha: f32) {
        // SAFETY: see the impl; any length is valid.
        unsafe { (self.table.scale)(y, alpha) }
    }

    /// The largest element, ignoring NaN; `-inf` for an empty slice.
    #[inline]
    pub fn max(self, x: &[f32]) -> f32 {
        // SAFETY: see the impl; any length is valid.
        unsafe { (self.table.max)(x) }
    }

    /// `x_i = e^(x_i - shift)` for every element; returns their sum.
    ///
    /// The SIMD backends use a polynomial `exp` within 2 ulp of the exact value (measured in
    /// `tests/arch_backends.rs`) that returns 0 for arguments below `ln(2^-126) ≈ -87.34`
    /// (where the exact value is subnormal) and for `-inf` and NaN; `scalar` uses `libm`.
    #[inline]
    pub fn exp_sum(self, x: &mut [f32], shift: f32) -> f32 {
        // SAFETY: see the impl; any length is valid.
        unsafe { (self.table.exp_sum)(x, shift) }
    }

    /// `out[j] = scale · q·k_j` where key `j` is `keys[j·key_stride..][..q.len()]`, for every
    /// `j < out.len()`. Errors when `keys` is too short.
    #[inline]
    pub fn dot_keys(
        self,
        q: &[f32],
        keys: &[f32],
        key_stride: usize,
        scale: f32,
        out: &mut [f32],
    ) -> Result<(), Error> {
        rows_fit(keys.len(), out.len(), key_stride, q.len())?;
        // SAFETY: see the impl; `keys` holds `out.len()` keys.
        unsafe { (self.table.dot_keys)(q, keys, key_stride, scale, out) };
        Ok(())
    }

    /// `acc += Σ_j p[j] · v_j` where row `j` is `v[j·v_stride..][..acc.len()]`, for every
    /// `j < p.len()`. Errors when `v` is too short.
    #[inline]
    pub fn pv_row(
        self,
        p: &[f32],
        v: &[f32],
        v_stride: usize,
        acc: &mut [f32],
    ) -> Result<(), Error> {
        rows_fit(v.len(), p.len(), v_stride, acc.len())?;
        // SAFETY: see the impl; `v` holds `p.len()` rows.
        unsafe { (self.table.pv_row)(p, v, v_stride, acc) };
        Ok(())
    }

    /// [`Backend::dot_keys`] of f16 vectors.
    #[inline]
    pub fn dot_keys_f16(
        self,
        q: &[f16],
        keys: &[f16],
        key_stride: usize,
        scale: f32,
        out: &mut [f32],
    ) -> Result<(), Error> {
        rows_fit(keys.len(), out.len(), key_stride, q.len())?;
        // SAFETY: see the impl; `keys` holds `out.len()` keys.
        unsafe { (self.table.dot_keys_f16)(q, keys, key_stride, scale, out) };
        Ok(())
    }

    /// [`Backend::dot_keys`] of bf16 vectors.
    #[inline]
    pub fn dot_keys_bf16(
        self,
        q: &[bf16],
        keys: &[bf16],
        key_stride: usize,
        scale: f32,
        out: &mut [f32],
    ) -> Result<(), Error> {
        rows_fit(keys.len(), out.len(), key_stride, q.len())?;
        // SAFETY: see the impl; `keys` holds `out.len()` keys.
        unsafe { (self.table.dot_keys_bf16)(q, keys, key_stride, scale, out) };
        Ok(())
    }

    /// [`Backend::pv_row`] with the value rows stored as f16.
    #[inline]
    pub fn pv_row_f16(
        self,
        p: &[f32],
        v: &[f16],
        v_stride: usize,
        acc: &mut [f32],
    ) -> Result<(), Error> {
        rows_fit(v.len(), p.len(), v_stride, acc.len())?;
        // SAFETY: see the impl; `v` holds `p.len()` rows.
        unsafe { (self.table.pv_row_f16)(p, v, v_stride, acc) };
        Ok(())
    }

    /// [`Backend::pv_row`] with the value rows stored as bf16.
    #[inline]
    pub fn pv_row_bf16(
        self,
        p: &[f32],
        v: &[bf16],
        v_stride: usize,
        acc: &mut [f32],
    ) -> Result<(), Error> {
        rows_fit(v.len(), p.len(), v_stride, acc.len())?;
        // SAFETY: see the impl; `v` holds `p.len()` rows.
        unsafe { (self.table.pv_row_bf16)(p, v, v_stride, acc) };
        Ok(())
    }

    /// Q·Kᵀ for a block of [`BLOCK_ROWS`] query rows: with `n = s.len() / BLOCK_ROWS` keys,
    /// `s[j·BLOCK_ROWS + r] = scale · Σ_c qt[c·BLOCK_ROWS + r] · keys[j·key_stride + c]` for
    /// `c < d`. `qt` is the block's Qᵀ (`[d][BLOCK_ROWS]`). Returns whether every logit is
    /// finite. Errors when `s.len()` is not a multiple of [`BLOCK_ROWS`] or a slice is short.
    #[inline]
    pub fn qk_block(
        self,
        qt: &[f32],
        d: usize,
        keys: &[f32],
        key_stride: usize,
        scale: f32,
        s: &mut [f32],
    ) -> Result<bool, Error> {
        multiple_of(s.len(), BLOCK_ROWS)?;
        rows_fit(qt.len(), d, BLOCK_ROWS, BLOCK_ROWS)?;
        rows_fit(keys.len(), s.len() / BLOCK_ROWS, key_stride, d)?;
        // SAFETY: see the impl; `qt` holds `d` rows of BLOCK_ROWS, `keys` the `n` keys, and
        // every backend's row blocking divides BLOCK_ROWS.
        Ok(unsafe { (self.table.qk_block)(qt, d, keys, key_stride, scale, s) })
    }

    /// One online-softmax step for a block of [`BLOCK_ROWS`] rows over the keys of `s`
    /// (`[keys][BLOCK_ROWS]`, logits in, unnormalized weights out): per row `r`,
    /// `m_new = max(m[r], max_j s)`, `alpha[r] = e^(m[r] - m_new)`, `s = e^(s - m_new)`,
    /// `l[r] = l[r]·alpha[r] + Σ_j s`, `m[r] = m_new`. A row with only `-inf` so far keeps
    /// `m = -inf` and gets zero weights. Errors when `s.len()` is not a multiple of
    /// [`BLOCK_ROWS`].
    #[inline]
    pub fn softmax_block(
        self,
        s: &mut [f32],
        m: &mut [f32; BLOCK_ROWS],
        l: &mut [f32; BLOCK_ROWS],
        alpha: &mut [f32; BLOCK_ROWS],
    ) -> Result<(), Error> {
        multiple_of(s.len(), BLOCK_ROWS)?;
        // SAFETY: see the impl; every backend's lane count divides BLOCK_ROWS.
        unsafe { (self.table.softmax_block)(s, m, l, alpha) };
        Ok(())
    }

    /// P·V for a block of [`BLOCK_ROWS`] rows with `n = p.len() / BLOCK_ROWS` keys:
    /// `acc[r·dvp + c] = acc[r·dvp + c]·alpha[r] + Σ_j p[j·BLOCK_ROWS + r] · v[j·v_stride + c]`
    /// for `c < dvp`. `dvp` must be a multiple of [`BLOCK_COLUMN_ALIGN`]; the value rows must
    /// hold `dvp` readable elements (pad them). Errors on a bad `dvp` or a short slice.
    #[inline]
    pub fn pv_block(
        self,
        p: &[f32],
        v: &[f32],
        v_stride: usize,
        dvp: usize,
        alpha: &[f32; BLOCK_ROWS],
        acc: &mut [f32],
    ) -> Result<(), Error> {
        multiple_of(p.len(), BLOCK_ROWS)?;
        multiple_of(dvp, BLOCK_COLUMN_ALIGN)?;
        rows_fit(acc.len(), BLOCK_ROWS, dvp, dvp)?;
        rows_fit(v.len(), p.len() / BLOCK_ROWS, v_stride, dvp)?;
        // SAFETY: see the impl; every backend's lane count divides BLOCK_COLUMN_ALIGN and its
        // row blocking divides BLOCK_ROWS.
        unsafe { (self.table.pv_block)(p, v, v_stride, dvp, alpha, acc) };
        Ok(())
    }

    /// Runs `iterations` rounds of independent fused multiply-adds, for measuring the core's
    /// peak: returns `(flops done, a sum to pass to black_box)`.
    pub fn fma_peak(self, iterations: usize) -> (u64, f32) {
        // SAFETY: see the impl; no slices.
        let sink = unsafe { (self.table.fma_peak)(iterations) };
        let flops = (iterations as u64).saturating_mul(self.table.peak_flops_per_iteration as u64);
        (flops, sink)
    }
}

/// Every backend this machine runs, from `scalar` to the best.
pub fn backends() -> impl Iterator<Item = Backend> {
    ALL.iter()
        .filter(|id| id.available())
        .map(|id| Backend { table: id.table() })
}

/// The backend the free functions and the kernels use (see the module docs).
#[inline]
pub fn backend() -> Backend {
    Backend {
        table: selected().table(),
    }
}

/// The best backend this machine runs, or the one `MICROATTN_BACKEND` names if available.
#[cfg(feature = "std")]
fn choose() -> Id {
    let best = ALL
        .iter()
        .copied()
        .rev()
        .find(|id| id.available())
        .unwrap_or(Id::Scalar);
    match std::env::var("MICROATTN_BACKEND") {
        Ok(name) => ALL
            .iter()
            .copied()
            .find(|id| id.table().name == name && id.available())
            .unwrap_or(best),
        Err(_) => best,
    }
}

/// With `std`: the chosen backend's id, 0 until the first call.
#[cfg(feature = "std")]
static SELECTED: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);

/// With `std`: detected once, cached in [`SELECTED`].
#[cfg(feature = "std")]
#[inline]
fn selected() -> Id {
    use core::sync::atomic::Ordering;
    let id = SELECTED.load(Ordering::Relaxed);
    if let Some(&found) = ALL.iter().find(|x| **x as u8 == id) {
        return found;
    }
    let chosen = choose();
    SELECTED.store(chosen as u8, Ordering::Relaxed);
    chosen
}

/// Makes the backend called `name` the one every kernel uses from now on, in every thread,
/// if this machine runs it; returns it, or `None` (changing nothing) for an unknown or
/// unavailable name. For tests that need the scalar rounding and for benchmarks comparing
/// backends; kernels running concurrently may use either backend for their remaining calls.
#[cfg(feature = "std")]
pub fn select(name: &str) -> Option<Backend> {
    let id = ALL
        .iter()
        .copied()
        .find(|id| id.table().name == name && id.available())?;
    SELECTED.store(id as u8, core::sync::atomic::Ordering::Relaxed);
    Some(Backend { table: id.table() })
}

/// Without `std`: the best backend the compile-time target features allow.
#[cfg(not(feature = "std"))]
#[inline]
fn selected() -> Id {
    ALL.iter()
        .copied()
        .rev()
        .find(|id| id.available())
        .unwrap_or(Id::Scalar)
}

/// Dot product over the common length of `a` and `b`.
///
/// ```
/// assert_eq!(microattn::arch::dot(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]), 32.0);
/// ```
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    backend().dot(a, b)
}

/// Squared Euclidean distance over the common length.
#[inline]
pub fn sq_l2_distance(a: &[f32], b: &[f32]) -> f32 {
    backend().sq_l2_distance(a, b)
}

/// Manhattan distance over the common length.
#[inline]
pub fn l1_distance(a: &[f32], b: &[f32]) -> f32 {
    backend().l1_distance(a, b)
}

/// `y += alpha * x` over the common length.
#[inline]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    backend().axpy(alpha, x, y)
}

/// `y *= alpha`.
#[inline]
pub fn scale(y: &mut [f32], alpha: f32) {
    backend().scale(y, alpha)
}
