//! The llama2.c tokenizer: SentencePiece-style BPE with byte fallback, read from the
//! `tokenizer.bin` format (`tok512.bin` for stories260K), without allocating.
//!
//! File format: `max_token_length` (`i32`), then per piece its merge `score` (`f32`), its
//! byte length (`i32`) and its bytes, all little-endian. Piece 0 is `<unk>`, 1 is BOS, 2 is
//! EOS, pieces 3..259 are the raw bytes `<0x00>`..`<0xFF>`.
//!
//! [`Tokenizer::encode`] and [`Tokenizer::decode`] follow `run.c`'s `encode` and `decode`:
//! BOS, a dummy-prefix `" "` piece before non-empty text, one piece per UTF-8 character
//! (or one byte-fallback piece per byte when the character has no piece), then repeated
//! merges of the adjacent pair whose concatenation is the piece with the highest score. Like
//! the C strings of `run.c`, a piece ends at its first NUL byte and a text at its first NUL.
//!
//! Lookups scan the vocabulary (no sorted index, so no buffer for one): encoding `n`
//! characters costs O(n² · vocab) piece comparisons, which for a prompt of a few dozen
//! characters and 512 pieces is well under a millisecond on a host. Decoding is O(1).
//!
//! ```
//! use microattn::models::tokenizer::{Tokenizer, BOS};
//! // A four-piece vocabulary: <unk>, BOS, EOS and " ".
//! let mut file = Vec::new();
//! file.extend_from_slice(&5i32.to_le_bytes());
//! for piece in ["<unk>", "\n<s>\n", "\n</s>\n", " "] {
//!     file.extend_from_slice(&0.0f32.to_le_bytes());
//!     file.extend_from_slice(&(piece.len() as i32).to_le_bytes());
//!     file.extend_from_slice(piece.as_bytes());
//! }
//! let mut offsets = [0u32; 4];
//! let tok = Tokenizer::new(&file, 4, &mut offsets)?;
//! let mut tokens = [0u32; 8];
//! let n = tok.encode(b" ", true, false, &mut tokens)?;
//! assert_eq!(&tokens[..n], &[BOS, 3, 3]); // BOS, dummy prefix, the space itself
//! assert_eq!(tok.decode(BOS, 3), b""); // a leading space after BOS is dropped
//! # Ok::<(), microattn::models::ModelError>(())
//! ```

use super::ModelError;

/// The beginning-of-sequence token: starts every sequence and, when sampled, ends generation.
pub const BOS: u32 = 1;
/// The end-of-sequence token.
pub const EOS: u32 = 2;

/// Byte-fallback pieces start here: byte `b` is token `b + 3`.
const BYTE_TOKEN_OFFSET: u32 = 3;

/// Every byte value once, so a byte piece can be returned as a one-byte slice.
static BYTES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i as u8;
        i += 1;
    }
    t
};

/// Token slots [`Tokenizer::encode`] needs for a text of `text_len` bytes: one per byte,
/// BOS, the dummy prefix and EOS.
pub const fn encode_capacity(text_len: usize) -> usize {
    text_len.saturating_add(3)
}

/// A tokenizer over the bytes of a `tokenizer.bin` file and a caller-provided table of piece
/// offsets (`vocab_size` `u32`s).
#[derive(Debug, Clone, Copy)]
pub struct Tokenizer<'a> {
    bytes: &'a [u8],
    offsets: &'a [u32],
    max_token_length: usize,
}

impl<'a> Tokenizer<'a> {
    /// Parses the file: checks every record and fills `offsets` (at least `vocab_size` long;
    /// the vocabulary size is not in the file, it comes from the model's header).
    ///
    /// Errors: a short `offsets` ([`ModelError::BufferTooSmall`]), a zero vocabulary, a
    /// negative length or a record past the end of the file ([`ModelError::InvalidTokenizer`]).
    pub fn new(
        bytes: &'a [u8],
        vocab_size: usize,
        offsets: &'a mut [u32],
    ) -> Result<Self, ModelError> {
        let found = offsets.len();
        let offsets = offsets
            .get_mut(..vocab_size)
            .ok_or(ModelError::BufferTooSmall {
                needed: vocab_size,
                found,
            })?;
        if vocab_size == 0 {
            return Err(ModelError::InvalidTokenizer);
        }
        let max_token_length = read_i32(bytes, 0).ok_or(ModelError::InvalidTokenizer)?;
        let mut at = 4usize;
        for slot in offsets.iter_mut() {
            *slot = u32::try_from(at).map_err(|_| ModelError::InvalidTokenizer)?;
            let len = read_i32(bytes, at + 4).ok_or(ModelError::InvalidTokenizer)?;
            let len = usize::try_from(len).map_err(|_| ModelError::InvalidTokenizer)?;
            at = at
                .checked_add(8)
                .and_then(|a| a.checked_add(len))
                .filter(|&end| end <= bytes.len())
                .ok_or(ModelError::InvalidTokenizer)?;
        }
        Ok(Tokenizer {
            bytes,
            offsets,
            max_token_length: usize::try_from(max_token_length).unwrap_or(0),
        })
    }

