//! microattn on a Raspberry Pi Pico (RP2040, Cortex-M0+ at 125 MHz): the workload of
//! `../common/demo.rs`, timed with the RP2040's microsecond timer, LED on GPIO 25, defmt over
//! RTT. Flash and watch with `cargo run --release` (probe-rs and a debug probe; see the README).
#![no_std]
#![no_main]

#[path = "../../common/demo.rs"]
mod demo;

use defmt_rtt as _;
use panic_probe as _;
use rp2040_hal as hal;

/// The second-stage boot loader for the Pico's W25Q080 flash, placed by `memory.x`.
#[link_section = ".boot2"]
#[no_mangle]
#[used]
pub static BOOT2_FIRMWARE: [u8; 256] = rp2040_boot2::BOOT_LOADER_W25Q080;

/// The Pico's crystal.
const XTAL_FREQ_HZ: u32 = 12_000_000;

#[hal::entry]
fn main() -> ! {
    let Some(mut pac) = hal::pac::Peripherals::take() else {
        panic!("peripherals taken twice");
    };
    let mut watchdog = hal::Watchdog::new(pac.WATCHDOG);
    let Ok(clocks) = hal::clocks::init_clocks_and_plls(
        XTAL_FREQ_HZ,
        pac.XOSC,
        pac.CLOCKS,
        pac.PLL_SYS,
        pac.PLL_USB,
        &mut pac.RESETS,
        &mut watchdog,
    ) else {
        panic!("clock set-up failed");
    };
    let sio = hal::Sio::new(pac.SIO);
    let pins = hal::gpio::Pins::new(
        pac.IO_BANK0,
        pac.PADS_BANK0,
        sio.gpio_bank0,
        &mut pac.RESETS,
    );
    let mut led = pins.gpio25.into_push_pull_output();
    // The timer is both the embedded-hal delay and the clock (microseconds).
    let timer = hal::Timer::new(pac.TIMER, &mut pac.RESETS, &clocks);
    let mut delay = timer;
    demo::run(
        "RP2040",
        &mut led,
        &mut delay,
        || timer.get_counter_low(),
        "us",
    )
}
