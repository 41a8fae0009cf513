//! Picks the machine's `memory.x`, turns the project's conformance cases into Rust
//! statics (`$OUT_DIR/cases.rs`) that the `conformance` firmware runs on target, and plans the
//! `bench` firmware (`$OUT_DIR/bench_plan.rs` and its input pools `$OUT_DIR/pool_*.bin`).
//!
//! Cases come from `tests/conformance/cases/*.json` of the project, or exactly
//! `$MICROATTN_CONFORMANCE_DIR/*.json` when that is set (as the host runner). Only the cases
//! whose data fit the machine's flash budget and whose buffers fit its RAM budget are
//! embedded; the others are listed as skipped with the reason, and the firmware prints them.

use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::{env, fs};

/// Machines: feature name, bytes of flash for case data, bytes of RAM for case buffers.
/// Budgets leave room for code (~40 KiB), stack and the f16 working copies.
const MACHINES: &[(&str, usize, usize)] = &[
    ("mps2-an385", 3 << 20, 1 << 20),
    ("mps2-an386", 3 << 20, 1 << 20),
    ("mps2-an500", 3 << 20, 1 << 20),
    ("mps2-an505", 3 << 20, 1 << 20),
    ("mps3-an547", 384 << 10, 256 << 10),
    // 256 KiB flash, 16 KiB RAM: keep 8 KiB of RAM for the stack and statics.
    ("microbit", 160 << 10, 8 << 10),
];

/// Ops the firmware can run (kernels that exist in the library).
const OPS: &[&str] = &[
    "sdpa",
    "linear_attention",
    "additive_attention",
    "luong_attention",
    "mha",
    "rope",
    "sinusoidal_pe",
    "selective_scan",
    "gat",
    "vit_embed",
    "encoder_layer",
    "decoder_layer",
];

/// Ops run on target in f32 and f16 only (no int8 version in the library).
const NO_I8_OPS: &[&str] = &["rope", "sinusoidal_pe", "selective_scan"];

/// Layer ops whose i8 cases run on target through the library's offline step (weights
/// quantized, stage scales calibrated on the case's input by `Int8LayerQuant`,
/// `Int8GatQuant`, `calibrate_patch_embed`), exactly as the host's i8 adapters
/// (`tests/conformance/ops/int8/layer_run.rs`).
const I8_LAYER_OPS: &[&str] = &["encoder_layer", "decoder_layer", "gat", "vit_embed"];

/// Machines that run the layer ops in f32/f16 but not in i8, and why.
const I8_LAYERS_LEFT_OUT: &[(&str, &str)] = &[(
    "microbit",
    "type i8 of the layer ops is not run on this machine: the storage of the int8 layers (quantized weights, prepared tables, ~2.4 KB for the gat and vit_embed cases) on top of the other cases' buffers leaves too little of the 16 KB of RAM for the stack (tried: the run overflowed it)",
)];

/// Ops left out on a machine although their cases fit its budgets, when the machine's
/// flash cannot hold the code of every op. None at present: scripts/qemu-test builds the
/// microbit's firmware for size (`opt-level = "s"`), which leaves ~50 KB of its 256 KB free.
const OPS_LEFT_OUT: &[(&str, &str, &str)] = &[];

/// Input tensors an op case may have at most (the decoder layer's state dict and inputs).
const MAX_TENSORS: usize = 24;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());

    let enabled: Vec<_> = MACHINES
        .iter()
        .filter(|(name, _, _)| {
            let var = format!("CARGO_FEATURE_{}", name.to_uppercase().replace('-', "_"));
            env::var_os(var).is_some()
        })
        .collect();
    let &&(machine, flash_budget, ram_budget) = match enabled.as_slice() {
        [one] => one,
        _ => panic!("enable exactly one machine feature (mps2-an385, ..., microbit)"),
    };

    // memory.x from the machine's folder, found by cortex-m-rt's link.x via the search path.
    let memory = manifest.join("..").join(machine).join("memory.x");
    fs::copy(&memory, out.join("memory.x")).expect("copy memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg=-Tlink.x");
    println!("cargo:rustc-link-arg=-Tdefmt.x");
    println!("cargo:rerun-if-changed={}", memory.display());
    println!("cargo:rustc-env=MICROATTN_MACHINE={machine}");

    let dir = match env::var_os("MICROATTN_CONFORMANCE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => manifest.join("../../tests/conformance/cases"),
    };
    println!("cargo:rerun-if-env-changed=MICROATTN_CONFORMANCE_DIR");
    println!("cargo:rerun-if-changed={}", dir.display());
    let code = generate(&dir, machine, flash_budget, ram_budget);
    fs::write(out.join("cases.rs"), code).expect("write cases.rs");

    let &(_, bench_flash, bench_ram) = BENCH_BUDGETS
        .iter()
        .find(|(name, _, _)| *name == machine)
        .expect("bench budget for every machine");
    bench_plan(&out, machine, bench_flash, bench_ram);
}

/// Bench budgets per machine: bytes of flash for the input pools (inputs are read-only, so
/// they live in flash), bytes of RAM for the output and scratch of one run.
const BENCH_BUDGETS: &[(&str, usize, usize)] = &[
    ("mps2-an385", 3 << 20, 3 << 20),
    ("mps2-an386", 3 << 20, 3 << 20),
    ("mps2-an500", 3 << 20, 3 << 20),
    ("mps2-an505", 3 << 20, 3 << 20),
    // ITCM 512 KiB holds code (~70 KiB) and pools; DTCM 512 KiB.
    ("mps3-an547", 420 << 10, 400 << 10),
    // 256 KiB flash (~60 KiB of code), 16 KiB RAM (stack and statics need ~5 KiB).
    ("microbit", 150 << 10, 10 << 10),
];

