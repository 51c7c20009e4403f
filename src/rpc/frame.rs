//! libvirt's message framing: a 4-byte big-endian length that counts
//! itself, a 24-byte header of six words, then the XDR body.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, LengthDelimitedCodec};

use super::error::RpcError;

/// Largest message, header and body (VIR_NET_MESSAGE_MAX); libvirt does
/// not count the length word, so the word itself may say 4 more.
pub const MESSAGE_MAX: usize = 33_554_432;
const LEN_SIZE: usize = 4;
pub const HEADER_SIZE: usize = 24;

/// virNetMessageType.
pub mod kind {
    pub const CALL: u32 = 0;
    pub const REPLY: u32 = 1;
    pub const MESSAGE: u32 = 2;
    pub const STREAM: u32 = 3;
    pub const CALL_WITH_FDS: u32 = 4;
    pub const REPLY_WITH_FDS: u32 = 5;
    pub const STREAM_HOLE: u32 = 6;
}

/// virNetMessageStatus.
pub mod status {
    pub const OK: u32 = 0;
    pub const ERROR: u32 = 1;
    pub const CONTINUE: u32 = 2;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub prog: u32,
    pub vers: u32,
    pub proc_: i32,
    pub kind: u32,
    pub serial: u32,
    pub status: u32,
}

impl Header {
    /// Splits a frame (without its length word) into header and body.
    pub fn parse(frame: &[u8]) -> Result<(Header, &[u8]), RpcError> {
        if frame.len() < HEADER_SIZE {
            return Err(RpcError::ShortHeader(frame.len()));
        }
        let word =
            |i: usize| u32::from_be_bytes([frame[i], frame[i + 1], frame[i + 2], frame[i + 3]]);
        let header = Header {
            prog: word(0),
            vers: word(4),
            proc_: i32::from_be_bytes(word(8).to_be_bytes()),
            kind: word(12),
            serial: word(16),
            status: word(20),
        };
        Ok((header, &frame[HEADER_SIZE..]))
    }

    /// The reply header answering this call.
    pub fn reply(&self, status: u32) -> Header {
        Header {
            kind: kind::REPLY,
            status,
            ..*self
        }
    }

    /// Encodes header and body as the payload the length codec frames.
    pub fn encode(&self, body: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER_SIZE + body.len());
        out.put_u32(self.prog);
        out.put_u32(self.vers);
        out.put_i32(self.proc_);
        out.put_u32(self.kind);
        out.put_u32(self.serial);
        out.put_u32(self.status);
        out.put_slice(body);
        out.freeze()
    }
}

/// The length codec for what a peer sends: it checks the declared length
/// against [`MESSAGE_MAX`] before reserving any buffer, and rejects
/// lengths below the length word itself.
pub fn read_codec() -> LengthDelimitedCodec {
    // The codec limits the length word's value, which counts itself.
    codec(MESSAGE_MAX + LEN_SIZE)
}

/// The length codec for what we send.
pub fn write_codec() -> LengthDelimitedCodec {
    // The codec limits what it is handed: header and body.
    codec(MESSAGE_MAX)
}

fn codec(max: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .big_endian()
        .length_field_length(LEN_SIZE)
        .length_adjustment(-(LEN_SIZE as isize))
        .max_frame_length(max)
        .new_codec()
}

/// Most descriptors one call may pass (VIR_NET_MESSAGE_NUM_FDS_MAX).
pub const FDS_MAX: u32 = 32;

/// The reading side of the framing, which also knows libvirt's way of
/// passing file descriptors: a CALL_WITH_FDS message starts its body with
/// the number of descriptors, and the client then sends each descriptor
/// on its own with one byte of data (gnulib's sendfd). The daemon takes
/// none of them (reading without ancillary space makes the kernel close
/// them), but it must drop those bytes or they would be read as the next
/// frame's length.
#[derive(Debug)]
pub struct FrameReader {
    frames: LengthDelimitedCodec,
    fd_bytes_left: usize,
}

impl FrameReader {
    pub fn new() -> Self {
        FrameReader {
            frames: read_codec(),
            fd_bytes_left: 0,
        }
    }
}

impl Default for FrameReader {
    fn default() -> Self {
        Self::new()
    }
}

/// Why the reader gives up on a connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// libvirtd closes the connection too (virNetMessageDecodeNumFDs).
    #[error("Received too many FDs {0}, expected {FDS_MAX} maximum")]
    TooManyFds(u32),
    #[error("Unable to decode number of FDs")]
    NoFdCount,
}

/// The descriptor count that opens a CALL_WITH_FDS body.
pub fn fd_count(body: &[u8]) -> Option<u32> {
    let word = body.get(..4)?;
    Some(u32::from_be_bytes([word[0], word[1], word[2], word[3]]))
}

