//! Masks as structure: each query row gets the ranges of keys it may visit.
//!
//! No n×n boolean matrix exists anywhere. A [`Mask`] is an AND of [`MaskTerm`]s; for query row
//! `i` it yields the allowed keys as sorted, disjoint ranges ([`Mask::row`]), so a kernel's work
//! is proportional to the allowed keys: a sliding window of width w over n keys costs O(w) per
//! row, not O(n).
//!
//! Positions follow `FORMAT.md`: query row `i` sits at `p = i + q_pos_offset` (a decode step
//! against a cache of `lk` keys uses `q_pos_offset = lk - lq`); key `j` sits at `j`. The offset
//! may be negative (queries that precede every key); positions are `i64`, saturating.
//!
//! ```
//! use microattn::mask::{Mask, MaskTerm};
//! let terms = [MaskTerm::Causal, MaskTerm::Sliding { left: 2, right: 0 }];
//! let mask = Mask::new(&terms);
//! let runs: Vec<_> = mask.row(5, 16).collect();
//! assert_eq!(runs, [3..6]);
//! ```

use crate::error::Error;
use core::ops::Range;

/// One condition on the keys a query may attend to. A key is allowed by a [`Mask`] when every
/// term allows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum MaskTerm<'a> {
    /// Every key.
    None,
    /// Keys at or before the query position: `j <= p`.
    Causal,
    /// `p - left <= j <= p + right` (a causal sliding window has `right = 0`).
    Sliding {
        /// Keys visible before the query position.
        left: usize,
        /// Keys visible after the query position.
        right: usize,
    },
    /// `j = p + t * dilation` for an integer `t` with `-left <= t <= right`.
    Dilated {
        /// Steps visible before the query position.
        left: usize,
        /// Steps visible after the query position.
        right: usize,
        /// Distance between visible keys; must be positive.
        dilation: usize,
    },
    /// Inside the sliding window, or `j` in `global`, or `p` in `global` (Longformer).
    GlobalSliding {
        /// Keys visible before the query position.
        left: usize,
        /// Keys visible after the query position.
        right: usize,
        /// Global positions, in any order.
        global: &'a [usize],
    },
    /// BigBird block sparsity with `qb = p / block`, `kb = j / block`: allowed when
    /// `|qb - kb| <= window`, or `qb` or `kb` in `global`, or `(qb, kb)` in `random`.
    BlockSparse {
        /// Block size in positions; must be positive.
        block: usize,
        /// Neighbouring blocks visible on each side.
        window: usize,
        /// Global block indices, in any order.
        global: &'a [usize],
        /// Extra `(query block, key block)` pairs, in any order.
        random: &'a [(usize, usize)],
    },
    /// The first `valid` keys; the rest are padding: `j < valid`.
    KeyPadding {
        /// Number of real keys.
        valid: usize,
    },
}

/// An AND of mask terms plus the position of the first query row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Mask<'a> {
    /// Terms that must all allow a key; empty means every key is allowed.
    pub terms: &'a [MaskTerm<'a>],
    /// Absolute position of query row 0 (may be negative).
    pub q_pos_offset: i64,
}