/// Benchmark shapes `(lq, lk, d, dv)`, in output order.
const BENCH_SHAPES: [(usize, usize, usize, usize); 4] = [
    (128, 128, 64, 64),
    (256, 256, 64, 64),
    (64, 64, 32, 32),
    (1, 256, 64, 64),
];

/// Element types: name, bytes per element, scratch bytes per output column.
const BENCH_TYPES: [(&str, usize, usize); 3] = [("f32", 4, 0), ("i8", 1, 8), ("f16", 2, 4)];

/// Machines whose i8 runs get `int8_sdpa_packed_scratch_len` (the Cortex-M DSP cores, where
/// `int8_sdpa` packs keys and values into 16-bit pairs once per call when it has at least
/// two query rows).
const PACKED_I8_MACHINES: [&str; 3] = ["mps2-an386", "mps2-an500", "mps2-an505"];

/// Scratch bytes of a run: `dv · scratch_per_dv`, plus on [`PACKED_I8_MACHINES`] the packed
/// keys and values of the i8 runs with `lq >= 2` (the library's
/// `int8_sdpa_packed_scratch_len`: [`packed_words`] rounded up to `i64`s).
fn scratch_bytes(
    packed_i8: bool,
    ty: &str,
    (lq, lk, d, dv): (usize, usize, usize, usize),
) -> usize {
    let (_, _, per_dv) = BENCH_TYPES.iter().find(|t| t.0 == ty).expect("bench type");
    let packed = if packed_i8 && ty == "i8" && lq >= 2 {
        8 * packed_words(lk, d, dv).div_ceil(2)
    } else {
        0
    };
    dv * per_dv + packed
}

/// Which (type, shape) runs fit this machine, and the input pools they read.
///
/// Each type has one pool of pseudo-random inputs in flash, large enough for the biggest
/// shape of that type that runs: `q`, `k` and `v` are consecutive slices of it. Types are
/// planned in the order i8, f16, f32 (smallest elements first), shapes in order; a run is
/// left out when its output and scratch exceed the RAM budget or growing its pool would
/// exceed the flash budget.
fn bench_plan(out: &Path, machine: &str, flash_budget: usize, ram_budget: usize) {
    let packed_i8 = PACKED_I8_MACHINES.contains(&machine);
    let mut pool = [0usize; 3]; // elements per type
    let mut fits: [[Option<String>; 4]; 3] = Default::default();
    let mut arena = 8usize;
    for ti in [1, 2, 0] {
        let (name, elem, _) = BENCH_TYPES[ti];
        for (si, &(lq, lk, d, dv)) in BENCH_SHAPES.iter().enumerate() {
            let scratch = scratch_bytes(packed_i8, name, (lq, lk, d, dv));
            let ram = lq * dv * elem + scratch;
            let need = lq * d + lk * d + lk * dv;
            let mut grown = pool;
            grown[ti] = grown[ti].max(need);
            let flash: usize = grown.iter().zip(BENCH_TYPES).map(|(n, t)| n * t.1).sum();
            if ram > ram_budget {
                fits[ti][si] = Some(format!(
                    "output+scratch need {ram} B of RAM, this machine's bench budget is {ram_budget} B"
                ));
            } else if flash > flash_budget {
                fits[ti][si] = Some(format!(
                    "inputs need {} B of flash: with the other pools {flash} B, this machine's bench budget is {flash_budget} B",
                    need * elem
                ));
            } else {
                pool = grown;
                // Output first, scratch after it at an 8-byte boundary.
                arena = arena.max((lq * dv * elem).next_multiple_of(8) + scratch);
                // The i8 decode step over the packed KV cache (bench.rs `run_packed_kv`):
                // output, the cache's words and an accumulator row, when the budget allows.
                let packed_kv =
                    (lq * dv).next_multiple_of(8) + 4 * packed_words(lk, d, dv) + 8 * dv + 8;
                if name == "i8" && lq == 1 && packed_kv <= ram_budget {
                    arena = arena.max(packed_kv);
                }
            }
        }
    }
    let mut src = String::from(
        "/// Every benchmark run: (type, lq, lk, d, dv, why it is left out or None).\n\
         pub static PLAN: &[(Ty, usize, usize, usize, usize, Option<&str>)] = &[\n",
    );
    for (si, &(lq, lk, d, dv)) in BENCH_SHAPES.iter().enumerate() {
        for (ti, (name, _, _)) in BENCH_TYPES.iter().enumerate() {
            let ty = match *name {
                "f32" => "Ty::F32",
                "i8" => "Ty::I8",
                _ => "Ty::F16",
            };
            let _ = writeln!(
                src,
                "    ({ty}, {lq}, {lk}, {d}, {dv}, {:?}),",
                fits[ti][si]
            );
        }
    }
    src.push_str("];\n");
    for (ti, name) in ["F32", "I8", "F16"].iter().enumerate() {
        let _ = writeln!(
            src,
            "/// Elements of the {name} input pool.\npub const POOL_{name}: usize = {};",
            pool[ti].max(1)
        );
    }
    let _ = writeln!(
        src,
        "/// Bytes of RAM for the output and scratch of the largest run.\npub const ARENA: usize = {arena};"
    );
    let _ = writeln!(
        src,
        "/// Whether the i8 runs with two or more query rows get the packed scratch.\npub const PACKED_I8: bool = {packed_i8};"
    );
    fs::write(out.join("bench_plan.rs"), src).expect("write bench_plan.rs");

    // Inputs uniform in [-1, 1] on a grid of 1/127 (xorshift32, fixed seed): the i8 pool is
    // exactly 127 x the f32 pool, the f16 pool its f16 rounding.
    let n = pool.iter().copied().max().unwrap_or(0).max(1);
    let mut state = 0x2545_f491u32;
    let mut steps = Vec::with_capacity(n);
    for _ in 0..n {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        steps.push((state % 255) as i32 - 127);
    }
    let f32s: Vec<u8> = steps[..pool[0].max(1)]
        .iter()
        .flat_map(|&s| (s as f32 / 127.0).to_le_bytes())
        .collect();
    let i8s: Vec<u8> = steps[..pool[1].max(1)]
        .iter()
        .map(|&s| s as i8 as u8)
        .collect();
    let f16s: Vec<u8> = steps[..pool[2].max(1)]
        .iter()
        .flat_map(|&s| half::f16::from_f32(s as f32 / 127.0).to_le_bytes())
        .collect();
    fs::write(out.join("pool_f32.bin"), f32s).expect("write pool");
    fs::write(out.join("pool_i8.bin"), i8s).expect("write pool");
    fs::write(out.join("pool_f16.bin"), f16s).expect("write pool");
}