    /// Number of pieces.
    pub fn vocab_size(&self) -> usize {
        self.offsets.len()
    }

    /// The longest piece in bytes, as the file states it.
    pub fn max_token_length(&self) -> usize {
        self.max_token_length
    }

    /// The bytes of piece `id` up to its first NUL, or `None` outside the vocabulary.
    pub fn piece(&self, id: u32) -> Option<&'a [u8]> {
        let at = *self.offsets.get(id as usize)? as usize;
        let len = usize::try_from(read_i32(self.bytes, at + 4)?).ok()?;
        let raw = self.bytes.get(at + 8..at + 8 + len)?;
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        Some(&raw[..end])
    }

    /// The merge score of piece `id` (`-inf` outside the vocabulary).
    pub fn score(&self, id: u32) -> f32 {
        self.offsets
            .get(id as usize)
            .and_then(|&at| read_i32(self.bytes, at as usize))
            .map_or(f32::NEG_INFINITY, |bits| f32::from_bits(bits as u32))
    }

    /// The id of the piece equal to `a` followed by `b` (the lowest such id).
    fn lookup_concat(&self, a: &[u8], b: &[u8]) -> Option<u32> {
        (0..self.offsets.len() as u32).find(|&id| {
            self.piece(id).is_some_and(|p| {
                p.len() == a.len() + b.len() && p[..a.len()] == *a && p[a.len()..] == *b
            })
        })
    }

    /// The id of the piece equal to `s` (the lowest such id).
    pub fn lookup(&self, s: &[u8]) -> Option<u32> {
        self.lookup_concat(s, &[])
    }

    /// Encodes `text` into `tokens` and returns how many were written: BOS if `bos`, the
    /// pieces, EOS if `eos`. `tokens` needs at most [`encode_capacity`]`(text.len())` slots.
    ///
    /// Errors: `tokens` too short ([`ModelError::BufferTooSmall`]); a non-empty text with no
    /// `" "` piece, or a byte fallback beyond the vocabulary ([`ModelError::Unencodable`]).
    pub fn encode(
        &self,
        text: &[u8],
        bos: bool,
        eos: bool,
        tokens: &mut [u32],
    ) -> Result<usize, ModelError> {
        let text = &text[..text.iter().position(|&b| b == 0).unwrap_or(text.len())];
        let mut out = Output {
            tokens,
            n: 0,
            needed: encode_capacity(text.len()),
        };
        if bos {
            out.push(BOS)?;
        }
        if !text.is_empty() {
            // SentencePiece's add_dummy_prefix: the text is encoded as if it began with a space.
            out.push(self.lookup(b" ").ok_or(ModelError::Unencodable)?)?;
        }
        // One piece per UTF-8 character (a leading byte and up to three continuation bytes).
        let mut ch = [0u8; 4];
        let mut len = 0usize;
        for (i, &c) in text.iter().enumerate() {
            if c & 0xC0 != 0x80 {
                len = 0;
            }
            ch[len] = c;
            len += 1;
            let next_continues = text.get(i + 1).is_some_and(|&n| n & 0xC0 == 0x80);
            if next_continues && len < 4 {
                continue;
            }
            match self.lookup(&ch[..len]) {
                Some(id) => out.push(id)?,
                None => {
                    for &b in &ch[..len] {
                        let id = u32::from(b) + BYTE_TOKEN_OFFSET;
                        if id as usize >= self.vocab_size() {
                            return Err(ModelError::Unencodable);
                        }
                        out.push(id)?;
                    }
                }
            }
            len = 0;
        }
        // Merge the adjacent pair that forms the best-scoring piece until none forms a piece.
        let tokens = &mut out.tokens[..out.n];
        let mut n = tokens.len();
        loop {
            let mut best: Option<(f32, u32, usize)> = None;
            for i in 0..n.saturating_sub(1) {
                let (Some(a), Some(b)) = (self.piece(tokens[i]), self.piece(tokens[i + 1])) else {
                    continue;
                };
                if let Some(id) = self.lookup_concat(a, b) {
                    let score = self.score(id);
                    // Strictly greater, from -1e10 up: the first pair wins a tie, as in run.c.
                    if score > best.map_or(-1e10, |(s, _, _)| s) {
                        best = Some((score, id, i));
                    }
                }
            }
            let Some((_, id, i)) = best else { break };
            tokens[i] = id;
            tokens.copy_within(i + 2..n, i + 1);
            n -= 1;
        }
        out.n = n;
        if eos {
            out.push(EOS)?;
        }
        Ok(out.n)
    }

    /// The bytes to print for `token` following `prev`, as `run.c`'s `decode`: the leading
    /// space of a piece right after BOS is dropped, and a byte piece `<0xXX>` is that raw
    /// byte (none for `<0x00>`, which C would print as an empty string). Empty for a token
    /// outside the vocabulary.
    pub fn decode(&self, prev: u32, token: u32) -> &'a [u8] {
        let mut piece = self.piece(token).unwrap_or(&[]);
        if prev == BOS {
            if let Some(rest) = piece.strip_prefix(b" ") {
                piece = rest;
            }
        }
        match byte_piece(piece) {
            Some(0) => &[],
            Some(b) => &BYTES[b as usize..b as usize + 1],
            None => piece,
        }
    }
}

