//! stories260K end to end against llama2.c's `run.c`: `models/stories260K/reference.json`
//! holds the greedy token ids, the printed text and the logits of positions 0..3 that
//! `run.c` produced for two prompts. Also: malformed checkpoints and tokenizer files.

use microattn::models::generate::Generation;
use microattn::models::llama2::{Config, Llama2, RunState, HEADER_BYTES};
use microattn::models::q8::{self, Llama2Q8, Q8RunState};
use microattn::models::sampler::Sampler;
use microattn::models::tokenizer::{encode_capacity, printable, Tokenizer, BOS};
use microattn::models::{Align4, ModelError};
use serde_json::Value;

static MODEL: &Align4<[u8]> = &Align4(*include_bytes!("../models/stories260K/stories260K.bin"));
static TOKENIZER: &[u8] = include_bytes!("../models/stories260K/tok512.bin");
const REFERENCE: &str = include_str!("../models/stories260K/reference.json");

/// Logits compared with `run.c` at these positions, max absolute error.
const LOGIT_TOLERANCE: f32 = 1e-4;

/// One reference case of `reference.json`.
struct Case {
    prompt: String,
    steps: usize,
    token_ids: Vec<u32>,
    text: Vec<u8>,
    logits: Vec<Vec<f32>>,
}

fn cases() -> Vec<Case> {
    let v: Value = serde_json::from_str(REFERENCE).unwrap();
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            prompt: c["prompt"].as_str().unwrap().to_owned(),
            steps: c["steps"].as_u64().unwrap() as usize,
            token_ids: c["token_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_u64().unwrap() as u32)
                .collect(),
            text: c["text"].as_str().unwrap().as_bytes().to_vec(),
            logits: c["logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|row| {
                    row.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().unwrap() as f32)
                        .collect()
                })
                .collect(),
        })
        .collect()
}

/// What a greedy run produced: token ids (BOS first), the bytes `run.c` would print, and the
/// logits of every position.
struct Run {
    token_ids: Vec<u32>,
    text: Vec<u8>,
    logits: Vec<Vec<f32>>,
}

fn with_tokenizer<R>(f: impl FnOnce(&Tokenizer) -> R) -> R {
    let mut offsets = [0u32; 512];
    let tok = Tokenizer::new(TOKENIZER, 512, &mut offsets).unwrap();
    f(&tok)
}

fn encode(prompt: &str) -> Vec<u32> {
    with_tokenizer(|tok| {
        let mut tokens = vec![0u32; encode_capacity(prompt.len())];
        let n = tok
            .encode(prompt.as_bytes(), true, false, &mut tokens)
            .unwrap();
        tokens.truncate(n);
        tokens
    })
}

/// `run.c`'s greedy loop over a model given as "logits of (token, pos)".
fn greedy(prompt: &str, steps: usize, mut forward: impl FnMut(u32, usize) -> Vec<f32>) -> Run {
    let prompt_tokens = encode(prompt);
    with_tokenizer(|tok| {
        let mut sampler = Sampler::new(0.0, 0.9, 1).unwrap();
        let mut gen = Generation::new(&prompt_tokens, steps).unwrap();
        let mut run = Run {
            token_ids: vec![prompt_tokens[0]],
            text: Vec::new(),
            logits: Vec::new(),
        };
        while let Some((token, pos)) = gen.input() {
            let mut logits = forward(token, pos);
            run.logits.push(logits.clone());
            let Some(step) = gen.accept(&mut logits, &mut sampler, &mut []).unwrap() else {
                run.token_ids.push(BOS);
                break;
            };
            run.token_ids.push(step.next);
            run.text
                .extend_from_slice(printable(tok.decode(step.prev, step.next)));
        }
        run.text.push(b'\n');
        run
    })
}