/// Everything the firmware needs to know about one embedded case, as Rust source.
struct Embedded {
    source: String,
    flash: usize,
    ram: usize,
    inputs: usize,
    outputs: usize,
    dv: usize,
    scratch: usize,
    /// Elements of the int8 copies (inputs, output) and integer bias storage, when the case
    /// also runs in i8.
    i8_inputs: usize,
    i8_outputs: usize,
    i8_bias: usize,
    /// Storage of a layer op run in i8, in [`LAYER_I8`] order.
    layer_i8: Option<[usize; 8]>,
}

/// The storage of an int8 layer case (element counts): quantized weights (`i8`), their
/// scales (`f32`), prepared integer tables (`i32`) and multipliers (two `i32`s each),
/// quantized inputs, the output, `i8` scratch, `i64` accumulators.
const LAYER_I8: [&str; 8] = [
    "weights", "scales", "ints", "mults", "input", "output", "scratch", "acc",
];

/// Bytes per element of each [`LAYER_I8`] entry.
const LAYER_I8_BYTES: [usize; 8] = [1, 4, 4, 8, 1, 1, 1, 8];

/// [`LAYER_I8`] sizes of an i8 layer case (the library's `int8_*_storage_len` and scratch
/// lengths, written out: the build script does not link the library).
fn layer_i8_sizes(case: &Value, op: &str) -> Result<[usize; 8], String> {
    let dims = |n: &str| tensor(case, "inputs", n).map(|(s, _)| s);
    let p = &case["params"];
    Ok(match op {
        "encoder_layer" | "decoder_layer" => {
            let decoder = op == "decoder_layer";
            let (len, e) = match dims(if decoder { "tgt" } else { "src" })?.as_slice() {
                &[l, e] => (l, e),
                _ => return Err("src not [L,E]".into()),
            };
            let mem = if decoder {
                *dims("memory")?.first().ok_or("memory shape")?
            } else {
                0
            };
            let h = *dims("linear1.weight")?
                .first()
                .ok_or("linear1.weight shape")?;
            let heads = p["num_heads"].as_u64().ok_or("num_heads")? as usize;
            let (att, norms) = if decoder { (2, 3) } else { (1, 2) };
            let rows = e * (4 * att + 1) + h;
            let le = len * e;
            let scratch = if decoder {
                (4 * le).max(2 * (len + mem) * e) + 2 * le + h
            } else {
                6 * le + h
            };
            [
                4 * att * e * e + 2 * e * h,
                rows,
                rows + 2 * norms * e,
                rows,
                le + mem * e,
                le,
                scratch,
                e / heads.max(1),
            ]
        }
        "gat" => {
            let &[n, fin] = dims("x")?.as_slice() else {
                return Err("x not [N,Fin]".into());
            };
            let heads = p["heads"].as_u64().ok_or("heads")? as usize;
            let hf = dims("lin_weight")?.iter().product::<usize>() / fin.max(1);
            let f = hf / heads.max(1);
            let concat = p["concat"].as_bool().unwrap_or(true);
            [
                hf * fin + 2 * hf,
                hf,
                hf,
                hf,
                n * fin,
                n * if concat { hf } else { f },
                n * hf,
                n * hf + 4 * n * heads,
            ]
        }
        "vit_embed" => {
            let &[c, h, w] = dims("image")?.as_slice() else {
                return Err("image not [C,H,W]".into());
            };
            let pw = dims("patch_weight")?;
            let e = *pw.first().ok_or("patch_weight shape")?;
            let patch = p["patch"].as_u64().ok_or("patch")? as usize;
            let np = (h / patch.max(1)) * (w / patch.max(1));
            let tokens = np + usize::from(!case["inputs"]["cls_token"].is_null());
            // Scratch: one flattened patch, then the class-token row.
            [
                pw.iter().product(),
                e,
                np * e,
                e,
                c * h * w,
                tokens * e,
                c * patch * patch + e,
                1,
            ]
        }
        other => return Err(format!("no int8 layer op {other}")),
    })
}

