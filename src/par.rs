//! Heads in parallel on a `rayon` thread pool (feature `rayon`, which implies `std`).
//!
//! [`sdpa_par`] splits a multi-head call into one task per query head and runs each as a
//! single-head [`sdpa`] call on the key/value head it reads (MHA, GQA or MQA), with its
//! slice of a per-head bias. Heads are
//! independent in [`sdpa`], so the output is bit-identical to the serial call. It runs on the
//! current rayon pool: `ThreadPool::install` (or `RAYON_NUM_THREADS`) sets the threads.

use crate::attention::{sdpa, AttentionShape, Bias, SdpaParams};
use crate::error::{check_len, Error};
use rayon::prelude::*;

/// [`sdpa`] with the query heads spread over the rayon pool (one task per head).
/// Same arguments, errors and result bits as [`sdpa`].
///
/// ```
/// use microattn::attention::{sdpa, AttentionShape, SdpaParams};
/// let shape = AttentionShape::multi_head(4, 2, 3, 5, 8, 8);
/// let (ql, kl, vl, ol) = shape.lengths()?;
/// let q: Vec<f32> = (0..ql).map(|i| (i as f32 * 0.37).sin()).collect();
/// let k: Vec<f32> = (0..kl).map(|i| (i as f32 * 0.11).cos()).collect();
/// let v: Vec<f32> = (0..vl).map(|i| i as f32 * 0.01).collect();
/// let (mut serial, mut parallel) = (vec![0.0; ol], vec![0.0; ol]);
/// sdpa(&q, &k, &v, &mut serial, shape, &SdpaParams::default())?;
/// microattn::par::sdpa_par(&q, &k, &v, &mut parallel, shape, &SdpaParams::default())?;
/// assert_eq!(serial, parallel);
/// # Ok::<(), microattn::Error>(())
/// ```
pub fn sdpa_par(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    shape: AttentionShape,
    params: &SdpaParams<'_>,
) -> Result<(), Error> {
    let (q_len, k_len, v_len, out_len) = shape.lengths()?;
    check_len(q, q_len)?;
    check_len(k, k_len)?;
    check_len(v, v_len)?;
    if out.len() != out_len {
        return Err(Error::LengthMismatch {
            expected: out_len,
            found: out.len(),
        });
    }
    params.validate(&shape)?;
    let AttentionShape {
        heads,
        kv_heads,
        lq,
        lk,
        d,
        dv,
    } = shape;
    // Validated: nonzero dimensions, `kv_heads` divides `heads`.
    let group = heads / kv_heads;
    let head_shape = AttentionShape::single(lq, lk, d, dv);
    let (k_head, v_head) = (lk * d, lk * dv);
    let tasks = q
        .par_chunks(lq * d)
        .zip(out.par_chunks_mut(lq * dv))
        .enumerate();
    tasks.try_for_each(|(h, (q_h, out_h))| {
        // Query head `h` reads KV head `h / group` (in bounds: lengths checked above).
        let kvh = h / group;
        let k_h = k.get(kvh * k_head..(kvh + 1) * k_head).unwrap_or_default();
        let v_h = v.get(kvh * v_head..(kvh + 1) * v_head).unwrap_or_default();
        let params = SdpaParams {
            bias: head_bias(params.bias, h),
            ..*params
        };
        sdpa(q_h, k_h, v_h, out_h, head_shape, &params)
    })
}

/// The bias of query head `h` alone (validated for all heads).
fn head_bias(bias: Bias<'_>, h: usize) -> Bias<'_> {
    match bias {
        Bias::None => Bias::None,
        Bias::Alibi { slopes } => Bias::Alibi {
            slopes: slopes.get(h..h + 1).unwrap_or_default(),
        },
        Bias::T5 {
            bidirectional,
            num_buckets,
            max_distance,
            table,
        } => Bias::T5 {
            bidirectional,
            num_buckets,
            max_distance,
            table: table
                .get(h * num_buckets..(h + 1) * num_buckets)
                .unwrap_or_default(),
        },
    }
}
