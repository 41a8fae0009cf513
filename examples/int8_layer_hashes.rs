//! Host side of the on-target int8 check for the layer ops (`encoder_layer`,
//! `decoder_layer`, `gat`, `vit_embed`): runs every such conformance case that has an `i8`
//! tolerance through the conformance runner's i8 path (`tests/conformance/ops/int8/layer_run.rs`:
//! the library's offline quantization and calibration, then the integer kernels), exactly
//! as the QEMU conformance firmware does, and prints the FNV-1a hash of each int8 output:
//!
//! ```text
//! hash CASE 0x1234abcd
//! ```
//!
//! `scripts/qemu-test` compares these (with those of `examples/int8_hashes.rs` for `sdpa`)
//! with the hashes the firmware prints on every emulated core.
//!
//! ```text
//! cargo run --release --features std --example int8_layer_hashes [CASES_DIR]
//! ```

#[path = "../tests/conformance/case.rs"]
mod case;
#[path = "../tests/conformance/ops/int8/layer_run.rs"]
mod layer_run;
#[path = "../tests/conformance/params.rs"]
mod params;

use case::Case;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/cases")
        });
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect(),
        Err(e) => {
            eprintln!("int8_layer_hashes: cannot read {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    files.sort();
    let mut failed = false;
    for path in files {
        let case = match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| Case::from_json(&t))
        {
            Ok(c) => c,
            Err(e) => {
                eprintln!("int8_layer_hashes: {}: {e}", path.display());
                failed = true;
                continue;
            }
        };
        if !case.tolerance.iter().any(|(t, _)| t == "i8") {
            continue;
        }
        match layer_run::run(&case) {
            None => {}
            Some(Ok(out)) => println!("hash {} {:#010x}", case.name, fnv1a(&out.data)),
            Some(Err(e)) => {
                eprintln!("int8_layer_hashes: {}: {e}", case.name);
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// FNV-1a (32-bit) of int8 bytes, as the firmware computes it.
fn fnv1a(bytes: &[i8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ b as u8 as u32).wrapping_mul(0x0100_0193)
    })
}