impl Decoder for FrameReader {
    type Item = BytesMut;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, FrameError> {
        let skip = self.fd_bytes_left.min(src.len());
        src.advance(skip);
        self.fd_bytes_left -= skip;
        if self.fd_bytes_left > 0 {
            return Ok(None);
        }
        let Some(frame) = self.frames.decode(src)? else {
            return Ok(None);
        };
        if let Ok((header, body)) = Header::parse(&frame) {
            if header.kind == kind::CALL_WITH_FDS {
                let count = fd_count(body).ok_or(FrameError::NoFdCount)?;
                if count > FDS_MAX {
                    return Err(FrameError::TooManyFds(count));
                }
                self.fd_bytes_left = count as usize;
            }
        }
        Ok(Some(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use tokio_util::codec::{Decoder, Encoder};

    #[test]
    fn an_empty_call_is_28_bytes() {
        let header = Header {
            prog: 0x2000_8086,
            vers: 1,
            proc_: 66,
            kind: kind::CALL,
            serial: 0,
            status: 0,
        };
        let mut out = BytesMut::new();
        write_codec().encode(header.encode(&[]), &mut out).unwrap();
        assert_eq!(out.len(), 28);
        assert_eq!(&out[..4], &[0, 0, 0, 28]);
        let frame = read_codec().decode(&mut out).unwrap().unwrap();
        let (parsed, body) = Header::parse(&frame).unwrap();
        assert_eq!(parsed, header);
        assert!(body.is_empty());
    }

    #[test]
    fn a_4_gib_length_is_refused_before_buffering() {
        let mut input = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0, 0][..]);
        assert!(read_codec().decode(&mut input).is_err());
    }

    #[test]
    fn the_length_word_is_not_counted_in_the_limit() {
        let max = (MESSAGE_MAX + LEN_SIZE) as u32;
        let mut input = BytesMut::from(&max.to_be_bytes()[..]);
        assert!(read_codec().decode(&mut input).unwrap().is_none());
        let mut input = BytesMut::from(&(max + 1).to_be_bytes()[..]);
        assert!(read_codec().decode(&mut input).is_err());

        let mut out = BytesMut::new();
        let body = vec![0; MESSAGE_MAX + 1];
        write_codec()
            .encode(&body[..MESSAGE_MAX], &mut out)
            .unwrap();
        assert_eq!(out[..4], max.to_be_bytes());
        assert!(write_codec().encode(&body[..], &mut out).is_err());
    }

    #[test]
    fn a_length_below_the_length_word_is_refused() {
        let mut input = BytesMut::from(&[0, 0, 0, 2, 0, 0][..]);
        assert!(read_codec().decode(&mut input).is_err());
    }

    #[test]
    fn a_truncated_message_waits_for_more() {
        let mut input = BytesMut::from(&[0, 0, 0, 28, 0x20, 0, 0x80][..]);
        assert!(read_codec().decode(&mut input).unwrap().is_none());
    }

    fn with_fds_call(count: u32) -> BytesMut {
        let header = Header {
            prog: 0x2000_8086,
            vers: 1,
            proc_: 8,
            kind: kind::CALL_WITH_FDS,
            serial: 3,
            status: 0,
        };
        let mut out = BytesMut::new();
        write_codec()
            .encode(header.encode(&count.to_be_bytes()), &mut out)
            .unwrap();
        out
    }

    #[test]
    fn the_bytes_that_carry_descriptors_are_skipped() {
        let mut input = with_fds_call(2);
        input.extend_from_slice(&[0]);
        let mut reader = FrameReader::new();
        let frame = reader.decode(&mut input).unwrap().unwrap();
        assert_eq!(Header::parse(&frame).unwrap().0.kind, kind::CALL_WITH_FDS);
        // One descriptor byte so far: nothing to decode yet.
        assert!(reader.decode(&mut input).unwrap().is_none());
        input.extend_from_slice(&[0]);
        input.extend_from_slice(&with_fds_call(0));
        let next = reader.decode(&mut input).unwrap().unwrap();
        assert_eq!(Header::parse(&next).unwrap().0.serial, 3);
        assert!(input.is_empty());
    }

    #[test]
    fn more_than_32_descriptors_end_the_connection() {
        let mut input = with_fds_call(33);
        assert!(matches!(
            FrameReader::new().decode(&mut input),
            Err(FrameError::TooManyFds(33))
        ));
    }

    #[test]
    fn a_frame_shorter_than_a_header_is_an_error() {
        assert!(Header::parse(&[0; 10]).is_err());
    }

    #[test]
    fn negative_procedure_numbers_survive() {
        let header = Header {
            prog: 1,
            vers: 1,
            proc_: -5,
            kind: 0,
            serial: 9,
            status: 0,
        };
        let bytes = header.encode(b"xy");
        let (parsed, body) = Header::parse(&bytes).unwrap();
        assert_eq!(parsed.proc_, -5);
        assert_eq!(body, b"xy");
    }
}
