//! Demo firmware: causal self-attention over a short token sequence with the fixed-size API,
//! printed over semihosting. Later work replaces it by a small language model.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use defmt::println;
use microattn::attention::{sdpa_fixed, SdpaParams};
use microattn::mask::{Mask, MaskTerm};
use microattn_firmware::{exit_failure, exit_success, MACHINE};

const TOKENS: usize = 8;
const WIDTH: usize = 16;

/// A deterministic embedding: sinusoids of the token position (as a positional encoding).
fn embed() -> [[f32; WIDTH]; TOKENS] {
    let mut x = [[0.0f32; WIDTH]; TOKENS];
    for (pos, row) in x.iter_mut().enumerate() {
        for (i, value) in row.iter_mut().enumerate() {
            let rate = libm::powf(100.0, -((i / 2 * 2) as f32) / WIDTH as f32);
            let angle = pos as f32 * rate;
            *value = if i % 2 == 0 {
                libm::sinf(angle)
            } else {
                libm::cosf(angle)
            };
        }
    }
    x
}

#[entry]
fn main() -> ! {
    println!(
        "microattn demo on {=str}: causal self-attention, {=usize} tokens x {=usize} features",
        MACHINE, TOKENS, WIDTH
    );
    let x = embed();
    let mut out = [[0.0f32; WIDTH]; TOKENS];
    let causal = [MaskTerm::Causal];
    let windowed = [MaskTerm::Causal, MaskTerm::Sliding { left: 2, right: 0 }];
    for (label, terms) in [("causal", &causal[..]), ("causal window 3", &windowed[..])] {
        let params = SdpaParams {
            mask: Mask::new(terms),
            ..Default::default()
        };
        if let Err(e) = sdpa_fixed(&x, &x, &x, &mut out, &params) {
            println!("sdpa failed: {}", e);
            exit_failure();
        }
        println!("{=str}:", label);
        for (t, row) in out.iter().enumerate() {
            println!("  token {=usize} -> {}", t, &row[..4]);
        }
        // Token 0 sees only itself, so its output is its own value row.
        if out[0] != x[0] {
            println!("token 0 does not attend only to itself");
            exit_failure();
        }
    }
    println!("demo done");
    exit_success()
}
