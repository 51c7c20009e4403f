//! XDR (RFC 4506) runtime for the code that `build/` generates from
//! `protocol/*.x`.
//!
//! Decoding never trusts a length from the peer: every string, opaque and
//! array length is checked against the limit declared in the .x file and
//! against the bytes actually left in the message before anything is
//! allocated. Encoding checks the same limits, so an over-long value of
//! ours becomes an error instead of a message the peer would reject.
//!
//! Where libtirpc, which libvirtd decodes with, is more lenient than the
//! letter of XDR, decoding follows libtirpc, so what libvirtd accepts is
//! accepted here: any non-zero boolean or optional flag is true, narrow
//! integers keep the low bits of their word, a string ends at its first
//! NUL, and [`from_payload`] ignores bytes after the value. What we send
//! is canonical.
//!
//! Containers (strings, arrays, optionals) have no `Pack`/`Unpack` impls of
//! their own because their limit belongs to the field, not the type; the
//! generated code calls [`Reader::string`], [`put_array_var`] and friends
//! with the limit of each field.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum XdrError {
    #[error("message truncated: {needed} bytes needed at offset {offset}, {remaining} left")]
    Truncated {
        offset: usize,
        needed: u64,
        remaining: usize,
    },
    #[error("length {got} exceeds the limit of {max}")]
    TooLong { max: u32, got: u64 },
    #[error("invalid discriminant {value} for {type_name}")]
    BadDiscriminant { type_name: &'static str, value: i64 },
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    #[error("{0} bytes left over after the message body")]
    TrailingBytes(usize),
}

pub trait Pack {
    fn pack(&self, out: &mut Vec<u8>) -> Result<(), XdrError>;
}

