//! stories260K with int8 weights on an emulated Cortex-M: Karpathy's llama2.c tinyllama
//! (5 layers, 64 wide, 512 tokens) generating a story greedily, the int8 model read in place
//! from flash. The model file `models/stories260K/stories260K_q8.bin` is what the host
//! example writes with `cargo run --release --example stories -- --int8 --write-q8 FILE`
//! (weights in groups of 32 per row, int8 KV cache, int8 attention); `tests/stories_q8_file.rs`
//! checks that regenerating it gives the same bytes, so the firmware's tokens can be compared
//! with the host's int8 path. See `story_run.rs` for the command line and the output.
//!
//! On the micro:bit (256 KiB of flash) the 290 KiB model does not fit: that build only says so.
#![no_std]
#![no_main]

use cortex_m_rt::entry;

#[cfg(not(feature = "microbit"))]
#[path = "../story_run.rs"]
mod story_run;

#[cfg(not(feature = "microbit"))]
mod int8 {
    use super::story_run::{self, Buffers, Model, CAPACITY, CONFIG};
    use core::ptr::addr_of_mut;
    use defmt::println;
    use microattn::models::q8::{Llama2Q8, Q8RunState};
    use microattn::models::{Align4, ModelError};
    use microattn_firmware::exit_failure;

    /// The int8 model file, in flash (`.rodata`), 4-aligned for the in-place f32 views.
    static MODEL: &Align4<[u8]> = &Align4(*include_bytes!(
        "../../../../models/stories260K/stories260K_q8.bin"
    ));

    const F32_LEN: usize = Q8RunState::f32_len(&CONFIG);
    const I8_LEN: usize = Q8RunState::i8_len(&CONFIG, CAPACITY);
    static mut F32_BUF: [f32; F32_LEN] = [0.0; F32_LEN];
    static mut I8_BUF: [i8; I8_LEN] = [0; I8_LEN];

    struct Q8<'a> {
        model: Llama2Q8<'a>,
        state: Q8RunState<'a>,
    }

    impl Model for Q8<'_> {
        fn forward(&mut self, token: u32, pos: usize) -> Result<&mut [f32], ModelError> {
            self.model.forward(&mut self.state, token, pos)
        }
    }

    fn load() -> Result<Q8<'static>, ModelError> {
        let model = Llama2Q8::from_bytes(&MODEL.0)?;
        if *model.config() != CONFIG {
            return Err(ModelError::StateMismatch);
        }
        // SAFETY: called once from `main`; the buffers are used only through this state.
        let (f, i) = unsafe { (&mut *addr_of_mut!(F32_BUF), &mut *addr_of_mut!(I8_BUF)) };
        let state = Q8RunState::new(&CONFIG, CAPACITY, f, i)?;
        Ok(Q8 { model, state })
    }

    pub fn main() -> ! {
        let clock = story_run::start_clock();
        let mut q8 = match load() {
            Ok(m) => m,
            Err(e) => {
                println!("loading the int8 model failed: {}", e);
                exit_failure()
            }
        };
        let kv_cache = 2 * CONFIG.kv_cache_len(CAPACITY);
        let buffers = Buffers {
            weights: MODEL.0.len(),
            kv_cache,
            activations_scratch: F32_LEN * 4 + I8_LEN - kv_cache,
        };
        let weights = "int8 (groups of 32)";
        story_run::run(weights, &mut q8, buffers, &clock)
    }
}

#[entry]
fn main() -> ! {
    #[cfg(not(feature = "microbit"))]
    {
        story_run::paint_stack();
        int8::main()
    }
    #[cfg(feature = "microbit")]
    {
        defmt::println!(
            "stories: the 290 KiB int8 model does not fit the micro:bit's 256 KiB of flash"
        );
        microattn_firmware::exit_success()
    }
}