fn generate(dir: &Path, machine: &str, flash_budget: usize, ram_budget: usize) -> String {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("conformance cases in {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();

    let mut cases = String::new();
    let mut skipped = String::new();
    let (mut flash, mut max_in, mut max_out, mut max_dv) = (0usize, 0usize, 0usize, 1usize);
    let (mut max_in_i8, mut max_out_i8, mut max_bias_i8) = (1usize, 1usize, 1usize);
    let mut max_scratch = 1usize;
    // Largest `int8_sdpa_packed_scratch_len` of an sdpa case run in i8 on the DSP cores.
    let mut max_packed_i8 = 1usize;
    // Ops with at least one embedded case: the firmware leaves the others' code out.
    let mut present: Vec<&str> = Vec::new();
    // Ops with a case run in i8 (their int8 code is linked only then), and the largest
    // storage of such a case (`LAYER_I8` order).
    let mut present_i8: Vec<&str> = Vec::new();
    let mut max_layer = [1usize; 8];
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let text = fs::read_to_string(path).unwrap();
        let case: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let name = case["name"].as_str().unwrap_or("?").to_string();
        let op = case["op"].as_str().unwrap_or("?");
        if let Some((_, _, reason)) = OPS_LEFT_OUT
            .iter()
            .find(|(m, o, _)| *m == machine && *o == op)
        {
            let _ = writeln!(skipped, "    ({name:?}, {reason:?}),");
            continue;
        }
        if !OPS.contains(&op) {
            let _ = writeln!(
                skipped,
                "    ({name:?}, \"op {op} is not run on target yet\"),"
            );
            continue;
        }
        let i8_layers = !I8_LAYERS_LEFT_OUT.iter().any(|(m, _)| *m == machine);
        let embedded = match if op == "sdpa" {
            sdpa_case(&case)
        } else {
            op_case(&case, op, i8_layers)
        } {
            Ok(e) => e,
            Err(reason) => {
                // A case of a supported op that cannot be expressed is a failure, not a skip.
                let _ = writeln!(
                    cases,
                    "    Case::Unsupported {{ name: {name:?}, reason: {reason:?} }},"
                );
                continue;
            }
        };
        if embedded.ram > ram_budget || flash + embedded.flash > flash_budget {
            let _ = writeln!(
                skipped,
                "    ({name:?}, \"needs {} B of RAM and {} B of flash, beyond this machine's budget\"),",
                embedded.ram, embedded.flash
            );
            continue;
        }
        if case["tolerance"]["i8"].is_number() {
            if NO_I8_OPS.contains(&op) {
                let _ = writeln!(
                    skipped,
                    "    ({name:?}, \"type i8 is not run on target: the library has no int8 {op}\"),"
                );
            } else if let (true, Some((_, reason))) = (
                I8_LAYER_OPS.contains(&op),
                I8_LAYERS_LEFT_OUT.iter().find(|(m, _)| *m == machine),
            ) {
                let _ = writeln!(skipped, "    ({name:?}, {reason:?}),");
            }
        }
        if let Some(&known) = OPS.iter().find(|&&o| o == op) {
            present.push(known);
            if embedded.layer_i8.is_some() {
                present_i8.push(known);
            }
        }
        if let Some(sizes) = embedded.layer_i8 {
            for (m, n) in max_layer.iter_mut().zip(sizes) {
                *m = (*m).max(n);
            }
        }
        flash += embedded.flash;
        max_in = max_in.max(embedded.inputs);
        max_out = max_out.max(embedded.outputs);
        max_in_i8 = max_in_i8.max(embedded.i8_inputs);
        max_out_i8 = max_out_i8.max(embedded.i8_outputs);
        max_bias_i8 = max_bias_i8.max(embedded.i8_bias);
        max_dv = max_dv.max(embedded.dv);
        max_scratch = max_scratch.max(embedded.scratch);
        if op == "sdpa"
            && case["tolerance"]["i8"].is_number()
            && PACKED_I8_MACHINES.contains(&machine)
        {
            max_packed_i8 =
                max_packed_i8.max(packed_i8_len(&case).unwrap_or_else(|e| panic!("{name}: {e}")));
        }
        cases.push_str(&embedded.source);
    }
    let mut has = String::new();
    for op in OPS {
        let _ = writeln!(
            has,
            "/// Whether a case of `{op}` is embedded (its code is linked only then).\npub const HAS_{}: bool = {};",
            op.to_uppercase(),
            present.contains(op)
        );
    }
    for op in I8_LAYER_OPS {
        let _ = writeln!(
            has,
            "/// Whether a case of `{op}` runs in i8 (its int8 code is linked only then).\npub const HAS_I8_{}: bool = {};",
            op.to_uppercase(),
            present_i8.contains(op)
        );
    }
    for (name, n) in LAYER_I8.iter().zip(max_layer) {
        let _ = writeln!(
            has,
            "/// Largest `{name}` of a layer case run in i8.\npub const MAX_LAYER_{}: usize = {n};",
            name.to_uppercase()
        );
    }
    format!(
        "{has}/// Cases embedded for this machine.\npub static CASES: &[Case] = &[\n{cases}];\n\
         /// Cases left out, with the reason.\npub static SKIPPED: &[(&str, &str)] = &[\n{skipped}];\n\
         /// Largest q+k+v element count of an embedded case.\npub const MAX_INPUT: usize = {};\n\
         /// Largest output element count.\npub const MAX_OUTPUT: usize = {};\n\
         /// Largest value width (f16 scratch row).\npub const MAX_DV: usize = {max_dv};\n\
         /// Largest f32 scratch of an embedded case.\npub const MAX_SCRATCH: usize = {};\n\
         /// Largest q+k+v element count of a case run in i8.\npub const MAX_INPUT_I8: usize = {max_in_i8};\n\
         /// Largest output of a case run in i8.\npub const MAX_OUTPUT_I8: usize = {max_out_i8};\n\
         /// Largest integer bias storage of a case run in i8.\npub const MAX_BIAS_I8: usize = {max_bias_i8};\n\
         /// Largest packed int8 SDPA scratch (`i64`s) of a case run in i8 (1: none).\npub const MAX_PACKED_I8: usize = {max_packed_i8};\n",
        max_in.max(1),
        max_out.max(1),
        max_scratch.max(max_dv),
    )
}

/// The library's `int8_sdpa_packed_scratch_len` of an sdpa case (see [`scratch_bytes`]).
fn packed_i8_len(case: &Value) -> Result<usize, String> {
    let (ks, _) = tensor(case, "inputs", "k")?;
    let (vs, _) = tensor(case, "inputs", "v")?;
    let (&[.., lk, d], &[.., dv]) = (ks.as_slice(), vs.as_slice()) else {
        return Err("k/v shapes".into());
    };
    Ok(dv + packed_words(lk, d, dv).div_ceil(2))
}

