//! Shared pieces of the fuzz targets: a reader that turns fuzzer bytes into shapes, masks,
//! biases and values (NaN, infinities, subnormals and extremes included), the mask and
//! position-bias definitions written out independently of the crate, f64 references, and the
//! checks every target applies.
//!
//! Each target asks four things of one call:
//! 1. no panic (libFuzzer reports any panic or sanitizer fault as a crash);
//! 2. `Err` exactly when a documented precondition fails, and then one of the errors that
//!    precondition documents (the predicates here are written from the docs, not the code);
//! 3. finite output whenever every input is finite and the parameters are valid;
//! 4. for finite inputs, output within a derived bound of an f64 reference (the bound grows
//!    with the logit magnitudes, so it is tight for ordinary values and loose only where f32
//!    itself cannot be accurate).

use microattn::attention::{t5_bucket, Bias, Score};
use microattn::mask::MaskTerm;
use microattn::Error;

// ---------------------------------------------------------------------------------------
// Reading fuzzer bytes

/// Turns the fuzzer's bytes into values; reads zeros once the bytes run out.
pub struct Input<'a> {
    data: &'a [u8],
    /// Whether values may be wild (NaN, inf, extremes, raw bits) or only small multiples of
    /// 1/16, which keep the f64 reference comparison tight.
    wild: bool,
}

/// Values that break naive kernels.
const SPECIAL: [f32; 20] = [
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::MAX,
    -f32::MAX,
    f32::MIN_POSITIVE,
    -f32::MIN_POSITIVE,
    1e-40,  // subnormal
    -1e-45, // smallest subnormal
    1e30,
    -1e30,
    1e20,
    -1e19,
    65504.0, // largest f16
    0.0,
    -0.0,
    1e-20,
    3e38,
    -3.4e38,
    1e-8,
];

impl<'a> Input<'a> {
    /// The first byte chooses between tame and wild values.
    pub fn new(data: &'a [u8]) -> Self {
        let mut input = Input { data, wild: false };
        input.wild = input.byte().is_multiple_of(4);
        input
    }

    /// Whether wild values may appear.
    pub fn wild(&self) -> bool {
        self.wild
    }

    /// Next byte (0 when exhausted).
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// A fair-ish coin.
    pub fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// Uniform-ish in `0..n` (0 for `n == 0`).
    pub fn below(&mut self, n: usize) -> usize {
        let x = u16::from_le_bytes([self.byte(), self.byte()]) as usize;
        if n == 0 {
            0
        } else {
            x % n
        }
    }

    /// A dimension: usually `1..=max`, sometimes 0, rarely one whose products overflow.
    pub fn dim(&mut self, max: usize) -> usize {
        match self.byte() {
            0..=5 => 0,
            6 if self.wild => usize::MAX >> (self.byte() % 4),
            b => 1 + b as usize % max,
        }
    }

    /// A small parameter (window, offset, bucket count): usually `0..=max`, rarely huge.
    pub fn small(&mut self, max: usize) -> usize {
        match self.byte() {
            0 if self.wild => usize::MAX - self.below(3),
            b => b as usize % (max + 1),
        }
    }

    /// One tensor element.
    pub fn value(&mut self) -> f32 {
        let b = self.byte();
        if !self.wild || b < 176 {
            // Multiples of 1/16 in [-8, 8): exact in every storage type.
            return (self.byte() as i8) as f32 / 16.0;
        }
        match b {
            176..=223 => SPECIAL[self.byte() as usize % SPECIAL.len()],
            _ => f32::from_bits(u32::from_le_bytes([
                self.byte(),
                self.byte(),
                self.byte(),
                self.byte(),
            ])),
        }
    }

