//! `KvCache` (f32): `new` over storage of any length, a sequence of `append`s (wrong row
//! lengths, a full linear cache, a ring wrapping around several times) and a decode step
//! `attend` with any head count, score, mask and bias.
//!
//! Checks: no panic; `Err` exactly when a documented precondition fails (the cache unchanged
//! by a failed append); finite output for finite inputs; and the output against the f64
//! attention of the query over the tokens the cache holds — every appended token at its
//! position for a linear cache (mask and bias in absolute positions, the query at the last
//! position), the last `capacity` tokens for a ring (its window) — within the derived bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use microattn::attention::SdpaParams;
use microattn::kv_cache::{CacheMode, KvCache, KvShape};
use microattn::mask::Mask;
use microattn::Error;
use microattn_fuzz::*;

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let (kv_heads, capacity, d, dv) = (input.dim(3), input.dim(8), input.dim(5), input.dim(4));
    let ring = input.bool();
    let mode = if ring {
        CacheMode::Ring
    } else {
        CacheMode::Linear
    };
    let shape = KvShape::new(kv_heads, capacity, d, dv);
    let k_expected = product(&[kv_heads, capacity, d]);
    let v_expected = product(&[kv_heads, capacity, dv]);
    let (k_len, v_len) = (input.len(k_expected), input.len(v_expected));
    let mut k_store = vec![f32::NAN; k_len];
    let mut v_store = vec![f32::NAN; v_len];

    let mut exp = Expected::default();
    exp.check(
        [kv_heads, capacity, d, dv].contains(&0),
        Error::ZeroDimension,
    );
    check_len(&mut exp, k_len, k_expected);
    check_len(&mut exp, v_len, v_expected);
    let cache = KvCache::new(&mut k_store, &mut v_store, shape, mode);
    if !exp.assert(&cache, "KvCache::new") {
        return;
    }
    let Ok(mut cache) = cache else { return };

    // Appends, with a model of what the cache holds: (keys, values) per token.
    let mut tokens: Vec<(Vec<f32>, Vec<f32>)> = Vec::new();
    let appends = input.below(2 * capacity + 3);
    for _ in 0..appends {
        let k = input.values_for(Some(kv_heads * d));
        let v = input.values_for(Some(kv_heads * dv));
        let mut exp = Expected::default();
        check_len(&mut exp, k.len(), Some(kv_heads * d));
        check_len(&mut exp, v.len(), Some(kv_heads * dv));
        exp.check(!ring && tokens.len() == capacity, Error::CacheFull);
        let result = cache.append(&k, &v);
        if exp.assert(&result, "KvCache::append") {
            tokens.push((k, v));
        }
        assert_eq!(cache.next_position(), tokens.len() as u64, "token count");
    }
    let held = tokens.len().min(capacity);
    assert_eq!(cache.len(), held, "KvCache::len");

    // The decode step.
    let heads = if input.bool() {
        kv_heads * (1 + input.below(3))
    } else {
        input.dim(6)
    };
    let mut spec = SdpaSpec::generate(&mut input, heads);
    let q_len = input.len(product(&[heads, d]));
    let out_len = input.len(product(&[heads, dv]));
    let scratch_len = input.len(Some(dv));
    let q = input.values(q_len);
    let terms = spec.mask.terms();
    let params = SdpaParams {
        scale: spec.scale,
        score: spec.score,
        mask: Mask::new(&terms),
        bias: spec.bias.bias(),
    };

    let mut exp = Expected::default();
    exp.check(heads == 0 || held == 0, Error::ZeroDimension);
    exp.check(
        heads != 0 && !heads.is_multiple_of(kv_heads),
        Error::HeadsMismatch,
    );
    check_len(&mut exp, q_len, product(&[heads, d]));
    check_len(&mut exp, out_len, product(&[heads, dv]));
    exp.check(!spec.resolved_scale(d).is_finite(), Error::InvalidScale);
    if !ring {
        exp.check(!spec.mask.is_valid(), Error::InvalidMask);
    }
    if !spec.bias.is_valid(heads) {
        exp.fail(Error::InvalidBias);
        exp.fail(Error::ShapeOverflow);
    }
    if ring {
        // The ring implements only the window it is: None, Causal, Sliding with its left.
        let window_terms = spec.mask.terms.iter().all(|t| match t {
            TermSpec::None | TermSpec::Causal => true,
            TermSpec::Sliding(left, _) => *left == capacity - 1,
            _ => false,
        });
        exp.check(!window_terms, Error::InvalidMask);
        if !spec.mask.is_valid() {
            // The ring replaces the terms by its window: it may not look at them further.
            exp.allow(Error::InvalidMask);
        }
        exp.check(!matches!(spec.bias, BiasSpec::None), Error::InvalidBias);
    }
    exp.check(
        scratch_len < dv,
        Error::ScratchTooSmall {
            needed: dv,
            found: scratch_len,
        },
    );
    let mut out = vec![f32::NAN; out_len];
    let mut scratch = vec![0.0f32; scratch_len];
    let result = cache.attend(&q, &mut out, heads, &params, &mut scratch);
    if !exp.assert(&result, "KvCache::attend") {
        return;
    }

    // The held tokens in slot order: all of them (linear), or the last `capacity` at slot
    // `t % capacity` (ring).
    let first = tokens.len() - held;
    let mut slots: Vec<usize> = (first..tokens.len()).collect();
    if ring {
        slots.sort_by_key(|&t| t % capacity);
    }
    let mut k = vec![0.0f64; kv_heads * held * d];
    let mut v = vec![0.0f64; kv_heads * held * dv];
    for (s, &t) in slots.iter().enumerate() {
        for g in 0..kv_heads {
            for c in 0..d {
                k[(g * held + s) * d + c] = tokens[t].0[g * d + c] as f64;
            }
            for c in 0..dv {
                v[(g * held + s) * dv + c] = tokens[t].1[g * dv + c] as f64;
            }
        }
    }
    let kf: Vec<f32> = k.iter().map(|&x| x as f32).collect();
    let vf: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    let inputs_finite = finite(&q) && finite(&kf) && finite(&vf) && spec.bias.finite();
    if !inputs_finite || !sdpa_output_must_be_finite(held, max_abs(&vf)) {
        return;
    }
    assert!(finite(&out), "KvCache::attend: non-finite output {out:?}");
    if input.wild() {
        return;
    }
    if ring {
        // Every held token is in the window: no mask, no bias.
        spec.mask.terms.clear();
        spec.mask.offset = 0;
    } else {
        // The query is the last token: position held - 1 (= tokens - 1).
        spec.mask.offset = held as i64 - 1;
    }
    let dims = Dims {
        heads,
        kv_heads,
        lq: 1,
        lk: held,
        d,
        dv,
    };
    let qf: Vec<f64> = q.iter().map(|&x| x as f64).collect();
    let rows = sdpa_reference(dims, &spec, &qf, &k, &v);
    for (h, (row, r)) in out.chunks_exact(dv).zip(&rows).enumerate() {
        assert_row(row, r, 0.0, &format!("KvCache::attend head {h}"));
    }
}
