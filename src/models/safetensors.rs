//! A reader for the [safetensors] format (Hugging Face), without allocation: tensors are
//! views into the file's bytes.
//!
//! A file is an 8-byte little-endian header size `n`, `n` bytes of JSON, then the data. The
//! JSON is one flat object: `"__metadata__"` (an object of strings, ignored) and one entry
//! per tensor, `"name": {"dtype": "F32", "shape": [384, 1536], "data_offsets": [begin,
//! end]}`, offsets relative to the start of the data. [`SafeTensors::parse`] checks the
//! whole header once (syntax, known dtypes, `end - begin` equal to the shape's byte size,
//! the range inside the file); [`SafeTensors::tensor`] then finds a tensor by name by
//! scanning the header again (no index is built, so there is nothing to allocate; a lookup
//! costs one pass over a few kilobytes).
//!
//! The JSON parser accepts only what this format needs: objects, arrays, strings,
//! non-negative integers (and, inside `__metadata__` or unknown fields, any JSON value up to
//! a nesting depth of [`MAX_DEPTH`]). Tensor names are compared byte for byte as they are
//! written in the file (a name written with escape sequences does not match).
//!
//! ```
//! use microattn::models::safetensors::{Dtype, SafeTensors};
//! use microattn::models::Align4;
//!
//! // A file with one f32 tensor of shape [2]: the header size, the JSON padded with spaces
//! // to 56 bytes (so the data is aligned), then 8 data bytes.
//! let json = br#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
//! let mut file = Align4([b' '; 8 + 56 + 8]);
//! file.0[..8].copy_from_slice(&56u64.to_le_bytes());
//! file.0[8..8 + json.len()].copy_from_slice(json);
//! file.0[64..68].copy_from_slice(&1.5f32.to_le_bytes());
//! file.0[68..72].copy_from_slice(&0.0f32.to_le_bytes());
//! let st = SafeTensors::parse(&file.0)?;
//! let x = st.tensor("x")?;
//! assert_eq!((x.dtype(), x.shape()), (Dtype::F32, &[2][..]));
//! assert_eq!(x.as_f32()?, &[1.5, 0.0]);
//! # Ok::<(), microattn::models::safetensors::SafetensorsError>(())
//! ```
//!
//! [safetensors]: https://github.com/huggingface/safetensors

use core::fmt;

/// Largest tensor rank the reader accepts.
pub const MAX_RANK: usize = 8;

/// Deepest nesting of JSON values the reader skips (inside metadata or unknown fields).
pub const MAX_DEPTH: usize = 16;

/// Why a safetensors file or a tensor request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum SafetensorsError {
    /// The file is shorter than its header size says.
    Truncated,
    /// The header is not the JSON this format uses; the byte offset of the problem in it.
    InvalidHeader {
        /// Offset into the JSON text.
        at: usize,
    },
    /// A dtype name the reader does not know.
    UnknownDtype,
    /// A shape with more than [`MAX_RANK`] dimensions, or whose byte size overflows.
    InvalidShape,
    /// `data_offsets` out of order, out of the file, or not the size of the shape.
    InvalidOffsets,
    /// No tensor of that name.
    NotFound,
    /// A tensor has another dtype than the view asked for.
    WrongDtype {
        /// The tensor's dtype.
        found: Dtype,
    },
    /// A tensor has another shape than required.
    WrongShape,
    /// Data not aligned for an in-place view (or a big-endian target).
    Misaligned,
}

impl fmt::Display for SafetensorsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SafetensorsError::Truncated => f.write_str("file shorter than its header says"),
            SafetensorsError::InvalidHeader { at } => {
                write!(f, "malformed JSON header at byte {at}")
            }
            SafetensorsError::UnknownDtype => f.write_str("unknown dtype"),
            SafetensorsError::InvalidShape => f.write_str("invalid shape"),
            SafetensorsError::InvalidOffsets => f.write_str("data offsets do not fit the shape"),
            SafetensorsError::NotFound => f.write_str("no tensor of that name"),
            SafetensorsError::WrongDtype { found } => write!(f, "unexpected dtype {found:?}"),
            SafetensorsError::WrongShape => f.write_str("unexpected shape"),
            SafetensorsError::Misaligned => f.write_str("tensor data not aligned"),
        }
    }
}

