//! libvirt's framing written by hand, for bytes that no libvirt library
//! would send: other clients' encodings, odd flags, extra bytes.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use virtbackupd::rpc::wire::{remote_connect_open_args, remote_error};
use virtbackupd::xdr::{from_bytes, to_bytes, Pack};

/// How long a reply may take: a hang guard.
const WAIT: Duration = Duration::from_secs(20);

pub const REMOTE: u32 = 0x2000_8086;
pub const QEMU: u32 = 0x2000_8087;
pub const KEEPALIVE: u32 = 0x6b65_6570;
pub const CALL: u32 = 0;
pub const REPLY: u32 = 1;
pub const MESSAGE: u32 = 2;
pub const CALL_WITH_FDS: u32 = 4;
pub const OK: u32 = 0;
pub const ERROR: u32 = 1;

pub const PROC_CONNECT_OPEN: i32 = 1;

/// A frame: length word, the six header words, the body.
pub fn frame(
    prog: u32,
    vers: u32,
    proc_: i32,
    kind: u32,
    serial: u32,
    status: u32,
    body: &[u8],
) -> Vec<u8> {
    let len = u32::try_from(28 + body.len()).expect("frame length");
    let mut out = Vec::with_capacity(28 + body.len());
    for word in [len, prog, vers, proc_ as u32, kind, serial, status] {
        out.extend_from_slice(&word.to_be_bytes());
    }
    out.extend_from_slice(body);
    out
}

/// A remote-program call with status OK.
pub fn call(proc_: i32, serial: u32, body: &[u8]) -> Vec<u8> {
    frame(REMOTE, 1, proc_, CALL, serial, OK, body)
}

/// The XDR encoding of `value`.
pub fn bytes<T: Pack>(value: &T) -> Vec<u8> {
    to_bytes(value).expect("XDR")
}

/// An XDR string: length, bytes, zero padding.
pub fn xdr_string(bytes: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(bytes.len())
        .expect("length")
        .to_be_bytes()
        .to_vec();
    out.extend_from_slice(bytes);
    out.resize(4 + bytes.len().div_ceil(4) * 4, 0);
    out
}

/// The bytes of a `fixtures/wire/*.hex` text: `#` comments and whitespace
/// ignored.
pub fn hex_fixture(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .flat_map(|l| l.bytes().filter(u8::is_ascii_hexdigit))
        .collect();
    assert_eq!(digits.len() % 2, 0, "odd number of hex digits");
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).expect("ascii"), 16).expect("hex"))
        .collect()
}

/// Consecutive whole frames, split at their length words.
pub fn split_frames(mut bytes: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let len = u32::from_be_bytes(bytes[..4].try_into().expect("length word")) as usize;
        let (frame, rest) = bytes.split_at(len);
        frames.push(frame);
        bytes = rest;
    }
    frames
}

#[derive(Debug)]
pub struct Reply {
    pub prog: u32,
    pub vers: u32,
    pub proc_: i32,
    pub kind: u32,
    pub serial: u32,
    pub status: u32,
    pub body: Vec<u8>,
}

/// What a call got back: OK, or libvirt's (code, domain, message).
#[derive(Debug, PartialEq)]
pub enum Answer {
    Ok,
    Error(i32, i32, String),
}

impl Reply {
    /// The body of an error reply: code, error domain, message.
    #[track_caller]
    pub fn error(&self) -> (i32, i32, String) {
        assert_eq!(self.status, ERROR, "not an error reply: {self:?}");
        let err: remote_error = from_bytes(&self.body).expect("remote_error");
        (err.code, err.domain, err.message.unwrap_or_default())
    }

    #[track_caller]
    pub fn answer(&self) -> Answer {
        if self.status == OK {
            return Answer::Ok;
        }
        let (code, domain, message) = self.error();
        Answer::Error(code, domain, message)
    }
}

pub struct Raw {
    stream: UnixStream,
    /// The serial of the last [`Raw::send_call`].
    serial: u32,
}

impl Raw {
    pub fn connect(socket: &Path) -> Raw {
        let stream = UnixStream::connect(socket).expect("connect");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        Raw { stream, serial: 0 }
    }

    /// A connection opened as its first call: CONNECT_OPEN with no name
    /// (the default URI) and `flags`.
    #[track_caller]
    pub fn opened(socket: &Path, flags: u32) -> Raw {
        let mut raw = Raw::connect(socket);
        let open = remote_connect_open_args { name: None, flags };
        let answer = raw.call(REMOTE, PROC_CONNECT_OPEN, CALL, &bytes(&open));
        assert_eq!(answer, Answer::Ok);
        raw
    }

    /// Sends a call of version 1 of `prog` with the next serial.
    pub fn send_call(&mut self, prog: u32, proc_: i32, kind: u32, body: &[u8]) {
        self.serial += 1;
        self.send(&frame(prog, 1, proc_, kind, self.serial, OK, body));
    }

    /// The reply to the last [`Raw::send_call`].
    #[track_caller]
    pub fn answer(&mut self) -> Answer {
        let reply = self.reply();
        assert_eq!(reply.serial, self.serial, "reply to the call just made");
        reply.answer()
    }

    /// [`Raw::send_call`], then its [`Raw::answer`].
    #[track_caller]
    pub fn call(&mut self, prog: u32, proc_: i32, kind: u32, body: &[u8]) -> Answer {
        self.send_call(prog, proc_, kind, body);
        self.answer()
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Sends what the daemon may stop reading halfway.
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The next frame from the daemon; `None` when the connection is
    /// closed or nothing comes within `timeout`.
    pub fn next_within(&mut self, timeout: Duration) -> Option<Reply> {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("timeout");
        let mut len = [0u8; 4];
        let got = self.stream.read_exact(&mut len);
        self.stream.set_read_timeout(Some(WAIT)).expect("timeout");
        got.ok()?;
        let len = u32::from_be_bytes(len) as usize;
        let mut rest = vec![0u8; len.checked_sub(4)?];
        self.stream.read_exact(&mut rest).ok()?;
        let word = |i: usize| u32::from_be_bytes(rest[i..i + 4].try_into().expect("word"));
        Some(Reply {
            prog: word(0),
            vers: word(4),
            proc_: word(8) as i32,
            kind: word(12),
            serial: word(16),
            status: word(20),
            body: rest[24..].to_vec(),
        })
    }

    /// The next frame; `None` when the connection is closed (or after a
    /// hang guard's wait).
    pub fn next(&mut self) -> Option<Reply> {
        self.next_within(WAIT)
    }

    #[track_caller]
    pub fn reply(&mut self) -> Reply {
        self.next().expect("a reply before the timeout")
    }

    /// Sends one frame and reads the frame that answers it.
    #[track_caller]
    pub fn exchange(&mut self, bytes: &[u8]) -> Reply {
        self.send(bytes);
        self.reply()
    }

    /// AUTH_LIST and CONNECT_OPEN(qemu:///system) as virsh sends them.
    pub fn open(&mut self) {
        assert_eq!(self.exchange(&call(66, 0, &[])).status, OK);
        let mut args = vec![0, 0, 0, 1];
        args.extend(xdr_string(b"qemu:///system"));
        args.extend([0, 0, 0, 0]);
        let reply = self.exchange(&call(1, 1, &args));
        assert_eq!(reply.status, OK, "{reply:?}");
    }
}
