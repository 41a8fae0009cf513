//! microattn on an STM32F4 Discovery (STM32F407VG, Cortex-M4F at 168 MHz): the workload of
//! `../common/demo.rs`, timed in core cycles with the DWT cycle counter, green LED (PD12),
//! defmt over RTT. Flash and watch with `cargo run --release` (probe-rs through the on-board
//! ST-LINK; see the README). The int8 kernel uses the Cortex-M DSP instructions and the f32
//! kernel the FPU (built with `-C target-cpu=cortex-m4`, `.cargo/config.toml`).
#![no_std]
#![no_main]

#[path = "../../common/demo.rs"]
mod demo;

use cortex_m_rt::entry;
use defmt_rtt as _;
use panic_probe as _;
use stm32f4xx_hal::dwt::MonoTimer;
use stm32f4xx_hal::{pac, prelude::*};

#[entry]
fn main() -> ! {
    let (Some(dp), Some(cp)) = (pac::Peripherals::take(), cortex_m::Peripherals::take()) else {
        panic!("peripherals taken twice");
    };
    let rcc = dp.RCC.constrain();
    let clocks = rcc.cfgr.use_hse(8.MHz()).sysclk(168.MHz()).freeze();
    let gpiod = dp.GPIOD.split();
    let mut led = gpiod.pd12.into_push_pull_output();
    let mut delay = cp.SYST.delay(&clocks);
    // The DWT cycle counter (started by the HAL's monotonic timer) counts core cycles.
    let _mono = MonoTimer::new(cp.DWT, cp.DCB, &clocks);
    demo::run(
        "STM32F407",
        &mut led,
        &mut delay,
        cortex_m::peripheral::DWT::cycle_count,
        "cycles",
    )
}
