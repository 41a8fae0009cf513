//! The packed int8 KV cache: `int8_sdpa_packed_kv` must give the bytes of `int8_sdpa` over the
//! same keys and values in row-major form (which `tests/int8.rs` checks against f64), for
//! every decode step of a growing cache, with masks whose key runs start anywhere (the packed
//! groups of four keys and pairs of rows are then entered in the middle), biases, value
//! widths past the 64-column partial sums, and bad input.

use microattn::attention::int8::{
    int8_packed_kv_words, int8_sdpa, int8_sdpa_packed_kv, int8_sdpa_scratch_len, Int8Bias,
    Int8PackedKv, Int8Scales, Int8SdpaParams,
};
use microattn::attention::{AttentionShape, Bias, Score};
use microattn::mask::{Mask, MaskTerm};
use microattn::Error;

/// xorshift64 bytes over the whole int8 range.
struct Rng(u64);

impl Rng {
    fn bytes(&mut self, n: usize) -> Vec<i8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                (self.0 >> 24) as u8 as i8
            })
            .collect()
    }
}

fn scales(scale: f32) -> Int8Scales {
    Int8Scales {
        q: scale,
        k: scale,
        v: 0.01,
        out: 0.009,
    }
}

/// Grows a cache of `lk` rows one push at a time; after each push, attends `lq` query rows
/// (the last positions: the mask's offset is `keys - lq`) over it and compares with
/// `int8_sdpa` on the row-major keys and values so far.
fn check_growing(
    lq: usize,
    lk: usize,
    d: usize,
    dv: usize,
    terms: &[MaskTerm<'_>],
    bias: Int8Bias<'_>,
) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (lk * 31 + d * 7 + dv) as u64);
    let (k, v) = (rng.bytes(lk * d), rng.bytes(lk * dv));
    let mut storage = vec![0u32; int8_packed_kv_words(lk, d, dv)];
    let mut cache = Int8PackedKv::new(&mut storage, lk, d, dv).unwrap();
    for n in 1..=lk {
        let mask = Mask::new(terms).with_offset(n.saturating_sub(lq));
        let params = Int8SdpaParams::new(scales(0.02), d, Score::Dot, None, mask, bias).unwrap();
        cache
            .push(&k[(n - 1) * d..n * d], &v[(n - 1) * dv..n * dv])
            .unwrap();
        let q = rng.bytes(lq * d);
        let shape = AttentionShape::single(lq, n, d, dv);
        let mut scratch = vec![0i64; int8_sdpa_scratch_len(shape)];
        let (mut got, mut want) = (vec![0i8; lq * dv], vec![0i8; lq * dv]);
        int8_sdpa_packed_kv(&q, &cache, &mut got, &params, &mut scratch).unwrap();
        int8_sdpa(
            &q,
            &k[..n * d],
            &v[..n * dv],
            &mut want,
            shape,
            &params,
            &mut scratch,
        )
        .unwrap();
        assert_eq!(got, want, "lq {lq} keys {n} d {d} dv {dv}");
    }
    assert_eq!(cache.len(), lk);
    assert_eq!(cache.push(&k[..d], &v[..dv]), Err(Error::CacheFull));
}

#[test]
fn decode_steps_match_int8_sdpa() {
    check_growing(1, 70, 64, 64, &[], Int8Bias::None);
    check_growing(1, 37, 16, 12, &[], Int8Bias::None);
    check_growing(3, 9, 4, 68, &[], Int8Bias::None);
}

#[test]
fn masks_starting_inside_groups_match_int8_sdpa() {
    let window = [MaskTerm::Sliding { left: 5, right: 0 }];
    let dilated = [MaskTerm::Dilated {
        left: 9,
        right: 0,
        dilation: 3,
    }];
    let causal = [MaskTerm::Causal];
    check_growing(1, 67, 32, 8, &window, Int8Bias::None);
    check_growing(2, 41, 8, 20, &dilated, Int8Bias::None);
    check_growing(3, 30, 12, 8, &causal, Int8Bias::None);
    // Two query rows at the end of the cache: the first sees one key fewer.
    for lk in [2usize, 7, 66] {
        let mut rng = Rng(lk as u64 + 1);
        let (d, dv, lq) = (8, 8, 2);
        let (k, v, q) = (rng.bytes(lk * d), rng.bytes(lk * dv), rng.bytes(lq * d));
        let mut storage = vec![0u32; int8_packed_kv_words(lk, d, dv)];
        let mut cache = Int8PackedKv::new(&mut storage, lk, d, dv).unwrap();
        for (kr, vr) in k.chunks(d).zip(v.chunks(dv)) {
            cache.push(kr, vr).unwrap();
        }
        let mask = Mask::new(&causal).with_offset(lk - lq);
        let params =
            Int8SdpaParams::new(scales(0.03), d, Score::Dot, None, mask, Int8Bias::None).unwrap();
        let shape = AttentionShape::single(lq, lk, d, dv);
        let mut scratch = vec![0i64; dv];
        let (mut got, mut want) = (vec![0i8; lq * dv], vec![0i8; lq * dv]);
        int8_sdpa_packed_kv(&q, &cache, &mut got, &params, &mut scratch).unwrap();
        int8_sdpa(&q, &k, &v, &mut want, shape, &params, &mut scratch).unwrap();
        assert_eq!(got, want, "causal offset, {lk} keys");
    }
}

