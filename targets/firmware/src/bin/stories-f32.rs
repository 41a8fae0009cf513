//! stories260K with f32 weights on an emulated Cortex-M: the checkpoint
//! `models/stories260K/stories260K.bin` (1 MiB) read in place from flash, an f32 KV cache,
//! greedy generation. Built for the machines with 4 MiB of code memory (mps2-an385/386/500/505);
//! the mps3-an547's 512 KiB ITCM and the micro:bit's 256 KiB of flash cannot hold it, and
//! those builds only say so. See `story_run.rs` for the command line and the output.
#![no_std]
#![no_main]

use cortex_m_rt::entry;

#[cfg(not(any(feature = "mps3-an547", feature = "microbit")))]
#[path = "../story_run.rs"]
mod story_run;

#[cfg(not(any(feature = "mps3-an547", feature = "microbit")))]
mod f32_model {
    use super::story_run::{self, Buffers, Model, CAPACITY, CONFIG};
    use core::ptr::addr_of_mut;
    use defmt::println;
    use microattn::models::llama2::{Llama2, RunState};
    use microattn::models::{Align4, ModelError};
    use microattn_firmware::exit_failure;

    /// The f32 checkpoint, in flash (`.rodata`), 4-aligned for the in-place f32 views.
    static MODEL: &Align4<[u8]> = &Align4(*include_bytes!(
        "../../../../models/stories260K/stories260K.bin"
    ));

    const LEN: usize = RunState::buffer_len(&CONFIG, CAPACITY);
    static mut BUF: [f32; LEN] = [0.0; LEN];

    struct F32<'a> {
        model: Llama2<'a>,
        state: RunState<'a>,
    }

    impl Model for F32<'_> {
        fn forward(&mut self, token: u32, pos: usize) -> Result<&mut [f32], ModelError> {
            self.model.forward(&mut self.state, token, pos)
        }
    }

    fn load() -> Result<F32<'static>, ModelError> {
        let model = Llama2::from_bytes(&MODEL.0)?;
        if *model.config() != CONFIG {
            return Err(ModelError::StateMismatch);
        }
        // SAFETY: called once from `main`; the buffer is used only through this state.
        let buf = unsafe { &mut *addr_of_mut!(BUF) };
        let state = RunState::new(&CONFIG, CAPACITY, buf)?;
        Ok(F32 { model, state })
    }

    pub fn main() -> ! {
        let clock = story_run::start_clock();
        let mut m = match load() {
            Ok(m) => m,
            Err(e) => {
                println!("loading the f32 model failed: {}", e);
                exit_failure()
            }
        };
        let kv_cache = 2 * CONFIG.kv_cache_len(CAPACITY) * 4;
        let buffers = Buffers {
            weights: MODEL.0.len(),
            kv_cache,
            activations_scratch: LEN * 4 - kv_cache,
        };
        story_run::run("f32", &mut m, buffers, &clock)
    }
}

#[entry]
fn main() -> ! {
    #[cfg(not(any(feature = "mps3-an547", feature = "microbit")))]
    {
        story_run::paint_stack();
        f32_model::main()
    }
    #[cfg(any(feature = "mps3-an547", feature = "microbit"))]
    {
        defmt::println!(
            "stories-f32: the 1 MiB f32 checkpoint does not fit this machine's code memory"
        );
        microattn_firmware::exit_success()
    }
}