/// `u32` words of `lk` keys and value rows packed into 16-bit pairs (the library's
/// `packed_keys_words + packed_values_words`, also `int8_packed_kv_words`): groups of four
/// keys of `2d` words, pairs of value rows of `dv` words.
fn packed_words(lk: usize, d: usize, dv: usize) -> usize {
    lk.div_ceil(4) * 2 * d + lk.div_ceil(2) * dv
}

/// A tensor's shape and data.
fn tensor(case: &Value, group: &str, name: &str) -> Result<(Vec<usize>, Vec<f32>), String> {
    let t = &case[group][name];
    let shape = t["shape"]
        .as_array()
        .ok_or(format!("{group}.{name} missing"))?
        .iter()
        .map(|x| x.as_u64().map(|x| x as usize).ok_or("bad shape"))
        .collect::<Result<Vec<_>, _>>()?;
    let data = t["data"]
        .as_array()
        .ok_or(format!("{group}.{name} has no data"))?
        .iter()
        .map(|x| x.as_f64().map(|x| x as f32).ok_or("non-number in data"))
        .collect::<Result<Vec<_>, _>>()?;
    if data.len() != shape.iter().product::<usize>() {
        return Err(format!("{group}.{name}: data does not match shape"));
    }
    Ok((shape, data))
}

fn floats(data: &[f32]) -> String {
    let mut s = String::from("&[");
    for x in data {
        // `{:?}` prints the shortest text that reads back as the same f32.
        let _ = write!(s, "{x:?},");
    }
    s.push(']');
    s
}

fn usizes(v: &Value) -> Result<String, String> {
    let items = v.as_array().ok_or("expected a list")?;
    let mut s = String::from("&[");
    for x in items {
        let _ = write!(s, "{},", x.as_u64().ok_or("expected a position")?);
    }
    s.push(']');
    Ok(s)
}

fn field(v: &Value, name: &str) -> Result<u64, String> {
    v[name].as_u64().ok_or(format!("mask field {name} missing"))
}

fn mask_terms(mask: &Value) -> Result<String, String> {
    let Some(list) = mask.as_array() else {
        return Ok("&[]".into());
    };
    let mut s = String::from("&[");
    for term in list {
        let kind = term["kind"].as_str().ok_or("mask term without kind")?;
        let text = match kind {
            "none" => "MaskTerm::None".to_string(),
            "causal" => "MaskTerm::Causal".to_string(),
            "sliding" => format!(
                "MaskTerm::Sliding {{ left: {}, right: {} }}",
                field(term, "left")?,
                field(term, "right")?
            ),
            "dilated" => format!(
                "MaskTerm::Dilated {{ left: {}, right: {}, dilation: {} }}",
                field(term, "left")?,
                field(term, "right")?,
                field(term, "dilation")?
            ),
            "global_sliding" => format!(
                "MaskTerm::GlobalSliding {{ left: {}, right: {}, global: {} }}",
                field(term, "left")?,
                field(term, "right")?,
                usizes(&term["global"])?
            ),
            "block_sparse" => {
                let mut random = String::from("&[");
                for pair in term["random"].as_array().unwrap_or(&Vec::new()) {
                    let p = pair.as_array().ok_or("random pair")?;
                    let (q, k) = (p.first(), p.get(1));
                    let (Some(q), Some(k)) = (q.and_then(Value::as_u64), k.and_then(Value::as_u64))
                    else {
                        return Err("bad random pair".into());
                    };
                    let _ = write!(random, "({q}, {k}),");
                }
                random.push(']');
                let global = if term["global"].is_null() {
                    "&[]".to_string()
                } else {
                    usizes(&term["global"])?
                };
                format!(
                    "MaskTerm::BlockSparse {{ block: {}, window: {}, global: {global}, random: {random} }}",
                    field(term, "block")?,
                    field(term, "window")?
                )
            }
            "key_padding" => format!(
                "MaskTerm::KeyPadding {{ valid: {} }}",
                field(term, "valid")?
            ),
            other => {
                return Err(format!(
                    "mask kind {other} unknown to the firmware generator"
                ))
            }
        };
        s.push_str(&text);
        s.push(',');
    }
    s.push(']');
    Ok(s)
}

fn bias(b: &Value) -> Result<String, String> {
    if b.is_null() {
        return Ok("Bias::None".into());
    }
    match b["kind"].as_str() {
        Some("alibi") => {
            let slopes: Vec<f32> = b["slopes"]
                .as_array()
                .ok_or("alibi slopes")?
                .iter()
                .map(|x| x.as_f64().unwrap_or(f64::NAN) as f32)
                .collect();
            Ok(format!("Bias::Alibi {{ slopes: {} }}", floats(&slopes)))
        }
        Some("t5") => {
            let mut table = Vec::new();
            for row in b["table"].as_array().ok_or("t5 table")? {
                for x in row.as_array().ok_or("t5 table row")? {
                    table.push(x.as_f64().ok_or("t5 value")? as f32);
                }
            }
            Ok(format!(
                "Bias::T5 {{ bidirectional: {}, num_buckets: {}, max_distance: {}, table: {} }}",
                b["bidirectional"].as_bool().ok_or("t5 bidirectional")?,
                b["num_buckets"].as_u64().ok_or("t5 num_buckets")?,
                b["max_distance"].as_u64().ok_or("t5 max_distance")?,
                floats(&table)
            ))
        }
        other => Err(format!("bias {other:?} unknown to the firmware generator")),
    }
}

