//! Instruction counting and stack measurement for the `bench` firmware.
//!
//! # Instructions
//!
//! QEMU models no cycle counter, but with `-icount shift=0` every executed instruction
//! advances virtual time by exactly 2^0 ns, and device timers run on virtual time. SysTick,
//! clocked from the processor clock, then counts down a fixed number of instructions per tick
//! (40 on the 25 MHz MPS2 boards). [`Clock`] extends the 24-bit SysTick counter with a wrap
//! count kept by the SysTick exception, and [`Clock::calibrate`] measures instructions per
//! tick with a loop of known length (`subs`/`bne`: 2 instructions per iteration), after
//! subtracting the cost of an empty measurement. A kernel's count is then
//! `(ticks - empty_ticks) · loop_instructions / (loop_ticks - empty_ticks)`, exact to within
//! one tick (≈ 40 instructions).
//!
//! # Stack
//!
//! [`paint_stack`] fills the free stack below the caller's stack pointer with a pattern, the
//! bench records its stack pointer just before calling the kernel wrapper ([`record_entry`]),
//! and [`stack_used`] finds the lowest word the kernel overwrote: the high-water mark below
//! the call, in bytes (the kernel's frames and the wrapper's few bytes).

use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::{SCB, SYST};
use cortex_m_rt::exception;

/// Element type of a benchmark run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// `sdpa`, f32.
    F32,
    /// `int8_sdpa`.
    I8,
    /// `sdpa_typed::<f16>`.
    F16,
}

impl Ty {
    /// Name in the `bench` lines.
    pub fn name(self) -> &'static str {
        match self {
            Ty::F32 => "f32",
            Ty::I8 => "i8",
            Ty::F16 => "f16",
        }
    }
}

#[allow(missing_docs)]
mod generated {
    use super::Ty;
    include!(concat!(env!("OUT_DIR"), "/bench_plan.rs"));
}

pub use generated::{ARENA, PACKED_I8, PLAN, POOL_F16, POOL_F32, POOL_I8};

/// SysTick reload: the full 24 bits.
const RELOAD: u32 = 0x00ff_ffff;
/// SysTick wraps seen by the exception handler.
static WRAPS: AtomicU32 = AtomicU32::new(0);

#[exception]
fn SysTick() {
    // The handler is the only writer (and thumbv6m has no atomic read-modify-write).
    WRAPS.store(
        WRAPS.load(Ordering::Relaxed).wrapping_add(1),
        Ordering::Relaxed,
    );
}

/// A 64-bit tick counter on SysTick (processor clock).
pub struct Clock {
    syst: SYST,
    /// Ticks of an empty measurement (`now(); now()`).
    empty: u64,
    /// Instructions of the calibration loop.
    loop_instructions: u64,
    /// Ticks of the calibration loop, empty measurement subtracted.
    loop_ticks: u64,
}

impl Clock {
    /// Starts SysTick from the processor clock with its exception enabled, then calibrates.
    pub fn start(mut syst: SYST) -> Clock {
        syst.disable_counter();
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(RELOAD);
        syst.clear_current();
        syst.enable_interrupt();
        syst.enable_counter();
        let mut clock = Clock {
            syst,
            empty: 0,
            loop_instructions: 1,
            loop_ticks: 1,
        };
        clock.calibrate();
        clock
    }

    /// Ticks since start. Reads inside a critical section: a wrap whose exception is still
    /// pending is counted by looking at the pending bit and re-reading the counter.
    #[inline(never)]
    pub fn now(&self) -> u64 {
        cortex_m::interrupt::free(|_| {
            let mut wraps = WRAPS.load(Ordering::Relaxed) as u64;
            let mut current = SYST::get_current();
            if SCB::is_pendst_pending() {
                wraps += 1;
                current = SYST::get_current();
            }
            wraps * (RELOAD as u64 + 1) + (RELOAD - current) as u64
        })
    }

    /// Measures the empty measurement and the calibration loop (the smallest of three tries
    /// each, though under icount they agree).
    fn calibrate(&mut self) {
        const ITERATIONS: u32 = 2_500_000;
        let mut empty = u64::MAX;
        let mut looped = u64::MAX;
        for _ in 0..3 {
            let t0 = self.now();
            let t1 = self.now();
            empty = empty.min(t1 - t0);
            let t0 = self.now();
            count_down(ITERATIONS);
            let t1 = self.now();
            looped = looped.min(t1 - t0);
        }
        // Known: 2 instructions per iteration. The call, the argument move and the return
        // add about 3 more (3e-6 of the total), left out.
        self.empty = empty;
        self.loop_instructions = 2 * ITERATIONS as u64;
        self.loop_ticks = looped.saturating_sub(empty).max(1);
        let _ = &self.syst;
    }

    /// Instructions per tick, × 1000 (for the report).
    pub fn milli_instructions_per_tick(&self) -> u64 {
        (self.loop_instructions * 1000 + self.loop_ticks / 2) / self.loop_ticks
    }

