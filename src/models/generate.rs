//! The generation loop of llama2.c's `run.c`, split into steps so that any model (f32 or
//! int8) and any output (stdout, a UART, a test buffer) can drive it without allocating.
//!
//! The first token is the prompt's first (BOS); at each position the model runs on the
//! current token; while the prompt lasts its next token is forced, afterwards the sampler
//! chooses; a sampled BOS ends the sequence; the piece to print is the tokenizer's decoding
//! of `(current, next)`. `run.c` prints a newline after the loop.
//!
//! ```no_run
//! # use microattn::models::{generate::Generation, llama2::{Llama2, RunState}, ModelError};
//! # use microattn::models::{sampler::Sampler, tokenizer::{printable, Tokenizer}};
//! # fn demo(model: &Llama2, state: &mut RunState, tok: &Tokenizer, prompt: &[u32])
//! #     -> Result<(), ModelError> {
//! let mut sampler = Sampler::new(0.0, 0.9, 1)?;
//! let mut gen = Generation::new(prompt, 256)?;
//! while let Some((token, pos)) = gen.input() {
//!     let logits = model.forward(state, token, pos)?;
//!     let Some(step) = gen.accept(logits, &mut sampler, &mut [])? else { break };
//!     let _bytes_to_print = printable(tok.decode(step.prev, step.next));
//! }
//! # Ok(()) }
//! ```

use super::sampler::{ProbIndex, Sampler};
use super::tokenizer::BOS;
use super::ModelError;

/// One generated token: the token the model ran on and the one that follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Step {
    /// The token the model ran on.
    pub prev: u32,
    /// The next token (forced from the prompt or sampled).
    pub next: u32,
}

/// The state of a `run.c` generation loop.
#[derive(Debug, Clone, Copy)]
pub struct Generation<'p> {
    prompt: &'p [u32],
    steps: usize,
    pos: usize,
    token: u32,
    done: bool,
}

impl<'p> Generation<'p> {
    /// A loop over `steps` positions starting with `prompt` (usually BOS followed by the
    /// encoded prompt text).
    ///
    /// Errors: an empty prompt ([`ModelError::Unencodable`]).
    pub fn new(prompt: &'p [u32], steps: usize) -> Result<Self, ModelError> {
        let &token = prompt.first().ok_or(ModelError::Unencodable)?;
        Ok(Generation {
            prompt,
            steps,
            pos: 0,
            token,
            done: false,
        })
    }

    /// The `(token, position)` to run the model on next, or `None` when the loop is over.
    pub fn input(&self) -> Option<(u32, usize)> {
        (!self.done && self.pos < self.steps).then_some((self.token, self.pos))
    }

    /// Positions run so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Takes the logits of the step [`Generation::input`] announced and returns the token to
    /// print, or `None` when the next token is BOS (the end of the sequence). `probindex` is
    /// the sampler's top-p buffer (see [`Sampler::sample`]); the sampler is not consulted
    /// while the prompt lasts.
    pub fn accept(
        &mut self,
        logits: &mut [f32],
        sampler: &mut Sampler,
        probindex: &mut [ProbIndex],
    ) -> Result<Option<Step>, ModelError> {
        if self.input().is_none() {
            return Ok(None);
        }
        let next = match self.prompt.get(self.pos + 1) {
            Some(&forced) => forced,
            None => sampler.sample(logits, probindex)?,
        };
        self.pos += 1;
        if next == BOS {
            self.done = true;
            return Ok(None);
        }
        let step = Step {
            prev: self.token,
            next,
        };
        self.token = next;
        Ok(Some(step))
    }
}
