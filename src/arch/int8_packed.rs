//! Keys and values of one int8 attention head unpacked once into 16-bit pairs, so that the
//! Cortex-M DSP cores spend their inner loops on `SMLAD` (two 16×16 products per instruction)
//! instead of unpacking bytes for every query row.
//!
//! `SMLAD` multiplies the two halves of one register with the two halves of another. Unpacked
//! in the loop, every word of int8 keys or values costs two `SXTB16` (and the values two
//! `PKH` more to pair rows); packed once per call, the loops load ready pairs with `LDRD` and
//! `LDM`. Layouts (`u32` words, low half first):
//!
//! - keys, [`packed_keys_words`]: groups of four keys (the last group padded with zero keys);
//!   per 4-byte block `i` of the group, eight words: for each key `k`,
//!   `(k[i], k[i+2])` then `(k[i+1], k[i+3])` — the query's `SXTB16` / `SXTB16 …, ROR #8`
//!   unpacking, so one `LDRD` of a key meets one `LDRD` of the query;
//! - values, [`packed_values_words`]: per block of four columns, per pair of keys
//!   `(2p, 2p + 1)` (the last pair padded with a zero row), four words
//!   `(v[2p][c], v[2p+1][c])`, one per column `c` of the block: one `LDM` gives the four
//!   columns' pairs and one `SMLAD` per column adds both keys' weighted values.
//!
//! Packing costs about what one query row's unpacking does, so it pays from two query rows
//! on. The primitives give the bits of [`super::dot_i8_keys`] and [`super::pv_i8`]
//! (wrapping `i32`); off the DSP cores they run as plain loops over the same layout.

use crate::error::Error;

/// `u32` words of `lk` packed keys of `d` bytes (`d % 4 == 0`), saturating.
pub(crate) const fn packed_keys_words(lk: usize, d: usize) -> usize {
    lk.div_ceil(4).saturating_mul(d.saturating_mul(2))
}

/// `u32` words of `lk` packed value rows of `dv` bytes (`dv % 4 == 0`), saturating.
pub(crate) const fn packed_values_words(lk: usize, dv: usize) -> usize {
    lk.div_ceil(2).saturating_mul(dv)
}

/// The `i64` scratch a caller provides, seen as `u32` words for the packed layouts (in
/// practice the whole slice: `u32`'s alignment divides `i64`'s; `align_to_mut` may return
/// fewer words, and the kernels then find too little room and do not pack).
pub(crate) fn scratch_words(scratch: &mut [i64]) -> &mut [u32] {
    // SAFETY: every bit pattern is a valid `u32` (and of an `i64` written through it).
    let (_, words, _) = unsafe { scratch.align_to_mut::<u32>() };
    words
}

/// Two int8 values as the signed 16-bit halves of a word (`a` low).
#[inline(always)]
fn halves(a: i8, b: i8) -> u32 {
    halves16(a as i16, b as i16)
}

/// Packs the `keys.len() / d` keys of `d` bytes into `out` (layout in the module docs).
///
/// Errors: [`Error::InvalidParameter`] when `d` is 0 or not a multiple of 4,
/// [`Error::LengthMismatch`] when `keys` is not whole keys or `out` is shorter than
/// [`packed_keys_words`].
pub(crate) fn pack_keys(keys: &[i8], d: usize, out: &mut [u32]) -> Result<(), Error> {
    if d == 0 || d % 4 != 0 || keys.len() % d != 0 {
        return Err(Error::InvalidParameter);
    }
    let needed = packed_keys_words(keys.len() / d, d);
    let found = out.len();
    let out = out.get_mut(..needed).ok_or(Error::LengthMismatch {
        expected: needed,
        found,
    })?;
    // Padding keys are zero.
    out.fill(0);
    for (index, key) in keys.chunks_exact(d).enumerate() {
        pack_key_at(key, index, out)?;
    }
    Ok(())
}

/// Writes key number `index` (`key.len()` bytes, a multiple of 4) into packed keys `keys`.
///
/// Errors: [`Error::InvalidParameter`] for a key length of 0 or not a multiple of 4,
/// [`Error::LengthMismatch`] when the key's group ends past `keys`.
pub(crate) fn pack_key_at(key: &[i8], index: usize, keys: &mut [u32]) -> Result<(), Error> {
    let d = key.len();
    if d == 0 || d % 4 != 0 {
        return Err(Error::InvalidParameter);
    }
    let (group, slot) = (index / 4, index % 4);
    let start = group.checked_mul(2 * d).ok_or(Error::ShapeOverflow)?;
    let found = keys.len();
    let group_out = keys
        .get_mut(start..start + 2 * d)
        .ok_or(Error::LengthMismatch {
            expected: start + 2 * d,
            found,
        })?;
    for (bytes, block_out) in key.chunks_exact(4).zip(group_out.chunks_exact_mut(8)) {
        if let ([b0, b1, b2, b3], Some([even, odd])) =
            (bytes, block_out.get_mut(2 * slot..2 * slot + 2))
        {
            *even = halves(*b0, *b2);
            *odd = halves(*b1, *b3);
        }
    }
    Ok(())
}

