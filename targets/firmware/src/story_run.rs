//! The generation loop, command line and reports shared by the `stories` (int8) and
//! `stories-f32` firmware, included by both with `#[path]` (each binary embeds its own
//! model; the library crate stays model-free).
//!
//! Command line (semihosting, after the program name), all optional:
//! `steps=N` (default and maximum [`CAPACITY`]), `ids` (print every token id at the end, for
//! `scripts/qemu-stories`), `prompt=TEXT` (the rest of the line). Sampling is greedy.
//!
//! Output: the story goes to the host's stderr as raw bytes, piece by piece as it is
//! generated (semihosting `:tt` opened for append; defmt frames on stdout could only show
//! one piece per line). Everything else is defmt on stdout:
//!
//! ```text
//! stories260K on MACHINE: WEIGHTS weights, greedy, N steps, prompt "..."
//! instructions per token: N average over N tokens (first N, last N)
//! ids: [1, 403, ...]                                 (with `ids`)
//! flash used: N bytes (weights N, tokenizer N, code and the rest N)
//! RAM used: N bytes (statics N: KV cache N, activations and scratch N, tables N, other N;
//!     stack high-water mark N)
//! done
//! ```
//!
//! Instructions come from `-icount shift=0` and SysTick ([`Clock`]); each token counts the
//! forward pass, the greedy choice and the decoding of its piece, not the printing.

use core::ptr::{addr_of, addr_of_mut};
use cortex_m_semihosting::hio;
use defmt::println;
use microattn::models::generate::Generation;
use microattn::models::llama2::Config;
use microattn::models::sampler::Sampler;
use microattn::models::tokenizer::{encode_capacity, printable, Tokenizer};
use microattn::models::ModelError;
use microattn_firmware::bench::Clock;
use microattn_firmware::{command_line, exit_failure, exit_success, MACHINE};

/// The model's sizes (checked against the embedded file's header at start).
pub const CONFIG: Config = Config::STORIES260K;

/// Positions of the KV cache: the default (and largest) number of steps, as `run.c`'s.
pub const CAPACITY: usize = 256;

/// Bytes of the command line read.
const CMDLINE: usize = 256;

/// The tokenizer file, `run.c`'s `tok512.bin`.
pub static TOKENIZER: &[u8] = include_bytes!("../../../models/stories260K/tok512.bin");

static mut CMDLINE_BUF: [u8; CMDLINE] = [0; CMDLINE];
static mut OFFSETS: [u32; CONFIG.vocab_size] = [0; CONFIG.vocab_size];
static mut PROMPT: [u32; encode_capacity(CMDLINE)] = [0; encode_capacity(CMDLINE)];
static mut IDS: [u32; CAPACITY + 1] = [0; CAPACITY + 1];

/// A model with its run state.
pub trait Model {
    /// Logits of `token` at `pos`.
    fn forward(&mut self, token: u32, pos: usize) -> Result<&mut [f32], ModelError>;
}

/// What a binary's buffers hold, for the RAM report (bytes).
pub struct Buffers {
    /// Weights in flash (the model file).
    pub weights: usize,
    /// Keys and values of every layer for [`CAPACITY`] positions.
    pub kv_cache: usize,
    /// Everything else of the run state: activations, logits, quantized inputs and scales.
    pub activations_scratch: usize,
}

extern "C" {
    static __vector_table: u32;
    static __sidata: u32;
    static __sdata: u32;
    static __edata: u32;
    static __sheap: u32;
    static _stack_start: u32;
    static _stack_end: u32;
}

/// Address of a linker symbol.
macro_rules! symbol {
    ($name:ident) => {{
        // SAFETY: only the address is taken (safe since Rust 1.82, `unsafe` before).
        #[allow(unused_unsafe)]
        let address = unsafe { addr_of!($name) as usize };
        address
    }};
}

/// Stack paint pattern.
const PAINT: u32 = 0xcccc_cccc;

/// Paints the free stack below the caller's frame (inlined, so the caller's frame is above
/// the painted region and counts as used).
#[inline(always)]
pub fn paint_stack() {
    let sp: usize;
    // SAFETY: reads SP.
    unsafe { core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack)) };
    let mut p = symbol!(_stack_end);
    while p + 4 <= sp - 64 {
        // SAFETY: [stack bottom, sp - 64) is free stack; the SysTick handler, the only
        // exception, is not running yet.
        unsafe { core::ptr::write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
}

/// Bytes of stack used since [`paint_stack`]: from the top down to the lowest overwritten word.
fn stack_high_water() -> usize {
    let top = symbol!(_stack_start);
    let mut p = symbol!(_stack_end);
    // SAFETY: reads the stack region below the current frame, plain words.
    while p < top && unsafe { core::ptr::read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    top - p
}

/// Parsed command line.
struct Options<'c> {
    steps: usize,
    ids: bool,
    prompt: &'c str,
}

fn parse(cmdline: &str) -> Result<Options<'_>, &str> {
    let (head, prompt) = match cmdline.find("prompt=") {
        Some(i) => (&cmdline[..i], &cmdline[i + "prompt=".len()..]),
        None => (cmdline, ""),
    };
    let mut o = Options {
        steps: CAPACITY,
        ids: false,
        prompt,
    };
    // The first word is the program name.
    for word in head.split(' ').skip(1).filter(|w| !w.is_empty()) {
        if word == "ids" {
            o.ids = true;
        } else if let Some(n) = word.strip_prefix("steps=") {
            o.steps = n.parse().map_err(|_| word)?;
            if o.steps == 0 || o.steps > CAPACITY {
                return Err(word);
            }
        } else {
            return Err(word);
        }
    }
    Ok(o)
}

