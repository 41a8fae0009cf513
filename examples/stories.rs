//! Generates a story with Karpathy's stories260K, printing it as llama2.c's `run.c` does:
//! the same bytes on stdout for temperature 0, flushed token by token, and the speed on
//! stderr.
//!
//! ```text
//! cargo run --release --example stories -- [--prompt TEXT] [--steps N] [--temperature T]
//!     [--topp P] [--seed S] [--int8] [--group G] [--checkpoint FILE] [--tokenizer FILE]
//!     [--write-q8 FILE] [--print-ids]
//! ```
//!
//! Defaults as `run.c`: 256 steps, temperature 1.0, top-p 0.9, the time as seed. The model
//! and tokenizer are built into the binary (`models/stories260K/`) unless files are given.
//! `--int8` quantizes the weights to int8 in groups of `G` (default 32) inputs per row and
//! runs the int8 path (int8 matmuls, int8 KV cache with scales calibrated on 256 tokens the
//! f32 model samples itself, int8 attention); `--write-q8 FILE` also saves that int8 model
//! for firmware (`Llama2Q8::from_bytes`). `--print-ids` ends stdout with a line `ids: 1 403
//! ...`: every token of the sequence (BOS, the prompt, the generated tokens), which
//! `scripts/qemu-stories` compares with the firmware's.

use microattn::models::generate::Generation;
use microattn::models::llama2::{Llama2, RunState};
use microattn::models::q8::{self, Llama2Q8, Q8RunState};
use microattn::models::sampler::{ProbIndex, Sampler};
use microattn::models::tokenizer::{encode_capacity, printable, Tokenizer};
use microattn::models::{Align4, ModelError};
use std::io::Write;
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

static MODEL: &Align4<[u8]> = &Align4(*include_bytes!("../models/stories260K/stories260K.bin"));
static TOKENIZER: &[u8] = include_bytes!("../models/stories260K/tok512.bin");

/// Command-line options.
struct Options {
    prompt: String,
    steps: usize,
    temperature: f32,
    topp: f32,
    seed: u64,
    int8: bool,
    group: usize,
    checkpoint: Option<String>,
    tokenizer: Option<String>,
    write_q8: Option<String>,
    print_ids: bool,
}

fn usage() -> String {
    "usage: stories [--prompt TEXT] [--steps N] [--temperature T] [--topp P] [--seed S] \
     [--int8] [--group G] [--checkpoint FILE] [--tokenizer FILE] [--write-q8 FILE] \
     [--print-ids]"
        .to_owned()
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        prompt: String::new(),
        steps: 256,
        temperature: 1.0,
        topp: 0.9,
        seed: 0,
        int8: false,
        group: q8::DEFAULT_GROUP,
        checkpoint: None,
        tokenizer: None,
        write_q8: None,
        print_ids: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--int8" {
            o.int8 = true;
            continue;
        }
        if flag == "--print-ids" {
            o.print_ids = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            return Err(usage());
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{}", usage()))?;
        let bad = format!("bad value for {flag}: {value:?}");
        match flag.as_str() {
            "--prompt" => o.prompt = value.clone(),
            "--steps" => o.steps = value.parse().map_err(|_| bad.clone())?,
            "--temperature" => o.temperature = value.parse().map_err(|_| bad.clone())?,
            "--topp" => o.topp = value.parse().map_err(|_| bad.clone())?,
            "--seed" => o.seed = value.parse().map_err(|_| bad.clone())?,
            "--group" => o.group = value.parse().map_err(|_| bad.clone())?,
            "--checkpoint" => o.checkpoint = Some(value.clone()),
            "--tokenizer" => o.tokenizer = Some(value.clone()),
            "--write-q8" => o.write_q8 = Some(value.clone()),
            _ => return Err(format!("unknown option {flag}\n{}", usage())),
        }
    }
    if o.seed == 0 {
        // As run.c: no seed means the time (a zero state would never change).
        o.seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_secs().max(1));
    }
    Ok(o)
}