/// Packs the `values.len() / dv` value rows of `dv` bytes into `out` (layout in the module
/// docs).
///
/// Errors: [`Error::InvalidParameter`] when `dv` is 0 or not a multiple of 4,
/// [`Error::LengthMismatch`] when `values` is not whole rows or `out` is shorter than
/// [`packed_values_words`].
pub(crate) fn pack_values(values: &[i8], dv: usize, out: &mut [u32]) -> Result<(), Error> {
    if dv == 0 || dv % 4 != 0 || values.len() % dv != 0 {
        return Err(Error::InvalidParameter);
    }
    let lk = values.len() / dv;
    let needed = packed_values_words(lk, dv);
    let found = out.len();
    let out = out.get_mut(..needed).ok_or(Error::LengthMismatch {
        expected: needed,
        found,
    })?;
    // The padding row of an odd count is zero.
    out.fill(0);
    for (index, row) in values.chunks_exact(dv).enumerate() {
        pack_value_at(row, index, lk, out)?;
    }
    Ok(())
}

/// Writes value row number `index` (`row.len()` bytes, a multiple of 4) into packed values
/// `values` laid out for `capacity` rows.
///
/// Errors: [`Error::InvalidParameter`] for a row length of 0 or not a multiple of 4 or
/// `index >= capacity`, [`Error::LengthMismatch`] when `values` is shorter than the layout.
pub(crate) fn pack_value_at(
    row: &[i8],
    index: usize,
    capacity: usize,
    values: &mut [u32],
) -> Result<(), Error> {
    let dv = row.len();
    if dv == 0 || dv % 4 != 0 || index >= capacity {
        return Err(Error::InvalidParameter);
    }
    let needed = packed_values_words(capacity, dv);
    if values.len() < needed {
        return Err(Error::LengthMismatch {
            expected: needed,
            found: values.len(),
        });
    }
    let (pair, shift) = (index / 2, 16 * (index % 2));
    let block_words = 4 * capacity.div_ceil(2);
    for (block, four) in row.chunks_exact(4).enumerate() {
        let at = block * block_words + 4 * pair;
        if let Some(words) = values.get_mut(at..at + 4) {
            for (word, &x) in words.iter_mut().zip(four) {
                *word = (*word & !(0xffff << shift)) | ((x as i16 as u16 as u32) << shift);
            }
        }
    }
    Ok(())
}

/// `out[j] = Σ_i q_i · key_{first + j}[i]` (wrapping `i32`), the keys packed by
/// [`pack_keys`] with `d = q.len()`. A `first` inside a group of four costs one extra group.
///
/// Errors: [`Error::InvalidParameter`] when `q.len()` is 0 or not a multiple of 4;
/// [`Error::LengthMismatch`] when the keys' groups end past `keys`.
pub(crate) fn dot_i8_packed(
    q: &[i8],
    keys: &[u32],
    first: usize,
    out: &mut [i32],
) -> Result<(), Error> {
    let d = q.len();
    if d == 0 || d % 4 != 0 {
        return Err(Error::InvalidParameter);
    }
    let lead = first % 4;
    if lead == 0 || out.is_empty() {
        return dot_groups(q, keys, first, out);
    }
    // The keys before the next group boundary from their group's four dot products.
    let mut four = [0i32; 4];
    dot_groups(q, keys, first - lead, &mut four)?;
    let n = (4 - lead).min(out.len());
    let (head, rest) = out.split_at_mut(n);
    for (o, &s) in head.iter_mut().zip(four.get(lead..).unwrap_or(&[])) {
        *o = s;
    }
    dot_groups(q, keys, first - lead + 4, rest)
}

