//! Blocked SDPA for hosts: [`ROWS`] query rows at a time against tiles of [`KEYS`] keys.
//!
//! Per block, Qᵀ is stored with the rows as vector lanes (`[d][ROWS]`); per key tile the
//! backend computes the logits `[keys][ROWS]` with a register-blocked Q·Kᵀ micro-kernel, the
//! online softmax of every row at once (down the columns, vectorized `exp`), and
//! `acc = acc·alpha + P·V` with a register-blocked micro-kernel. Only the accumulators
//! (`[ROWS][dv]`), Qᵀ and one tile of logits live on the stack; nothing is `lq × lk`.
//!
//! Masks: each row must allow one contiguous run of keys (true of no mask, causal, sliding
//! windows, key padding and their intersections); the block visits the union of its rows'
//! runs in tiles of [`KEYS`] from the union's start (0 without a mask, so every row of an
//! unmasked call sees the same tiles whichever block it is in), and masks per row the keys
//! outside its run. Keys outside every run are skipped, so a causal or sliding-window call
//! does only the work near its band. A block with a row of several runs goes back to the
//! per-row path.
//!
//! Semantics are those of the per-row path: `saturate(scale·q·k + bias)` logits (an
//! overflowed dot product is recomputed by the score's rescaled path), zero rows for rows
//! with no allowed key, and a row whose accumulator overflowed (values near `f32::MAX`) is
//! handed to the per-row path, which computes it again rescaled.

use super::{for_each_head, saturate, AttentionShape, Bias, Score, SdpaParams, BLOCKED_MIN_ROWS};
use crate::arch::{self, Backend, BLOCK_COLUMN_ALIGN, BLOCK_ROWS as ROWS};
use crate::element::Element;

/// Keys per tile: 64 logits × 32 rows = 8 KiB of logits, in L1 with the tile's keys.
const KEYS: usize = 64;
/// Largest `d` and `dv` of the blocked path (larger heads take the per-row path).
const MAX_DIM: usize = 128;
/// Largest `d` and `dv` of the small workspace (a call zeroes its whole workspace once, which
/// would dominate tiny heads with the large one).
const SMALL_DIM: usize = 32;

/// Whether a call takes the blocked path.
pub(super) fn applies(shape: AttentionShape, params: &SdpaParams<'_>) -> bool {
    params.score == Score::Dot
        && shape.d <= MAX_DIM
        && shape.dv <= MAX_DIM
        && shape.lq >= BLOCKED_MIN_ROWS
}

/// `dv` rounded up to the accumulator column alignment.
fn padded(dv: usize) -> usize {
    dv.div_ceil(BLOCK_COLUMN_ALIGN) * BLOCK_COLUMN_ALIGN
}

/// Blocked attention over validated tensors; `per_row(h, i, q_row, k_h, v_h, out_row)`
/// computes the rows of blocks the blocked kernel does not take.
#[allow(clippy::too_many_arguments)]
pub(super) fn attend<E: Element>(
    q: &[E],
    k: &[E],
    v: &[E],
    out: &mut [E],
    shape: AttentionShape,
    scale: f32,
    params: &SdpaParams<'_>,
    per_row: &mut impl FnMut(usize, usize, &[E], &[E], &[E], &mut [E]),
) {
    let small = shape.d <= SMALL_DIM && shape.dv <= SMALL_DIM;
    // f32 keys are read in place; values too when their rows are already padded.
    let k_in_place = E::as_f32(&[]).is_some();
    let v_in_place = k_in_place && padded(shape.dv) == shape.dv;
    const S: usize = SMALL_DIM * ROWS;
    const L: usize = MAX_DIM * ROWS;
    const SK: usize = SMALL_DIM * KEYS;
    const LK: usize = MAX_DIM * KEYS;
    let call = Call {
        shape,
        scale,
        params,
        backend: arch::backend(),
    };
    match (small, k_in_place, v_in_place) {
        (true, true, true) => call.run(&mut Workspace::<S, 0, 0>::new(), q, k, v, out, per_row),
        (true, true, false) => call.run(&mut Workspace::<S, 0, SK>::new(), q, k, v, out, per_row),
        (true, false, _) => call.run(&mut Workspace::<S, SK, SK>::new(), q, k, v, out, per_row),
        (false, true, true) => call.run(&mut Workspace::<L, 0, 0>::new(), q, k, v, out, per_row),
        (false, true, false) => call.run(&mut Workspace::<L, 0, LK>::new(), q, k, v, out, per_row),
        (false, false, _) => call.run(&mut Workspace::<L, LK, LK>::new(), q, k, v, out, per_row),
    }
}