/// A model of either precision with its run state, behind one `forward`.
enum Engine<'m, 's> {
    F32(&'m Llama2<'m>, RunState<'s>),
    Int8(&'m Llama2Q8<'m>, Q8RunState<'s>),
}

impl Engine<'_, '_> {
    fn forward(&mut self, token: u32, pos: usize) -> Result<&mut [f32], ModelError> {
        match self {
            Engine::F32(m, s) => m.forward(s, token, pos),
            Engine::Int8(m, s) => m.forward(s, token, pos),
        }
    }
}

fn run(o: &Options) -> Result<(), String> {
    // Files given on the command line are read into f32 words, which need no alignment.
    let words: Vec<f32>;
    let model = match &o.checkpoint {
        None => Llama2::from_bytes(&MODEL.0),
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
            words = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            Llama2::from_words(&words)
        }
    }
    .map_err(|e| format!("checkpoint: {e}"))?;
    let tokenizer_file = match &o.tokenizer {
        None => TOKENIZER.to_vec(),
        Some(path) => std::fs::read(path).map_err(|e| format!("{path}: {e}"))?,
    };
    let config = *model.config();
    let mut offsets = vec![0u32; config.vocab_size];
    let tokenizer = Tokenizer::new(&tokenizer_file, config.vocab_size, &mut offsets)
        .map_err(|e| format!("tokenizer: {e}"))?;

    let steps = if o.steps == 0 || o.steps > config.seq_len {
        config.seq_len
    } else {
        o.steps
    };
    let mut prompt = vec![0u32; encode_capacity(o.prompt.len())];
    let n = tokenizer
        .encode(o.prompt.as_bytes(), true, false, &mut prompt)
        .map_err(|e| format!("prompt: {e}"))?;
    prompt.truncate(n);

    let (mut values, mut scales, mut kv_scales);
    let q8_model: Llama2Q8;
    let mut f32_buffer;
    let mut i8_buffer;
    let mut engine = if o.int8 {
        let err = |e: ModelError| format!("int8: {e}");
        values = vec![0i8; q8::values_len(&config)];
        scales = vec![0.0f32; q8::scales_len(&config, o.group)];
        q8::quantize_weights(&model, o.group, &mut values, &mut scales).map_err(err)?;
        kv_scales = vec![0.0f32; q8::kv_scales_len(&config)];
        {
            let calibration = config.seq_len.min(q8::CALIBRATION_STEPS);
            let mut buffer = vec![0.0f32; RunState::buffer_len(&config, calibration)];
            let mut state = RunState::new(&config, calibration, &mut buffer).map_err(err)?;
            q8::calibrate_kv_scales(
                &model,
                &mut state,
                q8::CALIBRATION_SEED,
                calibration,
                q8::DEFAULT_KV_MARGIN,
                &mut kv_scales,
            )
            .map_err(err)?;
        }
        if let Some(path) = &o.write_q8 {
            let mut file = vec![0u8; q8::file_len(&config, o.group)];
            q8::write_file(
                &model,
                o.group,
                &kv_scales,
                &mut values,
                &mut scales,
                &mut file,
            )
            .map_err(err)?;
            std::fs::write(path, &file).map_err(|e| format!("{path}: {e}"))?;
            eprintln!("wrote {} bytes to {path}", file.len());
        }
        q8_model = Llama2Q8::new(&model, o.group, &values, &scales, &kv_scales).map_err(err)?;
        f32_buffer = vec![0.0f32; Q8RunState::f32_len(&config)];
        i8_buffer = vec![0i8; Q8RunState::i8_len(&config, steps)];
        let state =
            Q8RunState::new(&config, steps, &mut f32_buffer, &mut i8_buffer).map_err(err)?;
        Engine::Int8(&q8_model, state)
    } else {
        f32_buffer = vec![0.0f32; RunState::buffer_len(&config, steps)];
        let state = RunState::new(&config, steps, &mut f32_buffer).map_err(|e| e.to_string())?;
        Engine::F32(&model, state)
    };

    let mut sampler =
        Sampler::new(o.temperature, o.topp, o.seed).map_err(|e| format!("sampler: {e}"))?;
    let mut probindex = vec![ProbIndex::default(); config.vocab_size];
    let mut generation = Generation::new(&prompt, steps).map_err(|e| e.to_string())?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut start: Option<Instant> = None;
    let mut ids = vec![prompt[0]];
    while let Some((token, pos)) = generation.input() {
        let logits = engine.forward(token, pos).map_err(|e| e.to_string())?;
        let Some(step) = generation
            .accept(logits, &mut sampler, &mut probindex)
            .map_err(|e| e.to_string())?
        else {
            break;
        };
        ids.push(step.next);
        out.write_all(printable(tokenizer.decode(step.prev, step.next)))
            .and_then(|()| out.flush())
            .map_err(|e| e.to_string())?;
        // As run.c, the clock starts after the first step.
        start.get_or_insert_with(Instant::now);
    }
    writeln!(out).map_err(|e| e.to_string())?;
    if o.print_ids {
        let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
        writeln!(out, "ids: {}", ids.join(" ")).map_err(|e| e.to_string())?;
    }
    let pos = generation.pos();
    if let (Some(start), true) = (start, pos > 1) {
        let seconds = start.elapsed().as_secs_f64();
        eprintln!("achieved tok/s: {:.6}", (pos - 1) as f64 / seconds);
    }
    Ok(())
}

fn main() -> ExitCode {
    let result = parse_args().and_then(|o| run(&o));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