    /// Instructions `f` executes, and its result.
    pub fn instructions<R>(&self, f: impl FnOnce() -> R) -> (u64, R) {
        let t0 = self.now();
        let r = f();
        let t1 = self.now();
        let ticks = (t1 - t0).saturating_sub(self.empty);
        // ticks < 2^32 and loop_instructions < 2^23: the product fits a u64.
        let n = (ticks * self.loop_instructions + self.loop_ticks / 2) / self.loop_ticks;
        (n, r)
    }

    /// Disables or enables the SysTick exception (off while measuring the stack, so that no
    /// exception frame lands on it).
    pub fn set_interrupt(&mut self, on: bool) {
        if on {
            self.syst.enable_interrupt();
        } else {
            self.syst.disable_interrupt();
        }
    }
}

/// `n` iterations of a two-instruction loop (`subs`, `bne`); `n >= 1`.
#[inline(never)]
fn count_down(n: u32) {
    // SAFETY: only decrements a scratch register.
    unsafe {
        core::arch::asm!(
            "2:",
            "subs {n}, #1",
            "bne 2b",
            n = inout(reg) n => _,
            options(nomem, nostack),
        );
    }
}

/// Stack paint pattern.
const PAINT: u32 = 0xcccc_cccc;
/// Bytes just below the stack pointer left unpainted.
const PAINT_GUARD: usize = 16;

extern "C" {
    /// Lowest address of the stack (cortex-m-rt's linker script).
    static _stack_end: u32;
}

/// Stack pointer just before the call of the last kernel wrapper ([`record_entry`]).
static ENTRY_SP: AtomicUsize = AtomicUsize::new(0);

/// Current stack pointer.
#[inline(always)]
fn stack_pointer() -> usize {
    let sp: usize;
    // SAFETY: reads SP.
    unsafe { core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack)) };
    sp
}

/// Records the stack pointer just before the call of a kernel wrapper: the reference of
/// [`stack_used`], so the bench's own frames are not counted.
#[inline(always)]
pub fn record_entry() {
    ENTRY_SP.store(stack_pointer(), Ordering::Relaxed);
}

/// Paints the free stack, from its bottom to just below the current stack pointer. Inlined
/// into the caller, so only the caller's frame is above the painted region.
#[inline(always)]
pub fn paint_stack() {
    let sp = stack_pointer();
    let mut p = core::ptr::addr_of!(_stack_end) as usize;
    while p + 4 <= sp - PAINT_GUARD {
        // SAFETY: [bottom, sp - guard) is free stack: nothing lives below the stack pointer
        // and no exception handler runs while the bench measures the stack.
        unsafe { core::ptr::write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
}

/// Bytes of stack the last kernel used below its wrapper's entry stack pointer, since
/// [`paint_stack`].
#[inline(never)]
pub fn stack_used() -> usize {
    let top = ENTRY_SP.load(Ordering::Relaxed);
    let mut p = core::ptr::addr_of!(_stack_end) as usize;
    while p < top {
        // SAFETY: reading the painted region.
        if unsafe { core::ptr::read_volatile(p as *const u32) } != PAINT {
            break;
        }
        p += 4;
    }
    top.saturating_sub(p)
}

extern "C" {
    /// Top of the stack (cortex-m-rt's linker script).
    static _stack_start: u32;
}

/// Bytes of stack used since reset (cortex-m-rt's `paint-stack` painted it with
/// `0xcccccccc`): from the top of the stack down to the lowest overwritten word.
pub fn stack_used_since_reset() -> usize {
    let top = core::ptr::addr_of!(_stack_start) as usize;
    let mut p = core::ptr::addr_of!(_stack_end) as usize;
    while p < top {
        // SAFETY: reading the stack region below the current frame (painted or used).
        if unsafe { core::ptr::read_volatile(p as *const u32) } != PAINT {
            break;
        }
        p += 4;
    }
    top.saturating_sub(p)
}

/// `n / d` with three decimals, written into `buf` (no float formatting on target).
pub fn ratio_3(n: u64, d: u64, buf: &mut [u8; 24]) -> &str {
    let d = d.max(1);
    // n < 2^40 in practice, so n * 1000 fits a u64.
    let milli = (n.saturating_mul(1000) + d / 2) / d;
    let (int, frac) = (milli / 1000, (milli % 1000) as u32);
    let mut at = buf.len();
    for digit in [frac % 10, frac / 10 % 10, frac / 100] {
        at -= 1;
        buf[at] = b'0' + digit as u8;
    }
    at -= 1;
    buf[at] = b'.';
    let mut int = int;
    loop {
        at -= 1;
        buf[at] = b'0' + (int % 10) as u8;
        int /= 10;
        if int == 0 || at == 0 {
            break;
        }
    }
    core::str::from_utf8(&buf[at..]).unwrap_or("?")
}