    /// `n` elements.
    pub fn values(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.value()).collect()
    }

    /// A slice length: `expected` most of the time, otherwise off by one or a small number
    /// (never allocating more than a few hundred elements whatever `expected` is).
    pub fn len(&mut self, expected: Option<usize>) -> usize {
        let off = self.byte();
        match expected {
            Some(n) if n <= 4096 => match off {
                0..=3 => n + 1,
                4..=7 => n.saturating_sub(1),
                _ => n,
            },
            _ => off as usize % 8,
        }
    }

    /// Values for a slice that should have `expected` elements (see [`Input::len`]).
    pub fn values_for(&mut self, expected: Option<usize>) -> Vec<f32> {
        let n = self.len(expected);
        self.values(n)
    }

    /// An optional logit scale: the default, an ordinary one, or (wild) anything.
    pub fn scale(&mut self) -> Option<f32> {
        match self.byte() % 4 {
            0 => None,
            1 | 2 => Some(self.value()),
            _ => Some((self.byte() as f32 + 1.0) / 64.0),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Masks, written out from FORMAT.md

/// One mask term with owned storage.
#[derive(Debug, Clone)]
pub enum TermSpec {
    /// Every key.
    None,
    /// `j <= p`.
    Causal,
    /// `p - left <= j <= p + right`.
    Sliding(usize, usize),
    /// `j = p + t * dilation`, `-left <= t <= right`.
    Dilated(usize, usize, usize),
    /// Window, or `j` or `p` global.
    GlobalSliding(usize, usize, Vec<usize>),
    /// BigBird blocks.
    BlockSparse(usize, usize, Vec<usize>, Vec<(usize, usize)>),
    /// `j < valid`.
    KeyPadding(usize),
}

/// An AND of terms and the position of query row 0.
#[derive(Debug, Clone)]
pub struct MaskSpec {
    /// The terms.
    pub terms: Vec<TermSpec>,
    /// Position of query row 0.
    pub offset: i64,
}

impl MaskSpec {
    /// Up to three random terms and a random offset.
    pub fn generate(input: &mut Input<'_>) -> Self {
        let n = input.byte() % 4;
        let terms = (0..n)
            .map(|_| match input.byte() % 7 {
                0 => TermSpec::None,
                1 => TermSpec::Causal,
                2 => TermSpec::Sliding(input.small(6), input.small(6)),
                3 => TermSpec::Dilated(input.small(4), input.small(4), input.small(3)),
                4 => {
                    let g = (0..input.byte() % 3).map(|_| input.small(9)).collect();
                    TermSpec::GlobalSliding(input.small(4), input.small(4), g)
                }
                5 => {
                    let g = (0..input.byte() % 2).map(|_| input.small(4)).collect();
                    let r = (0..input.byte() % 3)
                        .map(|_| (input.small(4), input.small(4)))
                        .collect();
                    TermSpec::BlockSparse(input.small(4), input.small(2), g, r)
                }
                _ => TermSpec::KeyPadding(input.small(9)),
            })
            .collect();
        let offset = match input.byte() {
            0 if input.wild() => i64::MAX - input.below(2) as i64,
            1 if input.wild() => i64::MIN + input.below(2) as i64,
            b => (b % 24) as i64 - 12,
        };
        MaskSpec { terms, offset }
    }

    /// The crate's view of the same mask (borrowing the storage).
    pub fn terms(&self) -> Vec<MaskTerm<'_>> {
        self.terms
            .iter()
            .map(|t| match t {
                TermSpec::None => MaskTerm::None,
                TermSpec::Causal => MaskTerm::Causal,
                &TermSpec::Sliding(left, right) => MaskTerm::Sliding { left, right },
                &TermSpec::Dilated(left, right, dilation) => MaskTerm::Dilated {
                    left,
                    right,
                    dilation,
                },
                TermSpec::GlobalSliding(left, right, global) => MaskTerm::GlobalSliding {
                    left: *left,
                    right: *right,
                    global,
                },
                TermSpec::BlockSparse(block, window, global, random) => MaskTerm::BlockSparse {
                    block: *block,
                    window: *window,
                    global,
                    random,
                },
                &TermSpec::KeyPadding(valid) => MaskTerm::KeyPadding { valid },
            })
            .collect()
    }

    /// Documented validity: no zero dilation, no zero block size.
    pub fn is_valid(&self) -> bool {
        self.terms.iter().all(|t| {
            !matches!(
                t,
                TermSpec::Dilated(_, _, 0) | TermSpec::BlockSparse(0, _, _, _)
            )
        })
    }

    /// Position of query row `row`, saturating as the crate documents.
    pub fn position(&self, row: usize) -> i64 {
        (row as i64).saturating_add(self.offset)
    }

    /// Whether query row `row` may see key `j`: every term's formula in exact integers.
    pub fn allows(&self, row: usize, j: usize) -> bool {
        let p = self.position(row) as i128;
        let j = j as i128;
        self.terms.iter().all(|t| match t {
            TermSpec::None => true,
            TermSpec::Causal => j <= p,
            TermSpec::KeyPadding(valid) => j < *valid as i128,
            TermSpec::Sliding(l, r) => in_window(p, j, *l, *r),
            TermSpec::Dilated(l, r, dil) => {
                let dil = *dil as i128;
                let t = (j - p) / dil.max(1);
                dil > 0 && (j - p) % dil == 0 && -(*l as i128) <= t && t <= *r as i128
            }
            TermSpec::GlobalSliding(l, r, g) => {
                in_window(p, j, *l, *r) || g.iter().any(|&x| x as i128 == j || x as i128 == p)
            }
            TermSpec::BlockSparse(block, window, g, random) => {
                if *block == 0 {
                    return false;
                }
                let b = *block as i128;
                let (qb, kb) = (p.div_euclid(b), j.div_euclid(b));
                (qb - kb).abs() <= *window as i128
                    || g.iter().any(|&x| x as i128 == qb || x as i128 == kb)
                    || random
                        .iter()
                        .any(|&(a, c)| a as i128 == qb && c as i128 == kb)
            }
        })
    }
}

fn in_window(p: i128, j: i128, left: usize, right: usize) -> bool {
    p - left as i128 <= j && j <= p + right as i128
}

// ---------------------------------------------------------------------------------------
// Position biases

/// A position bias with owned storage.
#[derive(Debug, Clone)]
pub enum BiasSpec {
    /// None.
    None,
    /// One slope per head.
    Alibi(Vec<f32>),
    /// T5 buckets.
    T5 {
        /// Keys after the query get their own buckets.
        bidirectional: bool,
        /// Buckets per head.
        num_buckets: usize,
        /// Log-bucket range.
        max_distance: usize,
        /// `heads × num_buckets`.
        table: Vec<f32>,
    },
}

impl BiasSpec {
    /// A random bias for `heads` query heads (sometimes of the wrong size).
    pub fn generate(input: &mut Input<'_>, heads: usize) -> Self {
        let heads = heads.min(8);
        match input.byte() % 3 {
            0 => BiasSpec::None,
            1 => {
                let n = input.len(Some(heads));
                BiasSpec::Alibi(input.values(n))
            }
            _ => {
                let num_buckets = input.small(10);
                let n = input.len(heads.checked_mul(num_buckets).filter(|&n| n <= 256));
                BiasSpec::T5 {
                    bidirectional: input.bool(),
                    num_buckets,
                    max_distance: input.small(20),
                    table: input.values(n),
                }
            }
        }
    }

    /// The crate's view.
    pub fn bias(&self) -> Bias<'_> {
        match self {
            BiasSpec::None => Bias::None,
            BiasSpec::Alibi(slopes) => Bias::Alibi { slopes },
            BiasSpec::T5 {
                bidirectional,
                num_buckets,
                max_distance,
                table,
            } => Bias::T5 {
                bidirectional: *bidirectional,
                num_buckets: *num_buckets,
                max_distance: *max_distance,
                table,
            },
        }
    }

    /// Documented validity for `heads` query heads: ALiBi has one finite slope per head; T5
    /// has an exact range (`num_buckets / 2`, halved again when bidirectional, at least 1),
    /// `max_distance` above it and a `heads × num_buckets` table.
    pub fn is_valid(&self, heads: usize) -> bool {
        match self {
            BiasSpec::None => true,
            BiasSpec::Alibi(s) => s.len() == heads && s.iter().all(|x| x.is_finite()),
            BiasSpec::T5 {
                bidirectional,
                num_buckets,
                max_distance,
                table,
            } => {
                let half = if *bidirectional {
                    num_buckets / 2
                } else {
                    *num_buckets
                };
                let exact = half / 2;
                exact >= 1
                    && *max_distance > exact
                    && heads.checked_mul(*num_buckets) == Some(table.len())
            }
        }
    }

    /// Every stored value finite.
    pub fn finite(&self) -> bool {
        match self {
            BiasSpec::None => true,
            BiasSpec::Alibi(s) => s.iter().all(|x| x.is_finite()),
            BiasSpec::T5 { table, .. } => table.iter().all(|x| x.is_finite()),
        }
    }

    /// Bias of head `h`, query position `p`, key `j` (valid biases only). The T5 bucket
    /// index comes from the crate's public `t5_bucket` (tested against PyTorch's function
    /// by its own doc tests and the conformance cases): an f64 re-derivation would disagree
    /// at bucket boundaries, where PyTorch itself rounds in f32.
    pub fn value(&self, h: usize, p: i64, j: usize) -> f64 {
        match self {
            BiasSpec::None => 0.0,
            BiasSpec::Alibi(s) => -(s[h] as f64) * ((j as i128 - p as i128).abs() as f64),
            BiasSpec::T5 {
                bidirectional,
                num_buckets,
                max_distance,
                table,
            } => {
                let rel = (j as i64).saturating_sub(p);
                let bucket = t5_bucket(rel, *bidirectional, *num_buckets, *max_distance);
                table[h * num_buckets + bucket] as f64
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Errors

/// The errors a call must return one of (empty: it must succeed), and errors it may return
/// even when every precondition holds (documented range checks that depend on rounding).
#[derive(Debug, Default)]
pub struct Expected(
    Vec<core::mem::Discriminant<Error>>,
    Vec<core::mem::Discriminant<Error>>,
);

impl Expected {
    /// Records that a precondition failed, documented to give `e`.
    pub fn fail(&mut self, e: Error) {
        self.0.push(core::mem::discriminant(&e));
    }

    /// Records that the call may return `e` whether or not the other preconditions hold
    /// (a documented limit too close to call exactly from outside).
    pub fn allow(&mut self, e: Error) {
        self.1.push(core::mem::discriminant(&e));
    }

    /// Records `e` when `bad`.
    pub fn check(&mut self, bad: bool, e: Error) {
        if bad {
            self.fail(e);
        }
    }

    /// Whether every precondition holds.
    pub fn ok(&self) -> bool {
        self.0.is_empty()
    }

    /// Panics (a fuzz crash) unless `result` is `Ok` exactly when every precondition holds,
    /// and an `Err` is one of the failed preconditions' errors. Returns whether it was `Ok`.
    pub fn assert<T: core::fmt::Debug>(&self, result: &Result<T, Error>, what: &str) -> bool {
        match result {
            Ok(_) => assert!(self.ok(), "{what}: Ok, but preconditions fail: {self:?}"),
            Err(e) => assert!(
                self.0.contains(&core::mem::discriminant(e))
                    || self.1.contains(&core::mem::discriminant(e)),
                "{what}: {e:?}, but the failed preconditions are {self:?}"
            ),
        }
        result.is_ok()
    }
}

/// `a * b * ...` or `None` on overflow.
pub fn product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Records the errors of a slice whose length should be `expected` (`None`: overflowed).
pub fn check_len(exp: &mut Expected, found: usize, expected: Option<usize>) {
    match expected {
        None => exp.fail(Error::ShapeOverflow),
        Some(n) if n != found => exp.fail(Error::LengthMismatch { expected: n, found }),
        Some(_) => {}
    }
}

// ---------------------------------------------------------------------------------------
// Numbers

/// Every element finite.
pub fn finite(x: &[f32]) -> bool {
    x.iter().all(|v| v.is_finite())
}

/// Largest magnitude (0 for empty).
pub fn max_abs(x: &[f32]) -> f64 {
    x.iter().fold(0.0f64, |m, &v| m.max((v as f64).abs()))
}

/// f32 unit roundoff.
pub const EPS: f64 = 1.0 / (1u64 << 24) as f64;

/// Documented f32 score of `q` and `k` in f64 (before the bias), and the magnitude of the
/// terms it sums (what its f32 rounding error is proportional to).
pub fn score_f64(score: Score, q: &[f64], k: &[f64], scale: f64) -> (f64, f64) {
    match score {
        Score::Dot => {
            let s: f64 = q.iter().zip(k).map(|(a, b)| a * b).sum();
            let m: f64 = q.iter().zip(k).map(|(a, b)| (a * b).abs()).sum();
            (scale * s, scale.abs() * m)
        }
        Score::Cosine => {
            let s: f64 = q.iter().zip(k).map(|(a, b)| a * b).sum();
            let nq = q.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-8);
            let nk = k.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-8);
            (scale * s / (nq * nk), scale.abs() * 4.0)
        }
        Score::NegSqL2 => {
            let s: f64 = q.iter().zip(k).map(|(a, b)| (a - b) * (a - b)).sum();
            (-scale * s, scale.abs() * s)
        }
        Score::NegL1 => {
            let s: f64 = q.iter().zip(k).map(|(a, b)| (a - b).abs()).sum();
            (-scale * s, scale.abs() * s)
        }
    }
}

/// One attention row in f64: the output, per output element the range of the allowed
/// values, whether any key is allowed, and a bound on the f32 kernel's deviation.
pub struct RowReference {
    /// Softmax-weighted values.
    pub out: Vec<f64>,
    /// Smallest allowed value per column.
    pub lo: Vec<f64>,
    /// Largest allowed value per column.
    pub hi: Vec<f64>,
    /// Whether the mask allows any key.
    pub any: bool,
    /// Bound on `|f32 kernel - out|` per element.
    pub tol: f64,
}

/// Softmax attention of one query row over the allowed keys `(logit, logit error bound,
/// value row)`, in f64.
pub fn attend_f64(keys: &[(f64, f64, &[f64])], dv: usize) -> RowReference {
    let mut r = RowReference {
        out: vec![0.0; dv],
        lo: vec![f64::INFINITY; dv],
        hi: vec![f64::NEG_INFINITY; dv],
        any: !keys.is_empty(),
        tol: 0.0,
    };
    if keys.is_empty() {
        return r;
    }
    let max = keys.iter().map(|k| k.0).fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = keys.iter().map(|k| (k.0 - max).exp()).sum();
    let mut vmax = 0.0f64;
    let mut delta = 0.0f64;
    for &(logit, err, v) in keys {
        let w = (logit - max).exp() / sum;
        for (c, &vc) in v.iter().enumerate().take(dv) {
            r.out[c] += w * vc;
            r.lo[c] = r.lo[c].min(vc);
            r.hi[c] = r.hi[c].max(vc);
            vmax = vmax.max(vc.abs());
        }
        delta = delta.max(err);
    }
    // Logit errors of at most `delta` change each weight by a factor within e^{±2 delta};
    // the f32 exp, sums and normalization add a few roundings per key.
    let n = keys.len() as f64;
    r.tol = if vmax == 0.0 {
        1e-37
    } else {
        ((2.0 * delta).exp_m1() + (n + 16.0) * 4.0 * EPS) * vmax + 1e-37
    };
    r
}

/// Panics unless `got` is within `tol` of `want` (and, as a convex combination, within
/// `[lo, hi]` up to rounding), element by element.
pub fn assert_row(got: &[f32], r: &RowReference, extra_tol: f64, what: &str) {
    for (c, &g) in got.iter().enumerate() {
        let g = g as f64;
        if !r.any {
            assert_eq!(g, 0.0, "{what}[{c}]: fully masked row must be zero");
            continue;
        }
        let tol = r.tol + extra_tol * (1.0 + r.out[c].abs());
        assert!(
            (g - r.out[c]).abs() <= tol,
            "{what}[{c}]: got {g}, reference {}, tolerance {tol}",
            r.out[c]
        );
        let slack = (r.hi[c].abs().max(r.lo[c].abs())) * 64.0 * EPS + extra_tol + 1e-37;
        assert!(
            g >= r.lo[c] - slack && g <= r.hi[c] + slack,
            "{what}[{c}]: {g} outside the values' range [{}, {}]",
            r.lo[c],
            r.hi[c]
        );
    }
}

// ---------------------------------------------------------------------------------------
// SDPA: preconditions and reference

/// Dimensions of an attention call: heads, kv_heads, lq, lk, d, dv.
#[derive(Debug, Clone, Copy)]
pub struct Dims {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Query rows.
    pub lq: usize,
    /// Keys.
    pub lk: usize,
    /// Query/key features.
    pub d: usize,
    /// Value features.
    pub dv: usize,
}

impl Dims {
    /// Random, small, sometimes zero or overflowing.
    pub fn generate(input: &mut Input<'_>) -> Self {
        Dims {
            heads: input.dim(4),
            kv_heads: input.dim(4),
            lq: input.dim(5),
            lk: input.dim(40), // past one 32-key tile
            d: input.dim(6),
            dv: input.dim(4),
        }
    }

    /// The crate's shape.
    pub fn shape(&self) -> microattn::attention::AttentionShape {
        microattn::attention::AttentionShape::multi_head(
            self.heads,
            self.kv_heads,
            self.lq,
            self.lk,
            self.d,
            self.dv,
        )
    }

    /// Element counts of q, k, v, out (`None` where they overflow).
    pub fn lengths(&self) -> [Option<usize>; 4] {
        [
            product(&[self.heads, self.lq, self.d]),
            product(&[self.kv_heads, self.lk, self.d]),
            product(&[self.kv_heads, self.lk, self.dv]),
            product(&[self.heads, self.lq, self.dv]),
        ]
    }

    /// Shape preconditions of every attention kernel (FORMAT.md, `AttentionShape` docs):
    /// positive dimensions, `kv_heads` dividing `heads`, slice lengths matching.
    pub fn expect(&self, exp: &mut Expected, found: [usize; 4]) {
        let all = [self.heads, self.kv_heads, self.lq, self.lk, self.d, self.dv];
        exp.check(all.contains(&0), Error::ZeroDimension);
        exp.check(
            self.kv_heads != 0 && !self.heads.is_multiple_of(self.kv_heads),
            Error::HeadsMismatch,
        );
        for (f, e) in found.into_iter().zip(self.lengths()) {
            check_len(exp, f, e);
        }
    }
}

/// The sdpa parameters that need storage.
pub struct SdpaSpec {
    /// Logit scale (`None`: `1/sqrt(d)`).
    pub scale: Option<f32>,
    /// Score function.
    pub score: Score,
    /// Mask.
    pub mask: MaskSpec,
    /// Bias.
    pub bias: BiasSpec,
}

impl SdpaSpec {
    /// Random parameters for `heads` query heads.
    pub fn generate(input: &mut Input<'_>, heads: usize) -> Self {
        let score = [Score::Dot, Score::Cosine, Score::NegSqL2, Score::NegL1][input.below(4)];
        SdpaSpec {
            scale: input.scale(),
            score,
            mask: MaskSpec::generate(input),
            bias: BiasSpec::generate(input, heads),
        }
    }

    /// The scale the kernel documents using for feature size `d`.
    pub fn resolved_scale(&self, d: usize) -> f32 {
        self.scale.unwrap_or_else(|| 1.0 / (d as f32).sqrt())
    }

    /// Parameter preconditions: a finite scale, a valid mask and bias.
    pub fn expect(&self, exp: &mut Expected, heads: usize, d: usize) {
        exp.check(!self.resolved_scale(d).is_finite(), Error::InvalidScale);
        exp.check(!self.mask.is_valid(), Error::InvalidMask);
        if !self.bias.is_valid(heads) {
            exp.fail(Error::InvalidBias);
            exp.fail(Error::ShapeOverflow); // a T5 table size past usize
        }
    }
}

/// f64 reference of every output row `(head, row)` of a valid sdpa call on `q`, `k`, `v`
/// given in f64.
pub fn sdpa_reference(
    dims: Dims,
    spec: &SdpaSpec,
    q: &[f64],
    k: &[f64],
    v: &[f64],
) -> Vec<RowReference> {
    let Dims {
        heads,
        kv_heads,
        lq,
        lk,
        d,
        dv,
    } = dims;
    let scale = spec.resolved_scale(d) as f64;
    let group = heads / kv_heads;
    let mut rows = Vec::with_capacity(heads * lq);
    for h in 0..heads {
        let kvh = h / group;
        for i in 0..lq {
            let q_row = &q[(h * lq + i) * d..][..d];
            let p = spec.mask.position(i);
            let keys: Vec<(f64, f64, &[f64])> = (0..lk)
                .filter(|&j| spec.mask.allows(i, j))
                .map(|j| {
                    let k_row = &k[(kvh * lk + j) * d..][..d];
                    let (s, magnitude) = score_f64(spec.score, q_row, k_row, scale);
                    let b = spec.bias.value(h, p, j);
                    let logit = s + b;
                    // f32 rounding of the sums and products, subnormal products, the bias
                    // and the final add; logits past f32 saturate in the kernel.
                    let mut err = (d as f64 + 4.0) * 2.0 * EPS * magnitude
                        + d as f64 * 2e-45 * scale.abs()
                        + 2.0 * EPS * (b.abs() + logit.abs());
                    if logit.abs() > 1e37 || magnitude > 1e37 {
                        err = f64::INFINITY;
                    }
                    (logit, err, &v[(kvh * lk + j) * dv..][..dv])
                })
                .collect();
            rows.push(attend_f64(&keys, dv));
        }
    }
    rows
}

/// The documented domain in which sdpa's output is finite, given finite inputs: all of it
/// (the output is a convex combination of the values; rows whose accumulator overflows are
/// computed again with halved weights). Once limited to `lk · max|v| < f32::MAX / 4`, before
/// that fix (tests/bad_input.rs `sdpa_values_near_max_stay_finite`).
pub fn sdpa_output_must_be_finite(_lk: usize, _v_max_abs: f64) -> bool {
    true
}

// ---------------------------------------------------------------------------------------
// Single-query kernels (Bahdanau, Luong)

/// Checks the `weights` (`[l]`) and `context` (`[dv]`) of a single-query kernel with finite
/// inputs: both finite; masked keys exactly 0; weights summing to 1, or all 0 when no key is
/// allowed; and, per allowed key `j`, `scores[j] = Some((reference score, error bound))`,
/// weights and context within the derived bound of the f64 softmax. `rounding` is the
/// relative rounding of the output storage type.
pub fn check_single_query(
    weights: &[f32],
    context: &[f32],
    values: &[f32],
    scores: &[Option<(f64, f64)>],
    rounding: f64,
    what: &str,
) {
    assert!(finite(weights), "{what}: non-finite weights {weights:?}");
    assert!(finite(context), "{what}: non-finite context {context:?}");
    let dv = context.len();
    let vf: Vec<f64> = values.iter().map(|&x| x as f64).collect();
    let keys: Vec<(f64, f64, &[f64])> = scores
        .iter()
        .enumerate()
        .filter_map(|(j, s)| s.map(|(logit, err)| (logit, err, &vf[j * dv..][..dv])))
        .collect();
    for (j, s) in scores.iter().enumerate() {
        if s.is_none() {
            assert_eq!(weights[j], 0.0, "{what}: masked key {j} has weight");
        }
    }
    let sum: f64 = weights.iter().map(|&w| w as f64).sum();
    if keys.is_empty() {
        assert_eq!(sum, 0.0, "{what}: fully masked query has weights");
    } else {
        let tol = (weights.len() as f64 + 8.0) * (4.0 * EPS + rounding);
        assert!((sum - 1.0).abs() <= tol, "{what}: weights sum to {sum}");
    }
    let r = attend_f64(&keys, dv);
    assert_row(context, &r, rounding, &format!("{what} context"));
    // The weights themselves.
    if let Some(max) = keys.iter().map(|k| k.0).reduce(f64::max) {
        let total: f64 = keys.iter().map(|k| (k.0 - max).exp()).sum();
        let delta = keys.iter().map(|k| k.1).fold(0.0, f64::max);
        for (j, s) in scores.iter().enumerate() {
            if let Some((logit, _)) = s {
                let want = (logit - max).exp() / total;
                // Logit errors up to `delta` can raise a weight to e^{2 delta} times its
                // value (computed so an underflowed reference weight still gets slack).
                let growth = if delta.is_finite() {
                    ((logit - max + 2.0 * delta).exp() / total - want).max(0.0)
                } else {
                    f64::INFINITY
                };
                let tol = growth + (scores.len() as f64 + 16.0) * 4.0 * EPS + rounding * want;
                let got = weights[j] as f64;
                assert!(
                    (got - want).abs() <= tol,
                    "{what}: weight {j} is {got}, reference {want}, tolerance {tol}"
                );
            }
        }
    }
}

/// `Σ_a v_a tanh(wq_a · q + wk_a · k)` in f64 with a bound on the f32 kernel's error (rows
/// `(wq_a, wk_a)`); infinite bound where f32 saturates.
pub fn tanh_score_f64<'w>(
    v: &[f32],
    rows: impl Iterator<Item = (&'w [f32], &'w [f32])>,
    q: &[f32],
    k: &[f32],
) -> (f64, f64) {
    let (mut s, mut err, mut magnitude) = (0.0f64, 0.0f64, 0.0f64);
    for (&va, (wq, wk)) in v.iter().zip(rows) {
        let (mut x, mut m) = (0.0f64, 0.0f64);
        for (&w, &a) in wq.iter().zip(q).chain(wk.iter().zip(k)) {
            x += w as f64 * a as f64;
            m += (w as f64 * a as f64).abs();
        }
        let t = x.tanh();
        let va = va as f64;
        s += va * t;
        magnitude += (va * t).abs();
        // Argument rounding (tanh' <= 1) and tanh's own few ulp.
        let arg_err = (wq.len() + wk.len() + 4) as f64 * 2.0 * EPS * m + 1e-44;
        err += va.abs() * (arg_err + 4.0 * EPS);
        if m > 1e37 || va.abs() > 1e37 {
            err = f64::INFINITY;
        }
    }
    err += (v.len() as f64 + 4.0) * 2.0 * EPS * magnitude;
    if magnitude > 1e37 {
        err = f64::INFINITY;
    }
    (s, err)
}
