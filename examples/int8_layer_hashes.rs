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
mod common;
#[path = "../tests/conformance/ops/int8/layer_run.rs"]
mod layer_run;
#[path = "../tests/conformance/params.rs"]
mod params;

use std::process::ExitCode;

fn main() -> ExitCode {
    common::hash_cases("int8_layer_hashes", |case| {
        if !common::has_i8(case) {
            return None;
        }
        layer_run::run(case).map(|r| r.map(|out| out.data))
    })
}