impl core::error::Error for SafetensorsError {}

/// Element types of safetensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[allow(missing_docs)] // the names are the format's
pub enum Dtype {
    Bool,
    U8,
    I8,
    I16,
    U16,
    F16,
    BF16,
    I32,
    U32,
    F32,
    F64,
    I64,
    U64,
}

impl Dtype {
    /// The dtype of its name in the header.
    fn from_name(name: &[u8]) -> Option<Dtype> {
        Some(match name {
            b"BOOL" => Dtype::Bool,
            b"U8" => Dtype::U8,
            b"I8" => Dtype::I8,
            b"I16" => Dtype::I16,
            b"U16" => Dtype::U16,
            b"F16" => Dtype::F16,
            b"BF16" => Dtype::BF16,
            b"I32" => Dtype::I32,
            b"U32" => Dtype::U32,
            b"F32" => Dtype::F32,
            b"F64" => Dtype::F64,
            b"I64" => Dtype::I64,
            b"U64" => Dtype::U64,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub const fn size(self) -> usize {
        match self {
            Dtype::Bool | Dtype::U8 | Dtype::I8 => 1,
            Dtype::I16 | Dtype::U16 | Dtype::F16 | Dtype::BF16 => 2,
            Dtype::I32 | Dtype::U32 | Dtype::F32 => 4,
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
        }
    }
}

/// One tensor: dtype, shape and its bytes in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorView<'a> {
    dtype: Dtype,
    rank: usize,
    dims: [usize; MAX_RANK],
    bytes: &'a [u8],
}

impl<'a> TensorView<'a> {
    /// The element type.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// The dimensions (empty for a scalar).
    pub fn shape(&self) -> &[usize] {
        &self.dims[..self.rank]
    }

    /// The raw little-endian bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Elements in the tensor.
    pub fn len(&self) -> usize {
        self.bytes.len() / self.dtype.size()
    }

    /// Whether the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// [`SafetensorsError::WrongShape`] unless the shape is `shape`.
    pub fn expect_shape(self, shape: &[usize]) -> Result<Self, SafetensorsError> {
        if self.shape() == shape {
            Ok(self)
        } else {
            Err(SafetensorsError::WrongShape)
        }
    }

    /// The data as `f32`, in place: [`SafetensorsError::WrongDtype`] unless `F32`,
    /// [`SafetensorsError::Misaligned`] unless 4-aligned on a little-endian target.
    pub fn as_f32(&self) -> Result<&'a [f32], SafetensorsError> {
        self.check_dtype(Dtype::F32)?;
        view(self.bytes)
    }

    /// The data as `f16`, in place (as [`as_f32`](Self::as_f32), for `F16`).
    pub fn as_f16(&self) -> Result<&'a [half::f16], SafetensorsError> {
        self.check_dtype(Dtype::F16)?;
        view(self.bytes)
    }

    /// The data as `bf16`, in place (as [`as_f32`](Self::as_f32), for `BF16`).
    pub fn as_bf16(&self) -> Result<&'a [half::bf16], SafetensorsError> {
        self.check_dtype(Dtype::BF16)?;
        view(self.bytes)
    }

    fn check_dtype(&self, want: Dtype) -> Result<(), SafetensorsError> {
        if self.dtype == want {
            Ok(())
        } else {
            Err(SafetensorsError::WrongDtype { found: self.dtype })
        }
    }
}

/// Marker for the plain-old-data element types a view may have.
trait Pod: Copy {}
impl Pod for f32 {}
impl Pod for half::f16 {}
impl Pod for half::bf16 {}

/// Views little-endian bytes as `T` in place.
#[cfg(target_endian = "little")]
fn view<T: Pod>(bytes: &[u8]) -> Result<&[T], SafetensorsError> {
    // SAFETY: `T` is f32, f16 or bf16, for which every bit pattern is valid; `align_to` only
    // returns a correctly aligned middle part; the lifetime is that of `bytes`. On a
    // little-endian target the in-memory values are the file's little-endian values.
    let (head, values, tail) = unsafe { bytes.align_to::<T>() };
    if head.is_empty() && tail.is_empty() {
        Ok(values)
    } else {
        Err(SafetensorsError::Misaligned)
    }
}