impl<'a> Mask<'a> {
    /// No masking at all.
    pub const NONE: Mask<'static> = Mask {
        terms: &[],
        q_pos_offset: 0,
    };

    /// The AND of `terms`, with query row 0 at position 0.
    pub const fn new(terms: &'a [MaskTerm<'a>]) -> Self {
        Mask {
            terms,
            q_pos_offset: 0,
        }
    }

    /// The same mask with query row 0 at absolute position `offset` (decode steps).
    pub const fn with_offset(self, offset: usize) -> Self {
        self.with_signed_offset(to_i64(offset))
    }

    /// The same mask with query row 0 at absolute position `offset`, which may be negative.
    pub const fn with_signed_offset(self, offset: i64) -> Self {
        Mask {
            terms: self.terms,
            q_pos_offset: offset,
        }
    }

    /// Checks the terms: [`Error::InvalidMask`] for a zero dilation or a zero block size.
    pub fn validate(&self) -> Result<(), Error> {
        for term in self.terms {
            match *term {
                MaskTerm::Dilated { dilation: 0, .. } | MaskTerm::BlockSparse { block: 0, .. } => {
                    return Err(Error::InvalidMask)
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Absolute position of query row `row`.
    pub fn position(&self, row: usize) -> i64 {
        to_i64(row).saturating_add(self.q_pos_offset)
    }

    /// The allowed keys of query row `row` among `lk` keys, as sorted, disjoint, non-empty
    /// ranges. Call [`Mask::validate`] first: a malformed term yields no keys.
    pub fn row(&self, row: usize, lk: usize) -> KeyRuns<'_, 'a> {
        KeyRuns {
            terms: self.terms,
            position: self.position(row),
            lk,
            next: 0,
        }
    }

    /// Whether key `key` is allowed for query row `row` (a direct test of the definition,
    /// for references and tests; kernels use [`Mask::row`]).
    pub fn allows(&self, row: usize, key: usize) -> bool {
        let p = self.position(row);
        self.terms.iter().all(|t| term_allows(t, p, key))
    }
}

/// Iterator over the allowed key ranges of one query row; see [`Mask::row`].
#[derive(Debug, Clone)]
pub struct KeyRuns<'m, 'a> {
    terms: &'m [MaskTerm<'a>],
    position: i64,
    lk: usize,
    next: usize,
}

impl Iterator for KeyRuns<'_, '_> {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        let mut start = self.next;
        // Intersect the terms: move `start` to the first key every term allows. Each restart
        // strictly increases `start`, so the loop ends.
        'search: loop {
            if start >= self.lk {
                self.next = self.lk;
                return None;
            }
            let mut end = self.lk;
            for term in self.terms {
                match next_run(term, self.position, start, self.lk) {
                    None => {
                        self.next = self.lk;
                        return None;
                    }
                    Some(run) if run.start > start => {
                        start = run.start;
                        continue 'search;
                    }
                    Some(run) => end = end.min(run.end),
                }
            }
            self.next = end;
            return Some(start..end);
        }
    }
}

/// `x` as `i64`, saturating (a `usize` above `i64::MAX` only exists on 64-bit hosts).
const fn to_i64(x: usize) -> i64 {
    if x > i64::MAX as usize {
        i64::MAX
    } else {
        x as i64
    }
}