fn sdpa_case(case: &Value) -> Result<Embedded, String> {
    let name = case["name"].as_str().unwrap_or("?");
    let (qs, q) = tensor(case, "inputs", "q")?;
    let (ks, k) = tensor(case, "inputs", "k")?;
    let (vs, v) = tensor(case, "inputs", "v")?;
    let (_, out) = tensor(case, "expected", "out")?;
    let (heads, kv_heads, lq, lk, d, dv) = match (qs.as_slice(), ks.as_slice(), vs.as_slice()) {
        ([lq, d], [lk, _], [_, dv]) => (1, 1, *lq, *lk, *d, *dv),
        ([h, lq, d], [hkv, lk, _], [_, _, dv]) => (*h, *hkv, *lq, *lk, *d, *dv),
        _ => return Err("q/k/v shapes not [L,D] or [H,L,D]".into()),
    };
    let params = &case["params"];
    let scale = match params["scale"].as_f64() {
        Some(s) => format!("Some({:?})", s as f32),
        None => "None".into(),
    };
    let score = match params["score"].as_str().unwrap_or("dot") {
        "dot" => "Score::Dot",
        "cosine" => "Score::Cosine",
        "neg_sq_l2" => "Score::NegSqL2",
        "neg_l1" => "Score::NegL1",
        other => return Err(format!("score {other} unknown to the firmware generator")),
    };
    let mask = mask_terms(&params["mask"])?;
    let offset = params["q_pos_offset"].as_i64().unwrap_or(0);
    let bias_len = match params["bias"]["kind"].as_str() {
        Some("alibi") => params["bias"]["slopes"].as_array().map_or(0, Vec::len),
        Some("t5") => params["bias"]["table"].as_array().map_or(0, |rows| {
            rows.iter().filter_map(Value::as_array).map(Vec::len).sum()
        }),
        _ => 0,
    };
    let has_i8 = case["tolerance"]["i8"].is_f64();
    let bias = bias(&params["bias"])?;
    let tol = |t: &str| match case["tolerance"][t].as_f64() {
        Some(x) => format!("Some({x:?})"),
        None => "None".into(),
    };
    let source = format!(
        "    Case::Sdpa(SdpaCase {{ name: {name:?}, heads: {heads}, kv_heads: {kv_heads}, lq: {lq}, lk: {lk}, d: {d}, dv: {dv},\n      \
         q: {}, k: {}, v: {}, expected: {},\n      scale: {scale}, score: {score}, mask: {mask}, q_pos_offset: {offset}, bias: {bias},\n      \
         tol_f32: {}, tol_f16: {}, tol_i8: {} }}),\n",
        floats(&q),
        floats(&k),
        floats(&v),
        floats(&out),
        tol("f32"),
        tol("f16"),
        tol("i8"),
    );
    let inputs = q.len() + k.len() + v.len();
    Ok(Embedded {
        source,
        flash: 4 * (inputs + out.len()),
        // f16 and i8 copies of the inputs, f32, f16 and i8 outputs, f32 and i64 scratch.
        ram: 3 * inputs + 7 * out.len() + 12 * dv,
        inputs,
        outputs: out.len(),
        dv,
        scratch: dv,
        i8_inputs: if has_i8 { inputs } else { 0 },
        i8_outputs: if has_i8 { out.len() } else { 0 },
        i8_bias: if has_i8 { bias_len } else { 0 },
        layer_i8: None,
    })
}

/// `q_pos_offset` (default 0; may be negative).
fn offset(params: &Value) -> Result<i64, String> {
    Ok(params["q_pos_offset"].as_i64().unwrap_or(0))
}