/// Big-endian targets cannot view little-endian values in place.
#[cfg(not(target_endian = "little"))]
fn view<T: Pod>(_bytes: &[u8]) -> Result<&[T], SafetensorsError> {
    Err(SafetensorsError::Misaligned)
}

/// A parsed safetensors file: its checked JSON header and its data, both borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SafeTensors<'a> {
    header: &'a [u8],
    data: &'a [u8],
    count: usize,
}

impl<'a> SafeTensors<'a> {
    /// Parses and checks the header of the file `bytes` (every entry, see the module docs).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, SafetensorsError> {
        let (size, rest) = bytes
            .split_first_chunk::<8>()
            .ok_or(SafetensorsError::Truncated)?;
        let n =
            usize::try_from(u64::from_le_bytes(*size)).map_err(|_| SafetensorsError::Truncated)?;
        let (header, data) = rest
            .split_at_checked(n)
            .ok_or(SafetensorsError::Truncated)?;
        let mut st = SafeTensors {
            header,
            data,
            count: 0,
        };
        let mut count = 0;
        st.for_each(|_, info| {
            info.check(data.len())?;
            count += 1;
            Ok(false)
        })?;
        st.count = count;
        Ok(st)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the file holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The tensor `name`, or [`SafetensorsError::NotFound`].
    pub fn tensor(&self, name: &str) -> Result<TensorView<'a>, SafetensorsError> {
        let mut found = None;
        self.for_each(|key, info| {
            if key == name.as_bytes() {
                found = Some(info);
                Ok(true)
            } else {
                Ok(false)
            }
        })?;
        let info = found.ok_or(SafetensorsError::NotFound)?;
        let bytes = info.check(self.data.len())?;
        Ok(TensorView {
            dtype: info.dtype,
            rank: info.rank,
            dims: info.dims,
            bytes: self
                .data
                .get(bytes)
                .ok_or(SafetensorsError::InvalidOffsets)?,
        })
    }

    /// The `f32` tensor `name` with shape `shape`, in place.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<&'a [f32], SafetensorsError> {
        self.tensor(name)?.expect_shape(shape)?.as_f32()
    }

    /// Calls `visit(name, info)` for every tensor entry in file order until it returns
    /// `Ok(true)`.
    fn for_each(
        &self,
        mut visit: impl FnMut(&[u8], Info) -> Result<bool, SafetensorsError>,
    ) -> Result<(), SafetensorsError> {
        let mut p = Parser {
            s: self.header,
            i: 0,
        };
        p.expect(b'{')?;
        if p.eat(b'}') {
            return p.end();
        }
        loop {
            let key = p.string()?;
            p.expect(b':')?;
            if key == b"__metadata__" {
                p.skip_value(0)?;
            } else if visit(key, p.tensor_info()?)? {
                return Ok(());
            }
            if p.eat(b',') {
                continue;
            }
            p.expect(b'}')?;
            return p.end();
        }
    }
}

/// One header entry.
#[derive(Debug, Clone, Copy)]
struct Info {
    dtype: Dtype,
    rank: usize,
    dims: [usize; MAX_RANK],
    begin: usize,
    end: usize,
}

impl Info {
    /// Checks the offsets against the shape and the data size; returns the byte range.
    fn check(&self, data_len: usize) -> Result<core::ops::Range<usize>, SafetensorsError> {
        let elements = self.dims[..self.rank]
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or(SafetensorsError::InvalidShape)?;
        let bytes = elements
            .checked_mul(self.dtype.size())
            .ok_or(SafetensorsError::InvalidShape)?;
        if self.begin > self.end || self.end > data_len || self.end - self.begin != bytes {
            return Err(SafetensorsError::InvalidOffsets);
        }
        Ok(self.begin..self.end)
    }
}

/// A cursor over the JSON header.
struct Parser<'s> {
    s: &'s [u8],
    i: usize,
}