/// Stack buffers of one call: `D` = `ROWS ×` the largest `d` or `dv`; `KB`, `VB` = widened
/// key and value tiles (0 when the tensors are read in place).
struct Workspace<const D: usize, const KB: usize, const VB: usize> {
    /// Qᵀ of the block, `[d][ROWS]`.
    qt: [f32; D],
    /// Output accumulators, `[ROWS][dvp]`.
    acc: [f32; D],
    /// Logits, then weights, of one tile: `[KEYS][ROWS]`.
    s: [f32; KEYS * ROWS],
    /// The key tile in f32, `[KEYS][d]`.
    k: [f32; KB],
    /// The value tile in f32 with rows padded to `dvp` (the padding stays 0), `[KEYS][dvp]`.
    v: [f32; VB],
}

impl<const D: usize, const KB: usize, const VB: usize> Workspace<D, KB, VB> {
    fn new() -> Self {
        Workspace {
            qt: [0.0; D],
            acc: [0.0; D],
            s: [0.0; KEYS * ROWS],
            k: [0.0; KB],
            v: [0.0; VB],
        }
    }
}

/// What every block of a call shares.
struct Call<'p, 'a> {
    shape: AttentionShape,
    scale: f32,
    params: &'p SdpaParams<'a>,
    backend: Backend,
}

/// Per-row state of a block: allowed run `[lo, hi)` (empty for padding rows and rows with no
/// allowed key), running max `m`, sum `l`, and the last tile's rescale factor.
struct RowState {
    lo: [usize; ROWS],
    hi: [usize; ROWS],
    m: [f32; ROWS],
    l: [f32; ROWS],
    alpha: [f32; ROWS],
}

impl Call<'_, '_> {
    fn run<E: Element, const D: usize, const KB: usize, const VB: usize>(
        &self,
        ws: &mut Workspace<D, KB, VB>,
        q: &[E],
        k: &[E],
        v: &[E],
        out: &mut [E],
        per_row: &mut impl FnMut(usize, usize, &[E], &[E], &[E], &mut [E]),
    ) {
        let AttentionShape { d, dv, .. } = self.shape;
        // Never zero after validation (d, dv <= MAX_DIM); checked once so that chunking
        // cannot panic.
        let (q_step, out_step) = (ROWS * d, ROWS * dv);
        if d == 0 || dv == 0 || q_step == 0 || out_step == 0 {
            return;
        }
        for_each_head(q, k, v, out, self.shape, |h, q_h, k_h, v_h, out_h| {
            let blocks = q_h.chunks(q_step).zip(out_h.chunks_mut(out_step));
            for (b, (q_rows, out_rows)) in blocks.enumerate() {
                let row0 = b * ROWS;
                // Rows the block did not compute, or whose accumulator overflowed, take the
                // per-row path (which computes an overflowed row again, rescaled).
                let redo = self
                    .block(ws, q_rows, k_h, v_h, out_rows, h, row0)
                    .unwrap_or([true; ROWS]);
                let rows = q_rows.chunks_exact(d).zip(out_rows.chunks_exact_mut(dv));
                for (r, ((q_row, out_row), redo)) in rows.zip(redo).enumerate() {
                    if redo {
                        per_row(h, row0 + r, q_row, k_h, v_h, out_row);
                    }
                }
            }
        });
    }