pub trait Unpack: Sized {
    fn unpack(r: &mut Reader<'_>) -> Result<Self, XdrError>;
}

/// Decodes a whole message body; bytes left over are an error, as they
/// mean the peer and we disagree on the layout. For checking layouts (our
/// fixtures, recorded libvirt traffic); a peer's call goes through
/// [`from_payload`].
pub fn from_bytes<T: Unpack>(buf: &[u8]) -> Result<T, XdrError> {
    let mut r = Reader::new(buf);
    let v = T::unpack(&mut r)?;
    r.finish()?;
    Ok(v)
}

/// Decodes a call's payload as libvirtd does (virNetMessageDecodePayload):
/// the value is read from the front and bytes after it are ignored, so a
/// call libvirtd answers is answered here too.
pub fn from_payload<T: Unpack>(buf: &[u8]) -> Result<T, XdrError> {
    T::unpack(&mut Reader::new(buf))
}

pub fn to_bytes<T: Pack>(v: &T) -> Result<Vec<u8>, XdrError> {
    let mut out = Vec::new();
    v.pack(&mut out)?;
    Ok(out)
}

/// Bytes of zero padding after `len` bytes of data.
fn pad_len(len: usize) -> usize {
    (4 - len % 4) % 4
}

/// A cursor over one message body.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub fn finish(&self) -> Result<(), XdrError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(XdrError::TrailingBytes(n)),
        }
    }

    fn truncated(&self, needed: u64) -> XdrError {
        XdrError::Truncated {
            offset: self.pos,
            needed,
            remaining: self.remaining(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], XdrError> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.buf.len());
        let slice = end.and_then(|end| self.buf.get(self.pos..end));
        let slice = slice.ok_or_else(|| self.truncated(n as u64))?;
        self.pos += n;
        Ok(slice)
    }

    fn word(&mut self) -> Result<[u8; 4], XdrError> {
        let mut w = [0; 4];
        w.copy_from_slice(self.take(4)?);
        Ok(w)
    }

    fn dword(&mut self) -> Result<[u8; 8], XdrError> {
        let mut w = [0; 8];
        w.copy_from_slice(self.take(8)?);
        Ok(w)
    }

    /// Data and its padding; pad bytes are not checked, as libvirt's own
    /// decoder does not check them either.
    fn padded(&mut self, len: usize) -> Result<&'a [u8], XdrError> {
        let total = len
            .checked_add(pad_len(len))
            .ok_or_else(|| self.truncated(u64::MAX))?;
        let data = self.take(total)?;
        Ok(data.get(..len).unwrap_or(data))
    }

    /// A length word, checked against `max` and then against the input left
    /// when each of the `len` items needs at least `item_min` bytes.
    fn length(&mut self, max: u32, item_min: usize) -> Result<usize, XdrError> {
        let len = u32::unpack(self)?;
        if len > max {
            return Err(XdrError::TooLong {
                max,
                got: u64::from(len),
            });
        }
        let len_usize = usize::try_from(len).map_err(|_| self.truncated(u64::from(len)))?;
        let needed = (len_usize as u64).saturating_mul(item_min as u64);
        if needed > self.remaining() as u64 {
            return Err(self.truncated(needed));
        }
        Ok(len_usize)
    }

    pub fn opaque_fixed<const N: usize>(&mut self) -> Result<[u8; N], XdrError> {
        let mut out = [0; N];
        out.copy_from_slice(self.padded(N)?);
        Ok(out)
    }

    pub fn opaque_var(&mut self, max: u32) -> Result<Vec<u8>, XdrError> {
        let len = self.length(max, 1)?;
        Ok(self.padded(len)?.to_vec())
    }

    /// The string libvirtd's C code would see. libtirpc's xdr_string keeps
    /// every byte, but C stops at the first NUL, so the value ends there
    /// ("vm1\0junk" finds domain vm1 in libvirtd) and what follows the NUL
    /// is never looked at, valid UTF-8 or not.
    ///
    /// Text that is not UTF-8 is refused (the payload "does not decode"),
    /// where libvirtd passes the bytes on. Every way of making them a
    /// `String` changes the value: U+FFFD in their place could match a
    /// name that really has one, turn a document libxml2 refuses ("Input
    /// is not proper UTF-8") into one we define, or hand QEMU a command it
    /// would refuse. libvirtd fails such calls anyway (a lookup finds
    /// nothing, the XML does not parse), so both refuse; only the error
    /// text differs.
    pub fn string(&mut self, max: u32) -> Result<String, XdrError> {
        let len = self.length(max, 1)?;
        let bytes = self.padded(len)?;
        let c_string = bytes.split(|&b| b == 0).next().unwrap_or(bytes);
        std::str::from_utf8(c_string)
            .map(str::to_owned)
            .map_err(|_| XdrError::InvalidUtf8)
    }

    pub fn array_fixed<T: Default, const N: usize>(
        &mut self,
        item_min: usize,
        mut item: impl FnMut(&mut Self) -> Result<T, XdrError>,
    ) -> Result<[T; N], XdrError> {
        let needed = (N as u64).saturating_mul(item_min as u64);
        if needed > self.remaining() as u64 {
            return Err(self.truncated(needed));
        }
        let mut out: [T; N] = std::array::from_fn(|_| T::default());
        for slot in &mut out {
            *slot = item(self)?;
        }
        Ok(out)
    }

    /// `item_min` is the fewest bytes one element can occupy (never 0; the
    /// generator refuses such element types).
    pub fn array_var<T>(
        &mut self,
        max: u32,
        item_min: usize,
        mut item: impl FnMut(&mut Self) -> Result<T, XdrError>,
    ) -> Result<Vec<T>, XdrError> {
        let len = self.length(max, item_min.max(1))?;
        let mut out = Vec::with_capacity(len);
        for _ in 0..len {
            out.push(item(self)?);
        }
        Ok(out)
    }

    /// An optional-data flag is a boolean (libtirpc's xdr_pointer reads it
    /// with xdr_bool), so any non-zero flag means the value follows.
    pub fn option<T>(
        &mut self,
        item: impl FnOnce(&mut Self) -> Result<T, XdrError>,
    ) -> Result<Option<T>, XdrError> {
        if bool::unpack(self)? {
            item(self).map(Some)
        } else {
            Ok(None)
        }
    }
}

fn put_len(out: &mut Vec<u8>, len: usize, max: u32) -> Result<(), XdrError> {
    match u32::try_from(len) {
        Ok(n) if n <= max => {
            out.extend_from_slice(&n.to_be_bytes());
            Ok(())
        }
        _ => Err(XdrError::TooLong {
            max,
            got: len as u64,
        }),
    }
}

fn put_padded(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(bytes);
    out.extend_from_slice(&[0; 3][..pad_len(bytes.len())]);
}

pub fn put_opaque_var(out: &mut Vec<u8>, bytes: &[u8], max: u32) -> Result<(), XdrError> {
    put_len(out, bytes.len(), max)?;
    put_padded(out, bytes);
    Ok(())
}