impl<'s> Parser<'s> {
    fn error(&self) -> SafetensorsError {
        SafetensorsError::InvalidHeader { at: self.i }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.i).copied()
    }

    /// Consumes `c` if it is next.
    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), SafetensorsError> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error())
        }
    }

    /// Only whitespace may follow the top-level object (the format pads with spaces).
    fn end(&mut self) -> Result<(), SafetensorsError> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.error()),
        }
    }

    /// A string's raw bytes between the quotes (escapes are skipped, not decoded).
    fn string(&mut self) -> Result<&'s [u8], SafetensorsError> {
        self.expect(b'"')?;
        let start = self.i;
        loop {
            match self.s.get(self.i) {
                None => return Err(self.error()),
                Some(b'"') => {
                    let raw = &self.s[start..self.i];
                    self.i += 1;
                    return Ok(raw);
                }
                Some(b'\\') => self.i += 2,
                Some(&c) if c < 0x20 => return Err(self.error()),
                Some(_) => self.i += 1,
            }
        }
    }

    /// A non-negative integer that fits a `usize`.
    fn integer(&mut self) -> Result<usize, SafetensorsError> {
        self.skip_ws();
        let start = self.i;
        let mut n: usize = 0;
        while let Some(&c) = self.s.get(self.i) {
            if !c.is_ascii_digit() {
                break;
            }
            n = n
                .checked_mul(10)
                .and_then(|n| n.checked_add(usize::from(c - b'0')))
                .ok_or(SafetensorsError::InvalidShape)?;
            self.i += 1;
        }
        if self.i == start {
            Err(self.error())
        } else {
            Ok(n)
        }
    }

    /// Skips any JSON value (numbers as their characters, literals as letters).
    fn skip_value(&mut self, depth: usize) -> Result<(), SafetensorsError> {
        if depth >= MAX_DEPTH {
            return Err(self.error());
        }
        match self.peek() {
            Some(b'"') => self.string().map(|_| ()),
            Some(open @ (b'{' | b'[')) => {
                self.i += 1;
                let close = if open == b'{' { b'}' } else { b']' };
                if self.eat(close) {
                    return Ok(());
                }
                loop {
                    if open == b'{' {
                        self.string()?;
                        self.expect(b':')?;
                    }
                    self.skip_value(depth + 1)?;
                    if self.eat(b',') {
                        continue;
                    }
                    return self.expect(close);
                }
            }
            Some(c) if c == b'-' || c.is_ascii_alphanumeric() => {
                while let Some(&c) = self.s.get(self.i) {
                    if c == b'-' || c == b'+' || c == b'.' || c.is_ascii_alphanumeric() {
                        self.i += 1;
                    } else {
                        break;
                    }
                }
                Ok(())
            }
            _ => Err(self.error()),
        }
    }

    /// `[n, n, ...]` into `dims`; returns the count.
    fn integers(&mut self, dims: &mut [usize]) -> Result<usize, SafetensorsError> {
        self.expect(b'[')?;
        if self.eat(b']') {
            return Ok(0);
        }
        let mut n = 0;
        loop {
            let v = self.integer()?;
            *dims.get_mut(n).ok_or(SafetensorsError::InvalidShape)? = v;
            n += 1;
            if self.eat(b',') {
                continue;
            }
            self.expect(b']')?;
            return Ok(n);
        }
    }

    /// `{"dtype": .., "shape": [..], "data_offsets": [b, e]}` in any order; other fields
    /// are skipped; each of the three must appear.
    fn tensor_info(&mut self) -> Result<Info, SafetensorsError> {
        self.expect(b'{')?;
        let (mut dtype, mut shape, mut offsets) = (None, None, None);
        if !self.eat(b'}') {
            loop {
                let key = self.string()?;
                self.expect(b':')?;
                match key {
                    b"dtype" => {
                        let name = self.string()?;
                        dtype = Some(Dtype::from_name(name).ok_or(SafetensorsError::UnknownDtype)?);
                    }
                    b"shape" => {
                        let mut dims = [0; MAX_RANK];
                        let rank = self.integers(&mut dims)?;
                        shape = Some((rank, dims));
                    }
                    b"data_offsets" => {
                        let mut pair = [0; 2];
                        let at = self.i;
                        if self.integers(&mut pair).map_err(|_| self.error())? != 2 {
                            return Err(SafetensorsError::InvalidHeader { at });
                        }
                        offsets = Some(pair);
                    }
                    _ => self.skip_value(1)?,
                }
                if self.eat(b',') {
                    continue;
                }
                self.expect(b'}')?;
                break;
            }
        }
        match (dtype, shape, offsets) {
            (Some(dtype), Some((rank, dims)), Some([begin, end])) => Ok(Info {
                dtype,
                rank,
                dims,
                begin,
                end,
            }),
            _ => Err(self.error()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file with the JSON `json` (padded to 8) and `data`, 8-aligned in `buf`.
    fn file<'b>(buf: &'b mut [u64], json: &str, data: &[u8]) -> &'b [u8] {
        let mut header = [b' '; 512];
        let n = json.len().div_ceil(8) * 8;
        header[..json.len()].copy_from_slice(json.as_bytes());
        // SAFETY: u64 → u8 view of the same memory, every bit pattern valid.
        let bytes = unsafe {
            core::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), buf.len() * 8)
        };
        bytes[..8].copy_from_slice(&(n as u64).to_le_bytes());
        bytes[8..8 + n].copy_from_slice(&header[..n]);
        bytes[8 + n..8 + n + data.len()].copy_from_slice(data);
        &bytes[..8 + n + data.len()]
    }

    #[test]
    fn reads_tensors_and_skips_metadata() {
        let mut buf = [0u64; 64];
        let data: [u8; 12] = [0, 0, 128, 63, 0, 0, 0, 64, 0, 60, 0, 0];
        let json = r#"{"__metadata__":{"format":"pt","n":[1,{"a":null}]},
            "a":{"shape":[2,1],"dtype":"F32","data_offsets":[0,8]},
            "h":{"dtype":"F16","shape":[],"data_offsets":[8,10]} }"#;
        let st = SafeTensors::parse(file(&mut buf, json, &data)).unwrap();
        assert_eq!(st.len(), 2);
        let a = st.tensor("a").unwrap();
        assert_eq!(a.shape(), &[2, 1]);
        assert_eq!(a.as_f32().unwrap(), &[1.0, 2.0]);
        assert_eq!(st.f32("a", &[2, 1]).unwrap(), &[1.0, 2.0]);
        assert_eq!(st.f32("a", &[2]), Err(SafetensorsError::WrongShape));
        let h = st.tensor("h").unwrap();
        assert_eq!(h.as_f16().unwrap()[0].to_f32(), 1.0);
        assert_eq!(
            h.as_f32(),
            Err(SafetensorsError::WrongDtype { found: Dtype::F16 })
        );
        assert_eq!(st.tensor("b"), Err(SafetensorsError::NotFound));
    }

    #[test]
    fn malformed_headers_are_errors() {
        let bad = [
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, // size mismatch
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}"#, // past the end
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,0]}}"#, // reversed
            r#"{"a":{"dtype":"X","shape":[2],"data_offsets":[0,8]}}"#,   // dtype
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}}"#,   // one offset
            r#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#, // negative
            r#"{"a":{"dtype":"F32","data_offsets":[0,8]}}"#,             // no shape
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#,  // unclosed
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}} x"#, // trailing
            r#"{"a":{"dtype":"F32","shape":[1,1,1,1,1,1,1,1,2],"data_offsets":[0,8]}}"#,
            r#"{"a":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,8]}}"#,
            r#"{"__metadata__":[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]}"#,
            r#"["a"]"#,
            r#""#,
        ];
        for json in bad {
            let mut buf = [0u64; 64];
            assert!(
                SafeTensors::parse(file(&mut buf, json, &[0; 8])).is_err(),
                "{json}"
            );
        }
        // Too short for the header size, or for the size field itself.
        let mut buf = [0u64; 64];
        let f = file(&mut buf, "{}", &[]);
        assert!(SafeTensors::parse(f).unwrap().is_empty());
        assert_eq!(
            SafeTensors::parse(&f[..f.len() - 1]),
            Err(SafetensorsError::Truncated)
        );
        assert_eq!(
            SafeTensors::parse(&f[..7]),
            Err(SafetensorsError::Truncated)
        );
    }

    #[test]
    fn misaligned_data_is_an_error_not_a_copy() {
        let mut buf = [0u64; 64];
        let json = r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"F32","shape":[1],"data_offsets":[1,5]}}"#;
        let st = SafeTensors::parse(file(&mut buf, json, &[0; 5])).unwrap();
        assert_eq!(
            st.tensor("b").unwrap().as_f32(),
            Err(SafetensorsError::Misaligned)
        );
    }
}