    /// Rows `row0..` (`q_rows.len() / d` of them, at most ROWS) of head `head`. Returns which
    /// rows came out non-finite (their accumulator overflowed: values near `f32::MAX`), or
    /// `None`, having written nothing, when a row's allowed keys are not one run.
    #[allow(clippy::too_many_arguments)]
    fn block<E: Element, const D: usize, const KB: usize, const VB: usize>(
        &self,
        ws: &mut Workspace<D, KB, VB>,
        q_rows: &[E],
        k_h: &[E],
        v_h: &[E],
        out_rows: &mut [E],
        head: usize,
        row0: usize,
    ) -> Option<[bool; ROWS]> {
        let AttentionShape { lk, d, dv, .. } = self.shape;
        let dvp = padded(dv);
        // Never zero after validation; tested once so that chunking cannot panic.
        if d == 0 || dv == 0 || dvp == 0 {
            return None;
        }
        // At most ROWS rows (the caller chunks by ROWS); `d` is never 0 after validation.
        let n = q_rows.len().checked_div(d)?.min(ROWS);
        let mut rows = RowState {
            lo: [0; ROWS],
            hi: [0; ROWS],
            m: [f32::NEG_INFINITY; ROWS],
            l: [0.0; ROWS],
            alpha: [0.0; ROWS],
        };
        let (mut span_lo, mut span_hi) = (lk, 0);
        let bounds = rows.lo.iter_mut().zip(rows.hi.iter_mut());
        for (r, (lo, hi)) in bounds.enumerate().take(n) {
            let mut runs = self.params.mask.row(row0 + r, lk);
            if let Some(run) = runs.next() {
                if runs.next().is_some() {
                    return None;
                }
                (*lo, *hi) = (run.start, run.end);
                span_lo = span_lo.min(run.start);
                span_hi = span_hi.max(run.end);
            }
        }
        let (Some(qt), Some(acc)) = (ws.qt.get_mut(..d * ROWS), ws.acc.get_mut(..ROWS * dvp))
        else {
            return None;
        };
        // Qᵀ; the lanes of padding rows (a last, partial block) are 0.
        if n < ROWS {
            qt.fill(0.0);
        }
        let mut wide = [0.0f32; MAX_DIM];
        for (r, q_row) in q_rows.chunks_exact(d).enumerate().take(ROWS) {
            let q32 = match E::as_f32(q_row) {
                Some(q32) => q32,
                None => {
                    E::widen(q_row, &mut wide);
                    wide.get(..d)?
                }
            };
            for (&x, qt_c) in q32.iter().zip(qt.chunks_exact_mut(ROWS)) {
                if let Some(lane) = qt_c.get_mut(r) {
                    *lane = x;
                }
            }
        }
        acc.fill(0.0);
        let mut start = span_lo;
        while start < span_hi {
            let end = span_hi.min(start + KEYS);
            let tile_ok = self.tile(
                TileBuffers {
                    qt,
                    acc: &mut *acc,
                    s: &mut ws.s,
                    k: &mut ws.k,
                    v: &mut ws.v,
                },
                &mut rows,
                q_rows,
                k_h,
                v_h,
                head,
                row0,
                start..end,
            );
            if !tile_ok {
                return None;
            }
            start = end;
        }
        let mut overflowed = [false; ROWS];
        let outs = out_rows.chunks_exact_mut(dv).zip(acc.chunks_exact_mut(dvp));
        for (((out_row, acc_row), &l), bad) in outs.zip(&rows.l).zip(&mut overflowed) {
            let inv = if l > 0.0 { 1.0 / l } else { 0.0 };
            // `dv <= dvp`: the padding columns are not output.
            let Some(acc_row) = acc_row.get_mut(..dv) else {
                continue;
            };
            self.backend.scale(acc_row, inv);
            *bad = !super::all_finite(acc_row);
            E::narrow(acc_row, out_row);
        }
        Some(overflowed)
    }