pub fn put_string(out: &mut Vec<u8>, s: &str, max: u32) -> Result<(), XdrError> {
    put_opaque_var(out, s.as_bytes(), max)
}

pub fn put_array_fixed<T>(
    out: &mut Vec<u8>,
    items: &[T],
    mut item: impl FnMut(&mut Vec<u8>, &T) -> Result<(), XdrError>,
) -> Result<(), XdrError> {
    items.iter().try_for_each(|v| item(out, v))
}

pub fn put_array_var<T>(
    out: &mut Vec<u8>,
    items: &[T],
    max: u32,
    mut item: impl FnMut(&mut Vec<u8>, &T) -> Result<(), XdrError>,
) -> Result<(), XdrError> {
    put_len(out, items.len(), max)?;
    items.iter().try_for_each(|v| item(out, v))
}

pub fn put_option<T>(
    out: &mut Vec<u8>,
    v: Option<&T>,
    item: impl FnOnce(&mut Vec<u8>, &T) -> Result<(), XdrError>,
) -> Result<(), XdrError> {
    match v {
        Some(v) => {
            true.pack(out)?;
            item(out, v)
        }
        None => false.pack(out),
    }
}

impl Pack for () {
    fn pack(&self, _: &mut Vec<u8>) -> Result<(), XdrError> {
        Ok(())
    }
}

impl Unpack for () {
    fn unpack(_: &mut Reader<'_>) -> Result<Self, XdrError> {
        Ok(())
    }
}

/// Types that are one 4-byte or 8-byte big-endian word as they are.
macro_rules! word_impls {
    ($($t:ty => $read:ident),*) => {$(
        impl Pack for $t {
            fn pack(&self, out: &mut Vec<u8>) -> Result<(), XdrError> {
                out.extend_from_slice(&self.to_be_bytes());
                Ok(())
            }
        }
        impl Unpack for $t {
            fn unpack(r: &mut Reader<'_>) -> Result<Self, XdrError> {
                Ok(<$t>::from_be_bytes(r.$read()?))
            }
        }
    )*};
}
word_impls!(i32 => word, u32 => word, i64 => dword, u64 => dword, f32 => word, f64 => dword);

/// C types narrower than 4 bytes still take a whole word. libtirpc reads
/// the word and casts it to the narrow type, keeping the low bits, and
/// libvirtd goes on with that value; so do we, instead of refusing what
/// libvirtd accepts.
macro_rules! narrow_impls {
    ($($t:ty => $wide:ty),*) => {$(
        impl Pack for $t {
            fn pack(&self, out: &mut Vec<u8>) -> Result<(), XdrError> {
                <$wide>::from(*self).pack(out)
            }
        }
        impl Unpack for $t {
            fn unpack(r: &mut Reader<'_>) -> Result<Self, XdrError> {
                // Truncating on purpose: this is C's cast.
                Ok(<$wide>::unpack(r)? as $t)
            }
        }
    )*};
}
// C `char` too: whether a peer's `char` is signed or not, the byte is the
// low 8 bits of the word. We send it sign-extended, as x86 peers do.
narrow_impls!(u8 => u32, i8 => i32, i16 => i32, u16 => u32);

impl Pack for bool {
    fn pack(&self, out: &mut Vec<u8>) -> Result<(), XdrError> {
        u32::from(*self).pack(out)
    }
}

/// Any word but 0 is true, as libtirpc's xdr_bool reads it, so a peer
/// that sends another non-zero value gets what libvirtd would give it.
/// The pure-Go go-libvirt client depends on this: it writes CONNECT_OPEN's
/// "name present" flag as the padded 3-byte array `01 00 00`, which is the
/// word 0x01000000. We still send 1.
impl Unpack for bool {
    fn unpack(r: &mut Reader<'_>) -> Result<Self, XdrError> {
        Ok(u32::unpack(r)? != 0)
    }
}

/// Fixed-length opaque data (`opaque x[N]`), e.g. a UUID.
impl<const N: usize> Pack for [u8; N] {
    fn pack(&self, out: &mut Vec<u8>) -> Result<(), XdrError> {
        put_padded(out, self);
        Ok(())
    }
}

impl<const N: usize> Unpack for [u8; N] {
    fn unpack(r: &mut Reader<'_>) -> Result<Self, XdrError> {
        r.opaque_fixed()
    }
}

#[cfg(test)]
#[path = "xdr_tests.rs"]
mod tests;