/// The first run of keys allowed by `term` that starts at or after `from` (`from < lk`):
/// `run.start >= from`, `run.end <= lk`, non-empty. Runs need not be maximal.
///
/// Positions and term parameters are compared as exact `i128` (a `usize` parameter and an
/// `i64` position both fit), with saturating products: saturating a parameter to `i64`
/// instead would change which keys a huge dilation, block or global position allows.
fn next_run(term: &MaskTerm<'_>, p: i64, from: usize, lk: usize) -> Option<Range<usize>> {
    let p = i128::from(p);
    let (from_i, lk_i) = (from as i128, lk as i128);
    // The keys of the exact range [start, end) that lie in [from, lk).
    let clip = |start: i128, end: i128| {
        let (start, end) = (start.max(from_i), end.min(lk_i));
        // Both now lie in [0, lk], so the casts are exact.
        (start < end).then_some(start as usize..end as usize)
    };
    let is_global = |global: &[usize], x: i128| global.iter().any(|&g| g as i128 == x);
    match *term {
        MaskTerm::None => clip(from_i, lk_i),
        MaskTerm::Causal => clip(from_i, p + 1),
        MaskTerm::KeyPadding { valid } => clip(from_i, valid as i128),
        MaskTerm::Sliding { left, right } => clip(p - left as i128, p + right as i128 + 1),
        MaskTerm::Dilated {
            left,
            right,
            dilation,
        } => {
            if dilation == 0 {
                return None;
            }
            let r = dilation as i128;
            let lowest = p
                .saturating_sub((left as i128).saturating_mul(r))
                .max(from_i);
            // Smallest j >= lowest with j ≡ p (mod r); lowest >= 0, so no overflow.
            let first = lowest + (p - lowest).rem_euclid(r);
            let last = p.saturating_add((right as i128).saturating_mul(r));
            if first > last {
                return None;
            }
            if r == 1 {
                clip(first, last + 1)
            } else {
                clip(first, first + 1)
            }
        }
        MaskTerm::GlobalSliding {
            left,
            right,
            global,
        } => {
            if is_global(global, p) {
                return clip(from_i, lk_i);
            }
            let window = clip(p - left as i128, p + right as i128 + 1);
            let first_global = global
                .iter()
                .copied()
                .filter(|&g| g >= from && g < lk)
                .min();
            match (window, first_global) {
                (Some(w), Some(g)) if g < w.start => Some(g..g + 1),
                (Some(w), _) => Some(w),
                (None, Some(g)) => Some(g..g + 1),
                (None, None) => None,
            }
        }
        MaskTerm::BlockSparse {
            block,
            window,
            global,
            random,
        } => {
            if block == 0 {
                return None;
            }
            let b = block as i128;
            let qb = p.div_euclid(b);
            if is_global(global, qb) {
                return clip(from_i, lk_i);
            }
            let from_block = from_i / b;
            let w = window as i128;
            let (lo, hi) = (qb - w, qb + w);
            // The first allowed key block at or after `from_block`, and the last block of the
            // run it starts.
            let mut best: Option<(i128, i128)> = if hi < from_block {
                None
            } else {
                Some((from_block.max(lo), hi))
            };
            let extra = global
                .iter()
                .map(|&g| g as i128)
                .chain(
                    random
                        .iter()
                        .filter(|&&(q, _)| q as i128 == qb)
                        .map(|&(_, k)| k as i128),
                )
                .filter(|&kb| kb >= from_block)
                .min();
            if let Some(kb) = extra {
                if best.is_none_or(|(first, _)| kb < first) {
                    best = Some((kb, kb));
                }
            }
            let (first_block, last_block) = best?;
            clip(
                first_block.saturating_mul(b),
                (last_block + 1).saturating_mul(b),
            )
        }
    }
}

