//! `par::sdpa_par` (feature `rayon`) gives the bits of the serial `sdpa`, on pools of 1, 2
//! and 3 threads, for MHA, GQA and MQA head layouts, blocked (many query rows) and per-row
//! (decode) paths, masks and per-head biases; and it rejects what `sdpa` rejects.
#![cfg(feature = "rayon")]

use microattn::attention::{sdpa, AttentionShape, Bias, SdpaParams};
use microattn::mask::{Mask, MaskTerm};
use microattn::par::sdpa_par;
use microattn::Error;

fn inputs(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
}

#[test]
fn sdpa_par_equals_serial() {
    let causal = [MaskTerm::Causal];
    let shapes = [
        AttentionShape::multi_head(8, 8, 40, 70, 64, 64),
        AttentionShape::multi_head(8, 2, 1, 300, 64, 32),
        AttentionShape::multi_head(6, 1, 33, 17, 20, 24),
        AttentionShape::multi_head(3, 3, 64, 64, 16, 16),
        AttentionShape::single(9, 9, 8, 8),
    ];
    for (i, &shape) in shapes.iter().enumerate() {
        let (ql, kl, vl, ol) = shape.lengths().expect("valid shape");
        let (q, k, v) = (
            inputs(ql, 3 * i as u64 + 1),
            inputs(kl, 3 * i as u64 + 2),
            inputs(vl, 3 * i as u64 + 3),
        );
        let slopes: Vec<f32> = (0..shape.heads)
            .map(|h| 0.5f32.powi(h as i32 + 1))
            .collect();
        let table = inputs(shape.heads * 8, 99);
        let biases = [
            Bias::None,
            Bias::Alibi { slopes: &slopes },
            Bias::T5 {
                bidirectional: true,
                num_buckets: 8,
                max_distance: 16,
                table: &table,
            },
        ];
        for mask in [
            Mask::NONE,
            Mask::new(&causal).with_offset(shape.lk.saturating_sub(shape.lq)),
        ] {
            for bias in biases {
                let params = SdpaParams {
                    mask,
                    bias,
                    ..Default::default()
                };
                let mut serial = vec![0.0f32; ol];
                sdpa(&q, &k, &v, &mut serial, shape, &params).expect("valid call");
                assert!(serial.iter().any(|&x| x != 0.0));
                for threads in [1, 2, 3] {
                    let mut parallel = vec![f32::NAN; ol];
                    pool(threads)
                        .install(|| sdpa_par(&q, &k, &v, &mut parallel, shape, &params))
                        .expect("valid call");
                    let same = serial
                        .iter()
                        .zip(&parallel)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "shape {i}, {threads} threads, bias {bias:?}");
                }
            }
        }
    }
}

#[test]
fn sdpa_par_rejects_what_sdpa_rejects() {
    let shape = AttentionShape::multi_head(4, 2, 3, 5, 8, 8);
    let (ql, kl, vl, ol) = shape.lengths().expect("valid shape");
    let (q, k, v) = (inputs(ql, 1), inputs(kl, 2), inputs(vl, 3));
    let mut out = vec![0.0f32; ol];
    let short = &k[..kl - 1];
    let e1 = sdpa(&q, short, &v, &mut out, shape, &SdpaParams::default());
    let e2 = sdpa_par(&q, short, &v, &mut out, shape, &SdpaParams::default());
    assert!(e1.is_err());
    assert_eq!(e1, e2);
    let bad_heads = AttentionShape::multi_head(4, 3, 3, 5, 8, 8);
    assert!(sdpa_par(&q, &k, &v, &mut out, bad_heads, &SdpaParams::default()).is_err());
    let slopes = [1.0f32; 3];
    let params = SdpaParams {
        bias: Bias::Alibi { slopes: &slopes },
        ..Default::default()
    };
    assert_eq!(
        sdpa_par(&q, &k, &v, &mut out, shape, &params),
        Err(Error::InvalidBias)
    );
}