/// A case of an op other than sdpa: the op's parameters as a Rust `Op` value, its inputs in
/// the order the kernel takes them, and its expected tensors.
fn op_case(case: &Value, op: &str, i8_layers: bool) -> Result<Embedded, String> {
    let name = case["name"].as_str().unwrap_or("?");
    let params = &case["params"];
    let dims = |n: &str| tensor(case, "inputs", n).map(|(s, _)| s);
    // Storage elements the op needs after its output (the layers' activation buffer).
    let mut work = 0usize;
    // Names starting with `?` are optional inputs: absent ones are passed as empty slices.
    let (op_value, input_names, scratch): (String, Vec<&str>, usize) = match op {
        "linear_attention" => {
            if !matches!(params["feature_map"].as_str(), None | Some("elu_plus_one")) {
                return Err("feature_map other than elu_plus_one".into());
            }
            let (q, k, v) = (dims("q")?, dims("k")?, dims("v")?);
            let (heads, kv_heads, lq, lk, d, dv) = match (q.as_slice(), k.as_slice(), v.as_slice())
            {
                ([lq, d], [lk, _], [_, dv]) => (1, 1, *lq, *lk, *d, *dv),
                ([h, lq, d], [hkv, lk, _], [_, _, dv]) => (*h, *hkv, *lq, *lk, *d, *dv),
                _ => return Err("q/k/v shapes not [L,D] or [H,L,D]".into()),
            };
            let causal = params["causal"].as_bool().unwrap_or(false);
            let eps = params["eps"].as_f64().unwrap_or(1e-6) as f32;
            (
                format!("Op::Linear {{ heads: {heads}, kv_heads: {kv_heads}, lq: {lq}, lk: {lk}, d: {d}, dv: {dv}, causal: {causal}, eps: {eps:?} }}"),
                vec!["q", "k", "v"],
                d * dv + d + dv,
            )
        }
        "additive_attention" => {
            let (dq, keys, values, wq) = (
                dims("query")?,
                dims("keys")?,
                dims("values")?,
                dims("w_query")?,
            );
            let (&[dq], &[l, dk], &[_, dv], &[a, _]) = (
                dq.as_slice(),
                keys.as_slice(),
                values.as_slice(),
                wq.as_slice(),
            ) else {
                return Err("additive shapes".into());
            };
            let mask = mask_terms(&params["mask"])?;
            (
                format!("Op::Additive {{ l: {l}, dq: {dq}, dk: {dk}, dv: {dv}, a: {a}, mask: {mask}, offset: {} }}", offset(params)?),
                vec!["query", "keys", "values", "w_query", "w_key", "v"],
                a + l + dv,
            )
        }
        "luong_attention" => {
            let (keys, values) = (dims("keys")?, dims("values")?);
            let (&[l, d], &[_, dv]) = (keys.as_slice(), values.as_slice()) else {
                return Err("luong shapes".into());
            };
            let (score, names, extra) = match params["score"].as_str().unwrap_or("dot") {
                "dot" => (0, vec!["query", "keys", "values"], 0),
                "general" => (1, vec!["query", "keys", "values", "w"], d),
                "concat" => (
                    2,
                    vec!["query", "keys", "values", "w", "v"],
                    dims("v")?.iter().product(),
                ),
                other => return Err(format!("luong score {other}")),
            };
            let mask = mask_terms(&params["mask"])?;
            (
                format!("Op::Luong {{ l: {l}, d: {d}, dv: {dv}, score: {score}, mask: {mask}, offset: {} }}", offset(params)?),
                names,
                extra + l + dv,
            )
        }
        "mha" => {
            let (q, k, v) = (dims("query")?, dims("key")?, dims("value")?);
            let (&[lq, e], &[lk, ek], &[lv, ev]) = (q.as_slice(), k.as_slice(), v.as_slice())
            else {
                return Err("mha shapes".into());
            };
            if ek != e || ev != e || lv != lk {
                return Err("mha needs key and value of the query's width".into());
            }
            let heads = params["num_heads"].as_u64().ok_or("num_heads")?;
            let mask = mask_terms(&params["mask"])?;
            let has = |n: &str| !case["inputs"][n].is_null();
            let mut names = vec!["query", "key", "value", "in_proj_weight"];
            if has("in_proj_bias") {
                names.push("in_proj_bias");
            }
            names.push("out_proj.weight");
            if has("out_proj.bias") {
                names.push("out_proj.bias");
            }
            (
                format!(
                    "Op::Mha {{ lq: {lq}, lk: {lk}, embed: {e}, heads: {heads}, mask: {mask}, offset: {}, in_bias: {}, out_bias: {} }}",
                    offset(params)?,
                    has("in_proj_bias"),
                    has("out_proj.bias")
                ),
                names,
                (lq + lk) * e * 2,
            )
        }
        "rope" => {
            let (heads, len, dim) = match dims("x")?.as_slice() {
                [l, d] => (1, *l, *d),
                [h, l, d] => (*h, *l, *d),
                _ => return Err("x not [L,D] or [H,L,D]".into()),
            };
            let layout = match params["layout"].as_str() {
                Some("interleaved") => "RopeLayout::Interleaved",
                Some("half") => "RopeLayout::Half",
                other => return Err(format!("rope layout {other:?}")),
            };
            (
                format!(
                    "Op::Rope {{ heads: {heads}, len: {len}, dim: {dim}, layout: {layout}, base: {:?}, pos_offset: {} }}",
                    params["base"].as_f64().unwrap_or(10000.0) as f32,
                    params["pos_offset"].as_u64().unwrap_or(0)
                ),
                vec!["x"],
                0,
            )
        }
        "sinusoidal_pe" => (
            format!(
                "Op::Sinusoidal {{ len: {}, dim: {}, pos_offset: {}, base: {:?} }}",
                params["length"].as_u64().ok_or("length")?,
                params["dim"].as_u64().ok_or("dim")?,
                params["pos_offset"].as_u64().unwrap_or(0),
                params["base"].as_f64().unwrap_or(10000.0) as f32
            ),
            vec![],
            0,
        ),
        "selective_scan" => {
            let &[channels, state] = dims("a")?.as_slice() else {
                return Err("a not [D,N]".into());
            };
            (
                format!(
                    "Op::Scan {{ channels: {channels}, state: {state}, delta_softplus: {} }}",
                    params["delta_softplus"].as_bool().unwrap_or(false)
                ),
                vec!["u", "delta", "a", "b", "c", "?d", "?z", "?delta_bias"],
                channels * state,
            )
        }
        "gat" => {
            let &[nodes, fin] = dims("x")?.as_slice() else {
                return Err("x not [N,Fin]".into());
            };
            let lin: usize = dims("lin_weight")?.iter().product();
            let heads = params["heads"].as_u64().ok_or("heads")? as usize;
            if fin == 0 || heads == 0 {
                return Err("zero features or heads".into());
            }
            let fo = lin / fin / heads;
            let edges = case["inputs"]["edge_index"]["data"]
                .as_array()
                .ok_or("edge_index has no data")?
                .iter()
                .map(|x| x.as_i64().map(|x| x.to_string()).ok_or("non-integer edge"))
                .collect::<Result<Vec<_>, _>>()?;
            (
                format!(
                    "Op::Gat {{ nodes: {nodes}, in_features: {fin}, out_features: {fo}, heads: {heads}, edges: &[{}], concat: {}, negative_slope: {:?}, add_self_loops: {} }}",
                    edges.join(","),
                    params["concat"].as_bool().unwrap_or(true),
                    params["negative_slope"].as_f64().unwrap_or(0.2) as f32,
                    params["add_self_loops"].as_bool().unwrap_or(true)
                ),
                vec!["x", "lin_weight", "att_src", "att_dst", "?bias"],
                2 * nodes * heads * fo + 4 * nodes * heads,
            )
        }
        "vit_embed" => {
            let &[c, h, w] = dims("image")?.as_slice() else {
                return Err("image not [C,H,W]".into());
            };
            let embed = *dims("patch_weight")?.first().ok_or("patch_weight shape")?;
            let patch = params["patch"].as_u64().ok_or("patch")? as usize;
            (
                format!("Op::Vit {{ channels: {c}, height: {h}, width: {w}, patch: {patch}, embed: {embed} }}"),
                vec!["image", "patch_weight", "?patch_bias", "?cls_token", "?pos_embed"],
                c * patch * patch + embed,
            )
        }
        "encoder_layer" => {
            let &[len, embed] = dims("src")?.as_slice() else {
                return Err("src not [L,E]".into());
            };
            let hidden = *dims("linear1.weight")?
                .first()
                .ok_or("linear1.weight shape")?;
            let norm_first = params["norm_first"].as_bool().unwrap_or(false);
            if norm_first {
                work = len * embed;
            }
            (
                format!(
                    "Op::Encoder {{ len: {len}, embed: {embed}, heads: {}, hidden: {hidden}, {}, mask: {} }}",
                    params["num_heads"].as_u64().ok_or("num_heads")?,
                    layer_config(params)?,
                    mask_terms(&params["mask"])?
                ),
                vec![
                    "src",
                    "self_attn.in_proj_weight",
                    "?self_attn.in_proj_bias",
                    "self_attn.out_proj.weight",
                    "?self_attn.out_proj.bias",
                    "linear1.weight",
                    "?linear1.bias",
                    "linear2.weight",
                    "?linear2.bias",
                    "norm1.weight",
                    "?norm1.bias",
                    "norm2.weight",
                    "?norm2.bias",
                ],
                (4 * len * embed).max(hidden + embed),
            )
        }
        "decoder_layer" => {
            let (&[lt, embed], &[ls, _]) = (dims("tgt")?.as_slice(), dims("memory")?.as_slice())
            else {
                return Err("tgt/memory not [L,E]".into());
            };
            let hidden = *dims("linear1.weight")?
                .first()
                .ok_or("linear1.weight shape")?;
            let norm_first = params["norm_first"].as_bool().unwrap_or(false);
            work = lt * embed * if norm_first { 2 } else { 1 };
            (
                format!(
                    "Op::Decoder {{ tgt_len: {lt}, mem_len: {ls}, embed: {embed}, heads: {}, hidden: {hidden}, {}, tgt_mask: {}, memory_mask: {} }}",
                    params["num_heads"].as_u64().ok_or("num_heads")?,
                    layer_config(params)?,
                    mask_terms(&params["tgt_mask"])?,
                    mask_terms(&params["memory_mask"])?
                ),
                vec![
                    "tgt",
                    "memory",
                    "self_attn.in_proj_weight",
                    "?self_attn.in_proj_bias",
                    "self_attn.out_proj.weight",
                    "?self_attn.out_proj.bias",
                    "multihead_attn.in_proj_weight",
                    "?multihead_attn.in_proj_bias",
                    "multihead_attn.out_proj.weight",
                    "?multihead_attn.out_proj.bias",
                    "linear1.weight",
                    "?linear1.bias",
                    "linear2.weight",
                    "?linear2.bias",
                    "norm1.weight",
                    "?norm1.bias",
                    "norm2.weight",
                    "?norm2.bias",
                    "norm3.weight",
                    "?norm3.bias",
                ],
                (2 * (lt + lt.max(ls)) * embed).max(hidden + embed),
            )
        }
        other => return Err(format!("op {other}")),
    };
    let mut inputs = String::new();
    let mut n_in = 0;
    if input_names.len() > MAX_TENSORS {
        return Err(format!("more than {MAX_TENSORS} inputs"));
    }
    for n in &input_names {
        if let Some(n) = n.strip_prefix('?') {
            if case["inputs"][n].is_null() {
                inputs.push_str("&[],");
                continue;
            }
        }
        let n = n.trim_start_matches('?');
        let (_, data) = tensor(case, "inputs", n)?;
        n_in += data.len();
        let _ = write!(inputs, "{},", floats(&data));
    }
    let mut expected = String::new();
    let mut n_out = 0;
    let out_names: &[&str] = match op {
        "additive_attention" | "luong_attention" => &["context", "weights"],
        "rope" => &["out"],
        "sinusoidal_pe" => &["pe"],
        "selective_scan" => &["y"],
        "vit_embed" => &["tokens"],
        _ => &["out"],
    };
    for n in out_names {
        let (_, data) = tensor(case, "expected", n)?;
        n_out += data.len();
        let _ = write!(expected, "({n:?}, {}),", floats(&data));
    }
    let tol = |t: &str| match case["tolerance"][t].as_f64() {
        Some(x) => format!("Some({x:?})"),
        None => "None".into(),
    };
    let layer_i8 = if i8_layers && I8_LAYER_OPS.contains(&op) && case["tolerance"]["i8"].is_number()
    {
        Some(layer_i8_sizes(case, op)?)
    } else {
        None
    };
    let layer_ram: usize = layer_i8.map_or(0, |sizes| {
        sizes.iter().zip(LAYER_I8_BYTES).map(|(n, b)| n * b).sum()
    });
    let source = format!(
        "    Case::Op(OpCase {{ name: {name:?}, op: {op_value},\n      inputs: &[{inputs}],\n      expected: &[{expected}],\n      \
         work: {work}, tol_f32: {}, tol_f16: {}, tol_i8: {} }}),\n",
        tol("f32"),
        tol("f16"),
        if layer_i8.is_some() { tol("i8") } else { "None".into() },
    );
    Ok(Embedded {
        source,
        flash: 4 * (n_in + n_out),
        ram: 2 * n_in + 6 * (n_out + work) + 4 * scratch + layer_ram,
        inputs: n_in,
        outputs: n_out + work,
        dv: 1,
        scratch,
        i8_inputs: 0,
        i8_outputs: 0,
        i8_bias: 0,
        layer_i8,
    })
}

/// `activation`, `norm_first` and `eps` of a layer case, as fields of its `Op`.
fn layer_config(params: &Value) -> Result<String, String> {
    let activation = match params["activation"].as_str() {
        None | Some("relu") => "Activation::Relu",
        Some("gelu") => "Activation::Gelu",
        Some("gelu_tanh") => "Activation::GeluTanh",
        Some(other) => return Err(format!("activation {other}")),
    };
    Ok(format!(
        "activation: {activation}, norm_first: {}, eps: {:?}",
        params["norm_first"].as_bool().unwrap_or(false),
        params["eps"].as_f64().unwrap_or(1e-5) as f32
    ))
}