/// Direct reading of the definition in `FORMAT.md` for one term.
fn term_allows(term: &MaskTerm<'_>, p: i64, j: usize) -> bool {
    let (p, j) = (p as i128, j as i128);
    match *term {
        MaskTerm::None => true,
        MaskTerm::Causal => j <= p,
        MaskTerm::KeyPadding { valid } => j < valid as i128,
        MaskTerm::Sliding { left, right } => p - left as i128 <= j && j <= p + right as i128,
        MaskTerm::Dilated {
            left,
            right,
            dilation,
        } => {
            let r = dilation as i128;
            r > 0 && (j - p) % r == 0 && (-(left as i128)..=right as i128).contains(&((j - p) / r))
        }
        MaskTerm::GlobalSliding {
            left,
            right,
            global,
        } => {
            (p - left as i128 <= j && j <= p + right as i128)
                || global.iter().any(|&g| g as i128 == j || g as i128 == p)
        }
        MaskTerm::BlockSparse {
            block,
            window,
            global,
            random,
        } => {
            if block == 0 {
                return false;
            }
            let (qb, kb) = (p.div_euclid(block as i128), j / block as i128);
            (qb - kb).abs() <= window as i128
                || global.iter().any(|&g| g as i128 == qb || g as i128 == kb)
                || random
                    .iter()
                    .any(|&(q, k)| q as i128 == qb && k as i128 == kb)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_against_definition(mask: &Mask<'_>, lq: usize, lk: usize) {
        for i in 0..lq {
            let mut expected = [false; 64];
            for (j, e) in expected.iter_mut().enumerate().take(lk) {
                *e = mask.allows(i, j);
            }
            let mut got = [false; 64];
            let mut last_end = 0;
            for run in mask.row(i, lk) {
                assert!(run.start >= last_end && run.start < run.end && run.end <= lk);
                last_end = run.end;
                for j in run {
                    got[j] = true;
                }
            }
            assert_eq!(expected, got, "row {i} of {mask:?}");
        }
    }

    #[test]
    #[cfg_attr(miri, ignore = "long sweep: too slow under Miri")]
    fn every_term_matches_its_definition() {
        let globals = [0usize, 17, 5];
        let random = [(3usize, 6usize), (5, 1), (0, 7)];
        let terms = [
            MaskTerm::None,
            MaskTerm::Causal,
            MaskTerm::KeyPadding { valid: 10 },
            MaskTerm::Sliding { left: 3, right: 2 },
            MaskTerm::Sliding { left: 0, right: 0 },
            MaskTerm::Dilated {
                left: 3,
                right: 2,
                dilation: 3,
            },
            MaskTerm::Dilated {
                left: 2,
                right: 2,
                dilation: 1,
            },
            MaskTerm::GlobalSliding {
                left: 2,
                right: 1,
                global: &globals,
            },
            MaskTerm::BlockSparse {
                block: 4,
                window: 1,
                global: &[0],
                random: &random,
            },
            MaskTerm::BlockSparse {
                block: 3,
                window: 0,
                global: &[],
                random: &random,
            },
        ];
        for offset in [-45, -7, 0, 3, 20] {
            for a in 0..terms.len() {
                let single = Mask::new(&terms[a..=a]).with_signed_offset(offset);
                check_against_definition(&single, 33, 40);
                for b in 0..terms.len() {
                    let pair = [terms[a], terms[b]];
                    check_against_definition(&Mask::new(&pair).with_signed_offset(offset), 33, 40);
                }
            }
        }
    }

    #[test]
    fn malformed_terms_are_rejected() {
        let zero_dilation = [MaskTerm::Dilated {
            left: 1,
            right: 1,
            dilation: 0,
        }];
        assert_eq!(
            Mask::new(&zero_dilation).validate(),
            Err(Error::InvalidMask)
        );
        let zero_block = [MaskTerm::BlockSparse {
            block: 0,
            window: 1,
            global: &[],
            random: &[],
        }];
        assert_eq!(Mask::new(&zero_block).validate(), Err(Error::InvalidMask));
        assert_eq!(Mask::new(&zero_block).row(3, 10).count(), 0);
    }

    #[test]
    #[cfg_attr(miri, ignore = "long sweep: too slow under Miri")]
    fn window_visits_only_its_keys() {
        let terms = [MaskTerm::Sliding { left: 31, right: 0 }];
        let mask = Mask::new(&terms);
        let visited: usize = (0..4096)
            .map(|i| mask.row(i, 4096).map(|r| r.len()).sum::<usize>())
            .sum();
        // Rows 0..31 see i + 1 keys, the rest 32.
        assert_eq!(visited, (1..=32).sum::<usize>() + (4096 - 32) * 32);
    }

    #[test]
    fn extreme_positions_do_not_overflow() {
        let terms = [
            MaskTerm::Sliding {
                left: usize::MAX,
                right: usize::MAX,
            },
            MaskTerm::Dilated {
                left: usize::MAX,
                right: usize::MAX,
                dilation: usize::MAX,
            },
        ];
        for offset in [i64::MAX - 1, i64::MIN + 1] {
            let mask = Mask::new(&terms).with_signed_offset(offset);
            assert!(mask.row(5, 10).count() <= 10);
        }
        assert_eq!(Mask::NONE.with_offset(usize::MAX).q_pos_offset, i64::MAX);
    }
}