fn f32_run(prompt: &str, steps: usize) -> Run {
    let model = Llama2::from_bytes(&MODEL.0).unwrap();
    let mut buffer = vec![0.0f32; RunState::buffer_len(model.config(), steps)];
    let mut state = RunState::new(model.config(), steps, &mut buffer).unwrap();
    greedy(prompt, steps, |token, pos| {
        model.forward(&mut state, token, pos).unwrap().to_vec()
    })
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn header_is_stories260k() {
    let model = Llama2::from_bytes(&MODEL.0).unwrap();
    assert_eq!(*model.config(), Config::STORIES260K);
    assert_eq!(Config::STORIES260K.checkpoint_bytes(), MODEL.0.len());
}

#[test]
fn prompt_encodes_as_run_c() {
    for case in cases() {
        let tokens = encode(&case.prompt);
        assert_eq!(tokens[0], BOS);
        assert_eq!(
            tokens[..],
            case.token_ids[..tokens.len()],
            "prompt {:?}",
            case.prompt
        );
    }
    // The no-prompt case is BOS alone; a prompt decodes back to itself.
    assert_eq!(encode(""), [BOS]);
    for prompt in ["Tom and his dog went to the", "Lily's café: \u{1F600}!\n"] {
        let tokens = encode(prompt);
        let text: Vec<u8> = with_tokenizer(|tok| {
            tokens
                .windows(2)
                .flat_map(|w| tok.decode(w[0], w[1]).to_vec())
                .collect()
        });
        assert_eq!(String::from_utf8(text).unwrap(), prompt);
    }
}

#[test]
fn f32_reproduces_run_c() {
    for case in cases() {
        let run = f32_run(&case.prompt, case.steps);
        assert_eq!(run.token_ids, case.token_ids, "prompt {:?}", case.prompt);
        assert_eq!(
            String::from_utf8_lossy(&run.text),
            String::from_utf8_lossy(&case.text)
        );
        assert_eq!(run.text, case.text);
        for (p, expected) in case.logits.iter().enumerate() {
            let err = max_abs_diff(&run.logits[p], expected);
            println!(
                "prompt {:?} pos {p}: max |logit error| {err:.2e}",
                case.prompt
            );
            assert!(err <= LOGIT_TOLERANCE, "pos {p}: {err}");
        }
    }
}

#[test]
fn words_and_bytes_give_the_same_model() {
    let words: Vec<f32> = MODEL
        .0
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let a = Llama2::from_words(&words).unwrap();
    let b = Llama2::from_bytes(&MODEL.0).unwrap();
    let mut buf_a = vec![0.0f32; RunState::buffer_len(a.config(), 4)];
    let mut buf_b = buf_a.clone();
    let mut sa = RunState::new(a.config(), 4, &mut buf_a).unwrap();
    let mut sb = RunState::new(b.config(), 4, &mut buf_b).unwrap();
    for (pos, token) in [1u32, 403, 407].into_iter().enumerate() {
        let la = a.forward(&mut sa, token, pos).unwrap().to_vec();
        let lb = b.forward(&mut sb, token, pos).unwrap();
        assert_eq!(la, lb);
    }
}

#[test]
fn malformed_checkpoints_are_errors() {
    let bytes = &MODEL.0;
    let needed = bytes.len();
    for len in [0, 4, 27, 28, 1000, needed - 4, needed - 1] {
        assert!(
            matches!(
                Llama2::from_bytes(&bytes[..len]),
                Err(ModelError::Truncated { .. })
            ),
            "len {len}"
        );
    }
    // One byte off a 4-byte boundary.
    let (shifted, start) = copy_at(bytes, 1);
    assert_eq!(
        Llama2::from_bytes(&shifted[start..start + needed]).unwrap_err(),
        ModelError::Misaligned
    );
    // Bad headers: each field zero or negative, heads that do not divide, an odd head size,
    // sizes whose product overflows.
    let header = |v: [i32; 7]| {
        let mut h = [0u8; HEADER_BYTES];
        for (c, x) in h.chunks_exact_mut(4).zip(v) {
            c.copy_from_slice(&x.to_le_bytes());
        }
        h
    };
    let good = [64, 172, 5, 8, 4, 512, 512];
    assert!(Config::from_header(&header(good)).is_ok());
    for field in 0..7 {
        for bad in [0, -1, i32::MIN] {
            let mut v = good;
            v[field] = bad;
            if field == 5 && bad != 0 {
                continue; // a negative vocabulary size means an unshared classifier
            }
            assert_eq!(
                Config::from_header(&header(v)).unwrap_err(),
                ModelError::InvalidConfig,
                "{v:?}"
            );
        }
    }
    for v in [
        [64, 172, 5, 6, 3, 512, 512],                   // 64 % 6 != 0
        [64, 172, 5, 8, 3, 512, 512],                   // 8 % 3 != 0
        [60, 172, 5, 4, 4, 512, 512],                   // head size 15 is odd
        [i32::MAX, i32::MAX, i32::MAX, 2, 2, 512, 512], // overflow
    ] {
        assert_eq!(
            Config::from_header(&header(v)).unwrap_err(),
            ModelError::InvalidConfig,
            "{v:?}"
        );
    }
    // An unshared classifier needs vocab * dim more floats than this file has.
    let (mut copy, start) = copy_at(bytes, 0);
    copy[start + 20..start + 24].copy_from_slice(&(-512i32).to_le_bytes());
    assert!(matches!(
        Llama2::from_bytes(&copy[start..start + needed]),
        Err(ModelError::Truncated { .. })
    ));
}

/// A heap copy of `bytes` that starts `misalign` bytes after a 4-byte boundary: the buffer
/// and the start index.
fn copy_at(bytes: &[u8], misalign: usize) -> (Vec<u8>, usize) {
    let mut buf = vec![0u8; bytes.len() + 8];
    let start = (4 - buf.as_ptr() as usize % 4) % 4 + misalign;
    buf[start..start + bytes.len()].copy_from_slice(bytes);
    (buf, start)
}

#[test]
fn bad_steps_are_errors_not_panics() {
    let model = Llama2::from_bytes(&MODEL.0).unwrap();
    let mut buffer = vec![0.0f32; RunState::buffer_len(model.config(), 2)];
    let mut state = RunState::new(model.config(), 2, &mut buffer).unwrap();
    assert!(matches!(
        model.forward(&mut state, 512, 0),
        Err(ModelError::TokenOutOfRange { .. })
    ));
    assert!(matches!(
        model.forward(&mut state, 1, 2),
        Err(ModelError::PositionOutOfRange { .. })
    ));
    let small = Config {
        n_layers: 1,
        ..Config::STORIES260K
    };
    let mut other = vec![0.0f32; RunState::buffer_len(&small, 2)];
    let mut other_state = RunState::new(&small, 2, &mut other).unwrap();
    assert_eq!(
        model.forward(&mut other_state, 1, 0).unwrap_err(),
        ModelError::StateMismatch
    );
    assert!(matches!(
        RunState::new(model.config(), 2, &mut buffer[..100]),
        Err(ModelError::BufferTooSmall { .. })
    ));
}

/// The int8 model of stories260K: weights in groups of `group`, KV scales calibrated on 256
/// tokens the f32 model samples from seed 42 (not the reference texts).
struct Q8Parts {
    values: Vec<i8>,
    scales: Vec<f32>,
    kv_scales: Vec<f32>,
}

fn q8_parts(group: usize, margin: f32) -> Q8Parts {
    let model = Llama2::from_bytes(&MODEL.0).unwrap();
    let c = *model.config();
    let mut p = Q8Parts {
        values: vec![0; q8::values_len(&c)],
        scales: vec![0.0; q8::scales_len(&c, group)],
        kv_scales: vec![0.0; q8::kv_scales_len(&c)],
    };
    q8::quantize_weights(&model, group, &mut p.values, &mut p.scales).unwrap();
    let mut buffer = vec![0.0f32; RunState::buffer_len(&c, q8::CALIBRATION_STEPS)];
    let mut state = RunState::new(&c, q8::CALIBRATION_STEPS, &mut buffer).unwrap();
    q8::calibrate_kv_scales(
        &model,
        &mut state,
        q8::CALIBRATION_SEED,
        q8::CALIBRATION_STEPS,
        margin,
        &mut p.kv_scales,
    )
    .unwrap();
    p
}

fn q8_run(model: &Llama2Q8, prompt: &str, steps: usize) -> Run {
    let c = *model.config();
    let mut f = vec![0.0f32; Q8RunState::f32_len(&c)];
    let mut i = vec![0i8; Q8RunState::i8_len(&c, steps)];
    let mut state = Q8RunState::new(&c, steps, &mut f, &mut i).unwrap();
    greedy(prompt, steps, |token, pos| {
        model.forward(&mut state, token, pos).unwrap().to_vec()
    })
}

/// Relative L2 error of `a` against `reference`.
fn rel_l2(a: &[f32], reference: &[f32]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (&x, &r) in a.iter().zip(reference) {
        num += (x as f64 - r as f64).powi(2);
        den += (r as f64).powi(2);
    }
    (num / den).sqrt()
}

/// Agreement of an int8 run with the f32 reference: identical leading tokens, share of
/// identical tokens position by position, and the logit errors at positions 0..3.
fn q8_agreement(run: &Run, case: &Case) -> (usize, f64, f32, f64) {
    let ids = &case.token_ids;
    let prefix = run
        .token_ids
        .iter()
        .zip(ids)
        .take_while(|(a, b)| a == b)
        .count();
    let same = run
        .token_ids
        .iter()
        .zip(ids)
        .filter(|(a, b)| a == b)
        .count();
    let share = same as f64 / ids.len() as f64;
    let mut max_abs = 0.0f32;
    let mut worst_rel = 0.0f64;
    for (p, expected) in case.logits.iter().enumerate() {
        max_abs = max_abs.max(max_abs_diff(&run.logits[p], expected));
        worst_rel = worst_rel.max(rel_l2(&run.logits[p], expected));
    }
    (prefix, share, max_abs, worst_rel)
}

#[test]
fn int8_keeps_the_first_32_greedy_tokens() {
    let f32_model = Llama2::from_bytes(&MODEL.0).unwrap();
    let parts = q8_parts(q8::DEFAULT_GROUP, q8::DEFAULT_KV_MARGIN);
    let model = Llama2Q8::new(
        &f32_model,
        q8::DEFAULT_GROUP,
        &parts.values,
        &parts.scales,
        &parts.kv_scales,
    )
    .unwrap();
    for case in cases() {
        let run = q8_run(&model, &case.prompt, case.steps);
        let (prefix, share, max_abs, rel) = q8_agreement(&run, &case);
        // BOS and the prompt are forced; the greedy tokens start after them.
        let greedy_same = prefix - encode(&case.prompt).len();
        println!(
            "int8 prompt {:?}: first {greedy_same} greedy tokens identical to f32, {:.1}% of \
             all {} ids identical by position; logits at positions 0..3: max abs error \
             {max_abs:.3}, worst rel L2 {rel:.2e}",
            case.prompt,
            100.0 * share,
            case.token_ids.len(),
        );
        assert!(
            greedy_same >= 32,
            "only {greedy_same} greedy tokens identical"
        );
        // int8 weights and activations alone give ~2 % (see measure_int8_grouping).
        assert!(rel < 0.05, "logit rel L2 {rel}");
    }
}

#[test]
fn int8_file_round_trip_runs_the_same_model() {
    let f32_model = Llama2::from_bytes(&MODEL.0).unwrap();
    let c = *f32_model.config();
    let mut parts = q8_parts(32, q8::DEFAULT_KV_MARGIN);
    let len = q8::file_len(&c, 32);
    let (mut file, start) = copy_at(&vec![0u8; len], 0);
    let bytes = &mut file[start..start + len];
    let (mut values, mut scales) = (parts.values.clone(), parts.scales.clone());
    q8::write_file(
        &f32_model,
        32,
        &parts.kv_scales,
        &mut values,
        &mut scales,
        bytes,
    )
    .unwrap();
    let from_file = Llama2Q8::from_bytes(bytes).unwrap();
    let in_memory = Llama2Q8::new(
        &f32_model,
        32,
        &parts.values,
        &parts.scales,
        &parts.kv_scales,
    )
    .unwrap();
    let a = q8_run(&from_file, "Tom and his dog", 40);
    let b = q8_run(&in_memory, "Tom and his dog", 40);
    assert_eq!(a.token_ids, b.token_ids);
    assert_eq!(a.logits, b.logits);
    // Truncated, misaligned or mislabelled files are errors.
    assert!(matches!(
        Llama2Q8::from_bytes(&bytes[..bytes.len() - 1]),
        Err(ModelError::Truncated { .. })
    ));
    bytes[0] = b'X';
    assert_eq!(
        Llama2Q8::from_bytes(bytes).unwrap_err(),
        ModelError::InvalidConfig
    );
    parts.kv_scales[0] = 0.0;
    assert!(Llama2Q8::new(
        &f32_model,
        32,
        &parts.values,
        &parts.scales,
        &parts.kv_scales
    )
    .is_err());
}

/// Weight grouping and KV margin against agreement with f32: prints a table (run with
/// `--ignored --nocapture`); the chosen setting must reach the goal.
#[test]
#[ignore = "measurement sweep, about 10 s"]
fn measure_int8_grouping() {
    let f32_model = Llama2::from_bytes(&MODEL.0).unwrap();
    let c = *f32_model.config();
    let cases = cases();
    for margin in [1.0f32, 1.25, 1.5, 2.0] {
        for group in [8usize, 16, 32, 64, 256] {
            let parts = q8_parts(group, margin);
            let model = Llama2Q8::new(
                &f32_model,
                group,
                &parts.values,
                &parts.scales,
                &parts.kv_scales,
            )
            .unwrap();
            let mut line = format!(
                "margin {margin:4} group {group:3} ({:6} weight bytes + {:5} scale bytes):",
                q8::values_len(&c),
                4 * q8::scales_len(&c, group)
            );
            for case in &cases {
                let run = q8_run(&model, &case.prompt, case.steps);
                let (prefix, share, max_abs, rel) = q8_agreement(&run, case);
                let forced = encode(&case.prompt).len();
                if group == q8::DEFAULT_GROUP && margin == q8::DEFAULT_KV_MARGIN {
                    assert!(prefix - forced >= 32, "the default setting misses the goal");
                }
                line += &format!(
                    "  [{} greedy tokens same, {:.0}% by position, logit err {max_abs:.2} / {rel:.1e}]",
                    prefix - forced,
                    100.0 * share
                );
            }
            println!("{line}");
        }
    }
}