/// [`dot_i8_packed`] from the first key of a group (`first % 4 == 0`; `q.len()` a non-zero
/// multiple of 4).
#[inline(always)]
fn dot_groups(q: &[i8], keys: &[u32], first: usize, out: &mut [i32]) -> Result<(), Error> {
    let d = q.len();
    let group_words = 2 * d;
    let start = (first / 4).checked_mul(group_words);
    let end = first
        .checked_add(out.len())
        .and_then(|e| e.div_ceil(4).checked_mul(group_words));
    let (Some(start), Some(end)) = (start, end) else {
        return Err(Error::ShapeOverflow);
    };
    let groups = keys.get(start..end).ok_or(Error::LengthMismatch {
        expected: end,
        found: keys.len(),
    })?;
    #[cfg(all(target_arch = "arm", arm_dsp, not(arm_mve)))]
    // SAFETY: `groups` holds the packed groups of every output's key (checked above).
    unsafe {
        super::cortex_m_dsp::dot_i8_packed(q, groups, out)
    };
    #[cfg(not(all(target_arch = "arm", arm_dsp, not(arm_mve))))]
    for (four, group) in out.chunks_mut(4).zip(groups.chunks_exact(group_words)) {
        for (slot, o) in four.iter_mut().enumerate() {
            let mut acc = 0i32;
            for (bytes, block) in q.chunks_exact(4).zip(group.chunks_exact(8)) {
                if let ([q0, q1, q2, q3], Some(&[even, odd])) =
                    (bytes, block.get(2 * slot..2 * slot + 2))
                {
                    acc = acc
                        .wrapping_add(smlad(halves(*q0, *q2), even))
                        .wrapping_add(smlad(halves(*q1, *q3), odd));
                }
            }
            *o = acc;
        }
    }
    Ok(())
}

/// `acc[c] += Σ_j w[j] · v_{first + j}[column + c]` (wrapping `i32`), the value rows packed by
/// [`pack_values`] for `lk` rows of `dv` bytes.
///
/// An odd `first` pairs the first row with a zero weight for the row before it.
///
/// Errors: [`Error::InvalidParameter`] when a weight does not fit an `i16` (the SDPA's Q15
/// weights always do), `column` or `acc.len()` is not a multiple of 4, or `dv` is not;
/// [`Error::LengthMismatch`] when the rows or columns end past the packed values.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pv_i8_packed(
    w: &[i32],
    values: &[u32],
    lk: usize,
    dv: usize,
    first: usize,
    column: usize,
    acc: &mut [i32],
) -> Result<(), Error> {
    let fits = |x: &i32| i16::try_from(*x).is_ok();
    if column % 4 != 0 || acc.len() % 4 != 0 || dv % 4 != 0 {
        return Err(Error::InvalidParameter);
    }
    if !w.iter().all(fits) {
        return Err(Error::InvalidParameter);
    }
    let last_row = first.checked_add(w.len()).ok_or(Error::ShapeOverflow)?;
    let last_column = column.checked_add(acc.len()).ok_or(Error::ShapeOverflow)?;
    let needed = packed_values_words(lk, dv);
    if last_row > lk || last_column > dv || values.len() < needed {
        return Err(Error::LengthMismatch {
            expected: needed,
            found: values.len(),
        });
    }
    let block_words = 4 * lk.div_ceil(2);
    let (mut w, mut first) = (w, first);
    if first % 2 == 1 {
        if let Some((&w0, rest)) = w.split_first() {
            // Row `first` as the second of its pair, the row before it weighted 0.
            let pair = [halves16(0, w0 as i16)];
            pv_pairs(&pair, values, block_words, first / 2, column, acc);
            (w, first) = (rest, first + 1);
        }
    }
    // Weight pairs `(w[2p], w[2p+1])`, 64 keys at a time (a zero weight pads an odd count).
    let mut weight_pairs = [0u32; 32];
    for (chunk, w_chunk) in w.chunks(64).enumerate() {
        let twos = w_chunk.chunks_exact(2);
        let last = match *twos.remainder() {
            [a] => halves16(a as i16, 0),
            _ => 0,
        };
        for (pair, two) in weight_pairs.iter_mut().zip(twos) {
            if let [a, b] = *two {
                *pair = halves16(a as i16, b as i16);
            }
        }
        if let Some(pair) = weight_pairs.get_mut(w_chunk.len() / 2) {
            *pair = last;
        }
        let used = w_chunk.len().div_ceil(2);
        if let Some(weight_pairs) = weight_pairs.get(..used) {
            pv_pairs(
                weight_pairs,
                values,
                block_words,
                first / 2 + 32 * chunk,
                column,
                acc,
            );
        }
    }
    Ok(())
}

