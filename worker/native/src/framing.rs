//! gRPC over HTTP/2: length-prefixed messages, compression, status trailers.
//!
//! A gRPC message is a 5-byte prefix (compressed flag, big-endian u32 length) and
//! the protobuf bytes; the status travels as trailers (`grpc-status`,
//! `grpc-message`, percent-encoded). See
//! https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md

use std::io::Read;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use hyper::header::{HeaderMap, HeaderValue};

pub const OK: u32 = 0;
pub const CANCELLED: u32 = 1;
pub const INTERNAL: u32 = 13;
pub const UNAVAILABLE: u32 = 14;
pub const UNIMPLEMENTED: u32 = 12;
pub const RESOURCE_EXHAUSTED: u32 = 8;

/// A request's `grpc-encoding`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    Deflate,
}

impl Encoding {
    pub fn from_header(value: Option<&HeaderValue>) -> Result<Self, String> {
        match value.map(|v| v.to_str().unwrap_or("?")) {
            None | Some("identity") => Ok(Self::Identity),
            Some("gzip") => Ok(Self::Gzip),
            Some("deflate") => Ok(Self::Deflate),
            Some(other) => Err(format!("grpc-encoding {other:?} is not supported")),
        }
    }
}

/// A status a call ends with: a gRPC code and its message.
#[derive(Debug, Clone)]
pub struct Status {
    pub code: u32,
    pub message: String,
}

impl Status {
    pub fn new(code: u32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `grpc-status` and `grpc-message` as HTTP/2 headers or trailers.
    pub fn headers(&self) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(2);
        map.insert("grpc-status", HeaderValue::from(self.code));
        if !self.message.is_empty() {
            if let Ok(v) = HeaderValue::from_str(&percent_encode(&self.message)) {
                map.insert("grpc-message", v);
            }
        }
        map
    }
}

/// The grpc-message encoding: printable ASCII but '%' as is, the rest as %XX.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The 5-byte prefix of an uncompressed message of `len` bytes.
pub fn prefix(len: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(5);
    b.put_u8(0);
    b.put_u32(len as u32);
    b.freeze()
}

/// Splits complete messages off the front of a growing buffer (streams arrive in
/// DATA frames cut anywhere).
pub struct Deframer {
    buf: BytesMut,
    encoding: Encoding,
    max: usize,
}

impl Deframer {
    pub fn new(encoding: Encoding, max: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            encoding,
            max,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete message, `Ok(None)` until one is complete.
    pub fn next(&mut self) -> Result<Option<Bytes>, Status> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let compressed = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > self.max {
            return Err(too_large(len, self.max));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        self.buf.advance(5);
        let raw = self.buf.split_to(len).freeze();
        match compressed {
            0 => Ok(Some(raw)),
            1 => inflate(&raw, self.encoding, self.max).map(Some),
            f => Err(Status::new(INTERNAL, format!("bad gRPC message flag {f}"))),
        }
    }

    /// Bytes of an incomplete message left when the request ended.
    pub fn leftover(&self) -> usize {
        self.buf.len()
    }
}

fn too_large(len: usize, max: usize) -> Status {
    Status::new(
        RESOURCE_EXHAUSTED,
        format!("request message of {len} bytes exceeds the limit of {max} bytes"),
    )
}

fn inflate(raw: &[u8], encoding: Encoding, max: usize) -> Result<Bytes, Status> {
    let mut out = Vec::with_capacity(raw.len() * 4);
    let limit = max as u64 + 1;
    let read = match encoding {
        Encoding::Identity => {
            return Err(Status::new(
                INTERNAL,
                "compressed message without a grpc-encoding",
            ))
        }
        Encoding::Gzip => flate2::read::GzDecoder::new(raw)
            .take(limit)
            .read_to_end(&mut out),
        Encoding::Deflate => flate2::read::ZlibDecoder::new(raw)
            .take(limit)
            .read_to_end(&mut out),
    };
    match read {
        Ok(n) if n > max => Err(too_large(n, max)),
        Ok(_) => Ok(Bytes::from(out)),
        Err(e) => Err(Status::new(
            INTERNAL,
            format!("cannot decompress the message: {e}"),
        )),
    }
}