/// Runs the generation with `model`, prints the story, the counts and the memory, and ends
/// the QEMU run (status 0 on success).
pub fn run(weights: &str, model: &mut impl Model, buffers: Buffers, clock: &Clock) -> ! {
    match generate(weights, model, &buffers, clock) {
        Ok(()) => {
            println!("done");
            exit_success()
        }
        Err(e) => {
            println!("stories failed: {}", e);
            exit_failure()
        }
    }
}

fn generate(
    weights: &str,
    model: &mut impl Model,
    buffers: &Buffers,
    clock: &Clock,
) -> Result<(), ModelError> {
    // SAFETY: `run` is called once, from `main`; these statics are used only here.
    let (cmdline_buf, offsets, prompt_buf, ids) = unsafe {
        (
            &mut *addr_of_mut!(CMDLINE_BUF),
            &mut *addr_of_mut!(OFFSETS),
            &mut *addr_of_mut!(PROMPT),
            &mut *addr_of_mut!(IDS),
        )
    };
    let cmdline = command_line(cmdline_buf);
    let o = match parse(cmdline) {
        Ok(o) => o,
        Err(word) => {
            println!(
                "bad argument {=str} (steps=1..={=usize}, ids, prompt=TEXT)",
                word, CAPACITY
            );
            exit_failure()
        }
    };
    let tokenizer = Tokenizer::new(TOKENIZER, CONFIG.vocab_size, offsets)?;
    let n = tokenizer.encode(o.prompt.as_bytes(), true, false, prompt_buf)?;
    let prompt = &prompt_buf[..n];
    println!(
        "stories260K on {=str}: {=str} weights, greedy, {=usize} steps, prompt {=str:?}",
        MACHINE, weights, o.steps, o.prompt
    );

    let mut stderr = hio::hstderr().ok();
    let mut sampler = Sampler::new(0.0, 0.9, 1)?;
    let mut generation = Generation::new(prompt, o.steps)?;
    ids[0] = prompt[0];
    let mut n_ids = 1;
    let (mut total, mut first, mut last) = (0u64, 0u64, 0u64);
    let mut tokens = 0u64;
    while let Some((token, pos)) = generation.input() {
        let (count, piece) = clock.instructions(|| -> Result<_, ModelError> {
            let logits = model.forward(token, pos)?;
            let step = generation.accept(logits, &mut sampler, &mut [])?;
            Ok(step.map(|s| (s.next, printable(tokenizer.decode(s.prev, s.next)))))
        });
        tokens += 1;
        total += count;
        if tokens == 1 {
            first = count;
        }
        last = count;
        let Some((next, piece)) = piece? else { break };
        if let Some(slot) = ids.get_mut(n_ids) {
            *slot = next;
            n_ids += 1;
        }
        if let Some(out) = stderr.as_mut() {
            // A failed write only loses the text; the ids and counts still report.
            let _ = out.write_all(piece);
        }
    }
    if let Some(out) = stderr.as_mut() {
        let _ = out.write_all(b"\n");
    }
    println!(
        "instructions per token: {=u64} average over {=u64} tokens (first {=u64}, last {=u64})",
        total / tokens.max(1),
        tokens,
        first,
        last
    );
    if o.ids {
        println!("ids: {}", &ids[..n_ids]);
    }
    report_memory(buffers);
    Ok(())
}

/// Flash and RAM from the linker symbols and the stack paint.
fn report_memory(b: &Buffers) {
    let data = symbol!(__edata) - symbol!(__sdata);
    let flash = symbol!(__sidata) + data - symbol!(__vector_table);
    println!(
        "flash used: {=usize} bytes (weights {=usize}, tokenizer {=usize}, code and the rest {=usize})",
        flash,
        b.weights,
        TOKENIZER.len(),
        flash - b.weights - TOKENIZER.len()
    );
    let statics = symbol!(__sheap) - symbol!(__sdata);
    // SAFETY: only the sizes are read.
    let tables = unsafe {
        core::mem::size_of_val(&*addr_of!(CMDLINE_BUF))
            + core::mem::size_of_val(&*addr_of!(OFFSETS))
            + core::mem::size_of_val(&*addr_of!(PROMPT))
            + core::mem::size_of_val(&*addr_of!(IDS))
    };
    let stack = stack_high_water();
    println!(
        "RAM used: {=usize} bytes (statics {=usize}: KV cache {=usize}, activations and scratch {=usize}, tables {=usize}, other {=usize}; stack high-water mark {=usize})",
        statics + stack,
        statics,
        b.kv_cache,
        b.activations_scratch,
        tables,
        statics.saturating_sub(b.kv_cache + b.activations_scratch + tables),
        stack
    );
}

/// The SysTick clock of the `bench` firmware, or a failed run.
pub fn start_clock() -> Clock {
    match cortex_m::Peripherals::take() {
        Some(p) => Clock::start(p.SYST),
        None => {
            println!("peripherals taken twice");
            exit_failure()
        }
    }
}