/// `run.c`'s `safe_printf` filter: a one-byte piece is printed only if it is a printable
/// ASCII character or whitespace (raw bytes of a split UTF-8 character, control codes and
/// bytes ≥ 0x80 are dropped); longer pieces are printed as they are.
pub fn printable(piece: &[u8]) -> &[u8] {
    match piece {
        [b] if !(b.is_ascii_graphic() || *b == b' ' || (0x09..=0x0D).contains(b)) => &[],
        _ => piece,
    }
}

/// The byte of a `<0xXX>` piece, parsed as `run.c`'s `sscanf(piece, "<0x%02hhX>")`: `<0x`
/// and one or two hex digits (either case).
fn byte_piece(piece: &[u8]) -> Option<u8> {
    let digits = piece.strip_prefix(b"<0x")?;
    let hex = |b: u8| (b as char).to_digit(16);
    let hi = hex(*digits.first()?)?;
    match digits.get(1).and_then(|&b| hex(b)) {
        Some(lo) => Some((hi * 16 + lo) as u8),
        None => Some(hi as u8),
    }
}

/// Little-endian `i32` at `at`, if the bytes are there.
fn read_i32(bytes: &[u8], at: usize) -> Option<i32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The token output of `encode`, checked on every push.
struct Output<'t> {
    tokens: &'t mut [u32],
    n: usize,
    needed: usize,
}

impl Output<'_> {
    fn push(&mut self, id: u32) -> Result<(), ModelError> {
        let found = self.tokens.len();
        let slot = self
            .tokens
            .get_mut(self.n)
            .ok_or(ModelError::BufferTooSmall {
                needed: self.needed,
                found,
            })?;
        *slot = id;
        self.n += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_pieces_parse_like_sscanf() {
        assert_eq!(byte_piece(b"<0x0A>"), Some(10));
        assert_eq!(byte_piece(b"<0xff>"), Some(255));
        assert_eq!(byte_piece(b"<0x7>"), Some(7));
        assert_eq!(byte_piece(b"<0x>"), None);
        assert_eq!(byte_piece(b"<unk>"), None);
        assert_eq!(byte_piece(b" <0x41>"), None);
    }

    #[test]
    fn printable_filters_single_bytes_only() {
        assert_eq!(printable(b"a"), b"a");
        assert_eq!(printable(b"\n"), b"\n");
        assert_eq!(printable(b" "), b" ");
        assert_eq!(printable(&[0x07]), b"");
        assert_eq!(printable(&[0xE2]), b"");
        assert_eq!(printable(&[0xE2, 0x82]), &[0xE2, 0x82]);
        assert_eq!(printable(b""), b"");
    }

    #[test]
    fn malformed_files_are_errors() {
        let mut offsets = [0u32; 2];
        assert_eq!(
            Tokenizer::new(&[1, 0, 0], 2, &mut offsets).unwrap_err(),
            ModelError::InvalidTokenizer
        );
        // One record announcing 100 bytes that are not there.
        let mut file = [0u8; 16];
        file[8..12].copy_from_slice(&100i32.to_le_bytes());
        assert_eq!(
            Tokenizer::new(&file, 1, &mut offsets).unwrap_err(),
            ModelError::InvalidTokenizer
        );
        file[8..12].copy_from_slice(&(-1i32).to_le_bytes());
        assert_eq!(
            Tokenizer::new(&file, 1, &mut offsets).unwrap_err(),
            ModelError::InvalidTokenizer
        );
        assert!(matches!(
            Tokenizer::new(&file, 3, &mut offsets),
            Err(ModelError::BufferTooSmall { .. })
        ));
    }
}