#[test]
fn alibi_bias_matches_int8_sdpa() {
    let slopes = [0.25f32];
    let bias = Bias::Alibi { slopes: &slopes };
    let mut storage = vec![0i32; Int8Bias::storage_len(&bias)];
    let mut thresholds = vec![0u32; Int8Bias::t5_threshold_count(&bias)];
    let bias = Int8Bias::from_bias(&bias, 1, &mut storage, &mut thresholds).unwrap();
    check_growing(2, 23, 12, 16, &[], bias);
}

#[test]
fn clear_empties_the_cache() {
    let (d, dv) = (4, 4);
    let mut storage = vec![0u32; int8_packed_kv_words(3, d, dv)];
    let mut cache = Int8PackedKv::new(&mut storage, 3, d, dv).unwrap();
    cache.push(&[1; 4], &[2; 4]).unwrap();
    cache.push(&[3; 4], &[4; 4]).unwrap();
    cache.clear();
    assert!(cache.is_empty());
    cache.push(&[5, 6, 7, 8], &[9, 10, 11, 12]).unwrap();
    let params = Int8SdpaParams::new(
        scales(0.02),
        d,
        Score::Dot,
        None,
        Mask::NONE,
        Int8Bias::None,
    )
    .unwrap();
    let (mut got, mut want) = ([0i8; 4], [0i8; 4]);
    let q = [7i8, -3, 2, 1];
    int8_sdpa_packed_kv(&q, &cache, &mut got, &params, &mut [0; 4]).unwrap();
    let shape = AttentionShape::single(1, 1, d, dv);
    int8_sdpa(
        &q,
        &[5, 6, 7, 8],
        &[9, 10, 11, 12],
        &mut want,
        shape,
        &params,
        &mut [0; 4],
    )
    .unwrap();
    assert_eq!(got, want);
}

#[test]
fn bad_input_is_an_error() {
    let mut storage = vec![0u32; int8_packed_kv_words(4, 8, 8)];
    assert_eq!(
        Int8PackedKv::new(&mut storage, 4, 6, 8).unwrap_err(),
        Error::InvalidParameter
    );
    assert_eq!(
        Int8PackedKv::new(&mut storage, 0, 8, 8).unwrap_err(),
        Error::InvalidParameter
    );
    assert!(matches!(
        Int8PackedKv::new(&mut storage[..10], 4, 8, 8),
        Err(Error::LengthMismatch { .. })
    ));
    let mut cache = Int8PackedKv::new(&mut storage, 4, 8, 8).unwrap();
    assert!(matches!(
        cache.push(&[0; 7], &[0; 8]),
        Err(Error::LengthMismatch { .. })
    ));
    let params = Int8SdpaParams::new(
        scales(0.02),
        8,
        Score::Dot,
        None,
        Mask::NONE,
        Int8Bias::None,
    )
    .unwrap();
    let mut out = [0i8; 8];
    // Empty cache.
    assert_eq!(
        int8_sdpa_packed_kv(&[0; 8], &cache, &mut out, &params, &mut [0; 8]),
        Err(Error::InvalidParameter)
    );
    cache.push(&[1; 8], &[1; 8]).unwrap();
    assert!(int8_sdpa_packed_kv(&[0; 7], &cache, &mut out, &params, &mut [0; 8]).is_err());
    assert!(int8_sdpa_packed_kv(&[0; 8], &cache, &mut out[..4], &params, &mut [0; 8]).is_err());
    assert!(matches!(
        int8_sdpa_packed_kv(&[0; 8], &cache, &mut out, &params, &mut [0; 7]),
        Err(Error::ScratchTooSmall { .. })
    ));
    // Scores other than the dot product read int8 rows the cache does not keep.
    let cosine = Int8SdpaParams::new(
        scales(0.02),
        8,
        Score::Cosine,
        None,
        Mask::NONE,
        Int8Bias::None,
    )
    .unwrap();
    assert_eq!(
        int8_sdpa_packed_kv(&[0; 8], &cache, &mut out, &cosine, &mut [0; 8]),
        Err(Error::InvalidParameter)
    );
}