    /// One key tile `keys` of a block: logits, masks, online softmax, P·V. Returns false if a
    /// primitive rejected its arguments (a bug: the caller falls back to the per-row path).
    #[allow(clippy::too_many_arguments)]
    fn tile<E: Element>(
        &self,
        buf: TileBuffers<'_>,
        rows: &mut RowState,
        q_rows: &[E],
        k_h: &[E],
        v_h: &[E],
        head: usize,
        row0: usize,
        keys: core::ops::Range<usize>,
    ) -> bool {
        let AttentionShape { d, dv, .. } = self.shape;
        let dvp = padded(dv);
        // Never zero after validation; tested once so that chunking cannot panic.
        if d == 0 || dv == 0 || dvp == 0 {
            return false;
        }
        let (start, nk) = (keys.start, keys.len());
        let Some(s) = buf.s.get_mut(..nk * ROWS) else {
            return false;
        };
        let (Some(k_tile), Some(v_tile)) = (
            k_h.get(start * d..keys.end * d),
            v_h.get(start * dv..keys.end * dv),
        ) else {
            return false;
        };
        let k32 = match E::as_f32(k_tile) {
            Some(k32) => k32,
            None => match buf.k.get_mut(..nk * d) {
                Some(kbuf) => {
                    E::widen(k_tile, kbuf);
                    kbuf
                }
                None => return false,
            },
        };
        let Ok(finite) = self.backend.qk_block(buf.qt, d, k32, d, self.scale, s) else {
            return false;
        };
        let bias = self.params.bias;
        if !finite || bias != Bias::None {
            // As the per-row path: an overflowed dot product goes through the score's
            // rescaled path, then the bias is added and the logit saturated.
            for (r, q_row) in q_rows.chunks_exact(d).enumerate() {
                let position = self.params.mask.position(row0 + r);
                let column = s.iter_mut().skip(r).step_by(ROWS);
                for ((x, k_row), key) in column.zip(k_tile.chunks_exact(d)).zip(start..) {
                    let logit = if x.is_finite() {
                        *x
                    } else {
                        Score::Dot.logit(q_row, k_row, 1.0, self.scale)
                    };
                    *x = saturate(saturate(logit) + bias.value(head, position, key));
                }
            }
        }
        // Keys outside a row's run get -inf (padding rows have an empty run: all -inf). A tile
        // inside every row's run (the common case away from a mask's edges) needs nothing.
        let runs = rows.lo.iter().zip(&rows.hi).enumerate();
        for (r, (&lo, &hi)) in runs.filter(|(_, (&lo, &hi))| lo > keys.start || hi < keys.end) {
            // `max` then `min` is `clamp` to `keys` (`start <= end`), without its assertion.
            let lo = lo.max(keys.start).min(keys.end) - start;
            let hi = (hi.max(keys.start).min(keys.end) - start).max(lo);
            let column = s.iter_mut().skip(r).step_by(ROWS).enumerate();
            for (_, x) in column.filter(|&(j, _)| j < lo || j >= hi) {
                *x = f32::NEG_INFINITY;
            }
        }
        if self
            .backend
            .softmax_block(s, &mut rows.m, &mut rows.l, &mut rows.alpha)
            .is_err()
        {
            return false;
        }
        let (v32, v_stride): (&[f32], usize) = match E::as_f32(v_tile) {
            Some(v32) if dvp == dv => (v32, dv),
            _ => match buf.v.get_mut(..nk * dvp) {
                Some(vbuf) => {
                    // Both hold `nk` rows. (Not `zip`: its out-of-line copy, shared with other
                    // callers, keeps a division by the chunk size.)
                    let mut src_rows = v_tile.chunks_exact(dv);
                    for dst in vbuf.chunks_exact_mut(dvp) {
                        let Some(src) = src_rows.next() else { break };
                        // Rows are `dvp >= dv` wide: the widened row, then zero padding.
                        E::widen(src, dst);
                    }
                    (vbuf, dvp)
                }
                None => return false,
            },
        };
        self.backend
            .pv_block(s, v32, v_stride, dvp, &rows.alpha, buf.acc)
            .is_ok()
    }
}

/// The workspace slices one tile works in.
struct TileBuffers<'w> {
    qt: &'w [f32],
    acc: &'w mut [f32],
    s: &'w mut [f32],
    k: &'w mut [f32],
    v: &'w mut [f32],
}
