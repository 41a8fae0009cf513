//! The int8 model file the firmware embeds, `models/stories260K/stories260K_q8.bin`, is
//! exactly what the host writes (`cargo run --release --example stories -- --int8 --write-q8
//! FILE`, default grouping and KV calibration): regenerating it here gives the same bytes, so
//! the firmware's greedy tokens can be compared with the host's int8 path
//! (`scripts/qemu-stories`). Also: read in place, the file generates run.c's first greedy
//! tokens.

use microattn::models::generate::Generation;
use microattn::models::llama2::{Llama2, RunState};
use microattn::models::q8::{self, Llama2Q8, Q8RunState};
use microattn::models::sampler::Sampler;
use microattn::models::Align4;
use serde_json::Value;

static MODEL: &Align4<[u8]> = &Align4(*include_bytes!("../models/stories260K/stories260K.bin"));
static Q8_FILE: &Align4<[u8]> =
    &Align4(*include_bytes!("../models/stories260K/stories260K_q8.bin"));
const REFERENCE: &str = include_str!("../models/stories260K/reference.json");

#[test]
fn checked_in_q8_file_is_what_the_host_writes() {
    // The calibration runs the f32 model: SIMD backends round differently from the scalar
    // code the firmware runs, so the file is defined by the scalar backend.
    #[cfg(feature = "std")]
    microattn::arch::select("scalar").unwrap();
    let model = Llama2::from_bytes(&MODEL.0).unwrap();
    let c = *model.config();
    let group = q8::DEFAULT_GROUP;
    // As examples/stories.rs: calibration on the f32 model's own samples, then the file.
    let steps = c.seq_len.min(q8::CALIBRATION_STEPS);
    let mut buffer = vec![0.0f32; RunState::buffer_len(&c, steps)];
    let mut state = RunState::new(&c, steps, &mut buffer).unwrap();
    let mut kv_scales = vec![0.0f32; q8::kv_scales_len(&c)];
    q8::calibrate_kv_scales(
        &model,
        &mut state,
        q8::CALIBRATION_SEED,
        steps,
        q8::DEFAULT_KV_MARGIN,
        &mut kv_scales,
    )
    .unwrap();
    let mut values = vec![0i8; q8::values_len(&c)];
    let mut scales = vec![0.0f32; q8::scales_len(&c, group)];
    let mut file = vec![0u8; q8::file_len(&c, group)];
    let n = q8::write_file(
        &model,
        group,
        &kv_scales,
        &mut values,
        &mut scales,
        &mut file,
    )
    .unwrap();
    assert_eq!(n, file.len());
    assert_eq!(Q8_FILE.0.len(), file.len(), "file length");
    let first_difference = Q8_FILE.0.iter().zip(&file).position(|(a, b)| a != b);
    assert_eq!(
        first_difference, None,
        "models/stories260K/stories260K_q8.bin differs from the regenerated file \
         (rewrite it with the example's --int8 --write-q8)"
    );
}

#[test]
fn q8_file_read_in_place_generates_the_reference_start() {
    let model = Llama2Q8::from_bytes(&Q8_FILE.0).unwrap();
    let c = *model.config();
    let reference: Value = serde_json::from_str(REFERENCE).unwrap();
    let case = &reference["cases"][0];
    assert_eq!(case["prompt"], "");
    let want: Vec<u32> = case["token_ids"].as_array().unwrap()[..33]
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let steps = want.len() - 1;
    let mut f = vec![0.0f32; Q8RunState::f32_len(&c)];
    let mut i = vec![0i8; Q8RunState::i8_len(&c, steps)];
    let mut state = Q8RunState::new(&c, steps, &mut f, &mut i).unwrap();
    let mut sampler = Sampler::new(0.0, 0.9, 1).unwrap();
    let prompt = [want[0]];
    let mut generation = Generation::new(&prompt, steps).unwrap();
    let mut got = vec![want[0]];
    while let Some((token, pos)) = generation.input() {
        let logits = model.forward(&mut state, token, pos).unwrap();
        match generation.accept(logits, &mut sampler, &mut []).unwrap() {
            Some(step) => got.push(step.next),
            None => break,
        }
    }
    // The first 32 greedy tokens of the int8 model are run.c's (see src/models/q8.rs).
    assert_eq!(got, want);
}