/// Adds the weighted value pairs `first_pair ..` of every column block of `acc` (columns
/// from `column`; bounds checked by the caller, a short `values` adds nothing).
#[inline(always)]
fn pv_pairs(
    weight_pairs: &[u32],
    values: &[u32],
    block_words: usize,
    first_pair: usize,
    column: usize,
    acc: &mut [i32],
) {
    let used = weight_pairs.len();
    for (block, acc4) in acc.chunks_exact_mut(4).enumerate() {
        let start = (column / 4 + block) * block_words + 4 * first_pair;
        let Some(rows) = values.get(start..start + 4 * used) else {
            return;
        };
        #[cfg(all(target_arch = "arm", arm_dsp, not(arm_mve)))]
        // SAFETY: `rows` holds the four words of each of the `used` pairs.
        unsafe {
            super::cortex_m_dsp::pv_i8_packed(weight_pairs, rows, acc4)
        };
        #[cfg(not(all(target_arch = "arm", arm_dsp, not(arm_mve))))]
        for (&pair, words) in weight_pairs.iter().zip(rows.chunks_exact(4)) {
            for (a, &word) in acc4.iter_mut().zip(words) {
                *a = a.wrapping_add(smlad(pair, word));
            }
        }
    }
}

/// Two 16-bit values as the halves of a word (`a` low).
#[inline(always)]
fn halves16(a: i16, b: i16) -> u32 {
    (a as u16 as u32) | ((b as u16 as u32) << 16)
}

/// `SMLAD` without the accumulator: the sum of the products of the signed 16-bit halves.
#[cfg(not(all(target_arch = "arm", arm_dsp, not(arm_mve))))]
#[inline(always)]
fn smlad(a: u32, b: u32) -> i32 {
    let lo = (a as u16 as i16 as i32) * (b as u16 as i16 as i32);
    let hi = ((a >> 16) as u16 as i16 as i32) * ((b >> 16) as u16 as i16 as i32);
    lo.wrapping_add(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift) for test data.
    fn bytes(n: usize, seed: u32) -> [i8; 512] {
        let mut x = seed | 1;
        let mut out = [0i8; 512];
        for b in out.iter_mut().take(n) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = (x >> 24) as u8 as i8;
        }
        out
    }

    #[test]
    fn packed_dot_and_pv_match_the_plain_definitions() {
        for (lk, d, dv) in [(1, 4, 4), (3, 8, 4), (5, 12, 8), (9, 4, 12), (13, 16, 16)] {
            let k = bytes(lk * d, 7 + lk as u32);
            let v = bytes(lk * dv, 11 + d as u32);
            let q = bytes(d, 3);
            let (k, v, q) = (&k[..lk * d], &v[..lk * dv], &q[..d]);
            let mut pk = [0u32; 512];
            let mut pv = [0u32; 512];
            pack_keys(k, d, &mut pk).unwrap();
            pack_values(v, dv, &mut pv).unwrap();
            for first in 0..lk {
                let n = lk - first;
                let mut out = [0i32; 16];
                dot_i8_packed(q, &pk, first, &mut out[..n]).unwrap();
                for (j, &o) in out[..n].iter().enumerate() {
                    let key = &k[(first + j) * d..(first + j + 1) * d];
                    let want: i32 = q.iter().zip(key).map(|(&a, &b)| a as i32 * b as i32).sum();
                    assert_eq!(o, want, "lk {lk} d {d} key {}", first + j);
                }
            }
            let w: [i32; 16] = core::array::from_fn(|j| [32767, -32768, 5, 0, -7, 1234][j % 6]);
            for first in 0..lk {
                let n = lk - first;
                let mut acc = [1i32; 16];
                pv_i8_packed(&w[..n], &pv, lk, dv, first, 0, &mut acc[..dv]).unwrap();
                for (c, &a) in acc[..dv].iter().enumerate() {
                    let want = 1
                        + (0..n)
                            .map(|j| w[j] * v[(first + j) * dv + c] as i32)
                            .sum::<i32>();
                    assert_eq!(a, want, "lk {lk} dv {dv} column {c}");
                }
            }
        }
    }

    #[test]
    fn scratch_words_view_the_scratch() {
        let mut scratch = [0i64; 3];
        let words = scratch_words(&mut scratch);
        assert!(words.len() <= 6);
        words.fill(u32::MAX);
        let filled = words.len();
        assert_eq!(scratch.iter().filter(|&&x| x == -1).count() * 2, filled);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let mut out = [0u32; 8];
        assert!(pack_keys(&[0; 6], 3, &mut out).is_err());
        assert!(pack_keys(&[0; 8], 4, &mut out[..3]).is_err());
        assert!(dot_i8_packed(&[0; 3], &out, 0, &mut [0; 1]).is_err());
        assert!(dot_i8_packed(&[0; 4], &out, 0, &mut [0; 9]).is_err());
        assert!(pv_i8_packed(&[40000], &out, 2, 4, 0, 0, &mut [0; 4]).is_err());
        assert!(pv_i8_packed(&[1, 1], &out, 2, 4, 1, 0, &mut [0; 4]).is_err());
    }
}
