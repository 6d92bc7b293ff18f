//! The relay's frames, carried inside the TLS stream after authentication.
//!
//! Every frame is a 9-byte header — kind (1 byte), socket id (4), payload length (4), all
//! little-endian — and its payload. Ids below [`SERVER_IDS`] are chosen by the client when it
//! opens a socket; the server numbers the connections it accepts from [`SERVER_IDS`] up, so
//! the two never collide.
//!
//! Requests that expect an answer carry a request number, echoed in [`Frame::Reply`]. Data
//! travels in [`Frame::Data`] (a stream's bytes, or one datagram on a connected socket) and
//! [`Frame::DataTo`]/[`Frame::DataFrom`] (one datagram with its peer's address). Each side
//! may send at most the number of data bytes the other has granted through
//! [`Frame::Credit`], which bounds what the receiver holds per socket.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Most stream bytes one data frame carries.
pub const CHUNK: usize = 128 * 1024;

/// Largest payload of one frame.
pub const MAX_PAYLOAD: usize = CHUNK + 256;

/// Largest datagram relayed (the IPv4/IPv6 UDP payload limit is just below 64 KiB).
pub const MAX_DATAGRAM: usize = 64 * 1024;

/// First socket id the server assigns.
pub const SERVER_IDS: u32 = 1 << 31;

/// Largest socket address carried (`sizeof(struct sockaddr_storage)`).
pub const MAX_SOCKADDR: usize = 128;

/// Largest socket option value carried.
pub const MAX_OPTION: usize = 256;

const HEADER: usize = 9;

/// One relay frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Client: create socket `id` with socket(2)'s arguments.
    Open {
        id: u32,
        req: u32,
        domain: i32,
        ty: i32,
        protocol: i32,
    },
    /// Client: connect(2) to the address.
    Connect { id: u32, req: u32, addr: Vec<u8> },
    /// Client: bind(2) to the address.
    Bind { id: u32, req: u32, addr: Vec<u8> },
    /// Client: listen(2).
    Listen { id: u32, req: u32, backlog: i32 },
    /// Client: getsockname(2) (`peer` false) or getpeername(2).
    Name { id: u32, req: u32, peer: bool },
    /// Client: getsockopt(2) with a buffer of `len` bytes.
    GetOpt {
        id: u32,
        req: u32,
        level: i32,
        name: i32,
        len: u32,
    },
    /// Client: setsockopt(2).
    SetOpt {
        id: u32,
        req: u32,
        level: i32,
        name: i32,
        value: Vec<u8>,
    },
    /// Either side: the writer is done (shutdown(2) with `SHUT_WR`), after the data before it.
    Eof { id: u32 },
    /// Client: the program closed the socket. Server: the socket failed with `errno` (a
    /// reset, a timeout) and is gone.
    Close { id: u32, errno: i32 },
    /// Either side: stream bytes or a datagram on a connected socket.
    Data { id: u32, data: Vec<u8> },
    /// Client: a datagram for the address.
    DataTo {
        id: u32,
        addr: Vec<u8>,
        data: Vec<u8>,
    },
    /// Server: a datagram from the address.
    DataFrom {
        id: u32,
        addr: Vec<u8>,
        data: Vec<u8>,
    },
    /// Either side: the sender may send `bytes` more data bytes (or, for a listening socket,
    /// announce `bytes` more connections).
    Credit { id: u32, bytes: u32 },
    /// Server: listening socket `id` accepted connection `conn` from `peer`.
    Incoming { id: u32, conn: u32, peer: Vec<u8> },
    /// Server: the answer to request `req`: `errno` 0 and a result value and bytes, or the
    /// errno the call failed with.
    Reply {
        id: u32,
        req: u32,
        errno: i32,
        value: i64,
        data: Vec<u8>,
    },
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream failed or ended.
    #[error("relay connection")]
    Io(#[from] io::Error),
    /// The peer sent something that is not a frame.
    #[error("malformed relay frame: {0}")]
    Malformed(String),
}

mod kind {
    pub const OPEN: u8 = 1;
    pub const CONNECT: u8 = 2;
    pub const BIND: u8 = 3;
    pub const LISTEN: u8 = 4;
    pub const NAME: u8 = 5;
    pub const GETOPT: u8 = 6;
    pub const SETOPT: u8 = 7;
    pub const EOF: u8 = 8;
    pub const CLOSE: u8 = 9;
    pub const DATA: u8 = 10;
    pub const DATA_TO: u8 = 11;
    pub const DATA_FROM: u8 = 12;
    pub const CREDIT: u8 = 13;
    pub const INCOMING: u8 = 14;
    pub const REPLY: u8 = 15;
}

impl Frame {
    /// The socket the frame concerns.
    pub fn id(&self) -> u32 {
        match self {
            Frame::Open { id, .. }
            | Frame::Connect { id, .. }
            | Frame::Bind { id, .. }
            | Frame::Listen { id, .. }
            | Frame::Name { id, .. }
            | Frame::GetOpt { id, .. }
            | Frame::SetOpt { id, .. }
            | Frame::Eof { id }
            | Frame::Close { id, .. }
            | Frame::Data { id, .. }
            | Frame::DataTo { id, .. }
            | Frame::DataFrom { id, .. }
            | Frame::Credit { id, .. }
            | Frame::Incoming { id, .. }
            | Frame::Reply { id, .. } => *id,
        }
    }

    /// The frame's bytes, header included.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the frame's bytes, header included, to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER]);
        let p = out;
        let kind = match self {
            Frame::Open {
                req,
                domain,
                ty,
                protocol,
                ..
            } => {
                put_u32(p, *req);
                for v in [domain, ty, protocol] {
                    p.extend_from_slice(&v.to_le_bytes());
                }
                kind::OPEN
            }
            Frame::Connect { req, addr, .. } | Frame::Bind { req, addr, .. } => {
                put_u32(p, *req);
                p.extend_from_slice(addr);
                if matches!(self, Frame::Connect { .. }) {
                    kind::CONNECT
                } else {
                    kind::BIND
                }
            }
            Frame::Listen { req, backlog, .. } => {
                put_u32(p, *req);
                p.extend_from_slice(&backlog.to_le_bytes());
                kind::LISTEN
            }
            Frame::Name { req, peer, .. } => {
                put_u32(p, *req);
                p.push(u8::from(*peer));
                kind::NAME
            }
            Frame::GetOpt {
                req,
                level,
                name,
                len,
                ..
            } => {
                put_u32(p, *req);
                p.extend_from_slice(&level.to_le_bytes());
                p.extend_from_slice(&name.to_le_bytes());
                put_u32(p, *len);
                kind::GETOPT
            }
            Frame::SetOpt {
                req,
                level,
                name,
                value,
                ..
            } => {
                put_u32(p, *req);
                p.extend_from_slice(&level.to_le_bytes());
                p.extend_from_slice(&name.to_le_bytes());
                p.extend_from_slice(value);
                kind::SETOPT
            }
            Frame::Eof { .. } => kind::EOF,
            Frame::Close { errno, .. } => {
                p.extend_from_slice(&errno.to_le_bytes());
                kind::CLOSE
            }
            Frame::Data { data, .. } => {
                p.extend_from_slice(data);
                kind::DATA
            }
            Frame::DataTo { addr, data, .. } | Frame::DataFrom { addr, data, .. } => {
                p.push(addr.len() as u8);
                p.extend_from_slice(addr);
                p.extend_from_slice(data);
                if matches!(self, Frame::DataTo { .. }) {
                    kind::DATA_TO
                } else {
                    kind::DATA_FROM
                }
            }
            Frame::Credit { bytes, .. } => {
                put_u32(p, *bytes);
                kind::CREDIT
            }
            Frame::Incoming { conn, peer, .. } => {
                put_u32(p, *conn);
                p.extend_from_slice(peer);
                kind::INCOMING
            }
            Frame::Reply {
                req,
                errno,
                value,
                data,
                ..
            } => {
                put_u32(p, *req);
                p.extend_from_slice(&errno.to_le_bytes());
                p.extend_from_slice(&value.to_le_bytes());
                p.extend_from_slice(data);
                kind::REPLY
            }
        };
        let len = (p.len() - start - HEADER) as u32;
        p[start] = kind;
        p[start + 1..start + 5].copy_from_slice(&self.id().to_le_bytes());
        p[start + 5..start + HEADER].copy_from_slice(&len.to_le_bytes());
    }

    /// Decodes one frame from its kind, id and payload.
    pub fn decode(kind: u8, id: u32, payload: &[u8]) -> Result<Frame, FrameError> {
        let mut r = Reader {
            rest: payload,
            kind,
        };
        let frame = match kind {
            kind::OPEN => Frame::Open {
                id,
                req: r.u32()?,
                domain: r.i32()?,
                ty: r.i32()?,
                protocol: r.i32()?,
            },
            kind::CONNECT => Frame::Connect {
                id,
                req: r.u32()?,
                addr: r.sockaddr_rest()?,
            },
            kind::BIND => Frame::Bind {
                id,
                req: r.u32()?,
                addr: r.sockaddr_rest()?,
            },
            kind::LISTEN => Frame::Listen {
                id,
                req: r.u32()?,
                backlog: r.i32()?,
            },
            kind::NAME => Frame::Name {
                id,
                req: r.u32()?,
                peer: r.flag()?,
            },
            kind::GETOPT => Frame::GetOpt {
                id,
                req: r.u32()?,
                level: r.i32()?,
                name: r.i32()?,
                len: r.u32()?,
            },
            kind::SETOPT => {
                let (req, level, name) = (r.u32()?, r.i32()?, r.i32()?);
                let value = r.rest();
                if value.len() > MAX_OPTION {
                    return Err(r.bad("option value too long"));
                }
                Frame::SetOpt {
                    id,
                    req,
                    level,
                    name,
                    value,
                }
            }
            kind::EOF => Frame::Eof { id },
            kind::CLOSE => Frame::Close {
                id,
                errno: r.i32()?,
            },
            kind::DATA => Frame::Data { id, data: r.rest() },
            kind::DATA_TO | kind::DATA_FROM => {
                let len = usize::from(r.u8()?);
                if len > MAX_SOCKADDR {
                    return Err(r.bad("address too long"));
                }
                let addr = r.take(len)?.to_vec();
                let data = r.rest();
                if data.len() > MAX_DATAGRAM {
                    return Err(r.bad("datagram too long"));
                }
                if kind == kind::DATA_TO {
                    Frame::DataTo { id, addr, data }
                } else {
                    Frame::DataFrom { id, addr, data }
                }
            }
            kind::CREDIT => Frame::Credit {
                id,
                bytes: r.u32()?,
            },
            kind::INCOMING => Frame::Incoming {
                id,
                conn: r.u32()?,
                peer: r.sockaddr_rest()?,
            },
            kind::REPLY => Frame::Reply {
                id,
                req: r.u32()?,
                errno: r.i32()?,
                value: r.i64()?,
                data: r.rest(),
            },
            other => return Err(FrameError::Malformed(format!("unknown frame kind {other}"))),
        };
        if !r.rest.is_empty() {
            return Err(r.bad("trailing bytes"));
        }
        Ok(frame)
    }
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

struct Reader<'a> {
    rest: &'a [u8],
    kind: u8,
}

impl<'a> Reader<'a> {
    fn bad(&self, what: &str) -> FrameError {
        FrameError::Malformed(format!("frame kind {}: {what}", self.kind))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.rest.len() < n {
            return Err(self.bad("payload too short"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }

    /// A boolean byte: 0 or 1 and nothing else, so that a frame has one encoding only.
    fn flag(&mut self) -> Result<bool, FrameError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.bad("flag byte neither 0 nor 1")),
        }
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }

    fn i32(&mut self) -> Result<i32, FrameError> {
        Ok(self.u32()? as i32)
    }

    fn i64(&mut self) -> Result<i64, FrameError> {
        Ok(i64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }

    fn rest(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.rest).to_vec()
    }

    fn sockaddr_rest(&mut self) -> Result<Vec<u8>, FrameError> {
        if self.rest.len() > MAX_SOCKADDR {
            return Err(self.bad("address too long"));
        }
        Ok(self.rest())
    }
}

/// A frame's header: what follows it and how many payload bytes it announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub id: u32,
    pub len: usize,
}

impl Header {
    /// Bytes in a header.
    pub const LEN: usize = HEADER;

    /// Reads a header, refusing a payload longer than [`MAX_PAYLOAD`] before anything is
    /// allocated for it.
    pub fn parse(bytes: &[u8; HEADER]) -> Result<Header, FrameError> {
        let id = u32::from_le_bytes(bytes[1..5].try_into().expect("4"));
        let len = u32::from_le_bytes(bytes[5..9].try_into().expect("4")) as usize;
        if len > MAX_PAYLOAD {
            return Err(FrameError::Malformed(format!(
                "payload of {len} bytes exceeds the limit of {MAX_PAYLOAD}"
            )));
        }
        Ok(Header {
            kind: bytes[0],
            id,
            len,
        })
    }
}

/// Reads one frame; `Ok(None)` at a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>, FrameError> {
    let mut header = [0u8; HEADER];
    match r.read_exact(&mut header[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    r.read_exact(&mut header[1..]).await?;
    let Header { kind, id, len } = Header::parse(&header)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    if kind == kind::DATA {
        // The bulk of the traffic: the payload is the data, no copy needed.
        return Ok(Some(Frame::Data { id, data: payload }));
    }
    Frame::decode(kind, id, &payload).map(Some)
}

/// Writes the frames `rx` yields to `w` until either ends, batching the frames that are
/// ready into one write through a buffer that is reused (no allocation per frame).
pub async fn write_frames<W: AsyncWrite + Unpin>(
    w: &mut W,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Frame>,
) -> io::Result<()> {
    const BATCH: usize = 256 * 1024;
    let mut out = Vec::with_capacity(BATCH + MAX_PAYLOAD + HEADER);
    while let Some(frame) = rx.recv().await {
        out.clear();
        frame.encode_into(&mut out);
        while out.len() < BATCH {
            match rx.try_recv() {
                Ok(more) => more.encode_into(&mut out),
                Err(_) => break,
            }
        }
        w.write_all(&out).await?;
        w.flush().await?;
    }
    Ok(())
}

/// Writes one frame (without flushing).
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &Frame) -> io::Result<()> {
    w.write_all(&frame.encode()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(frame: Frame) {
        let bytes = frame.encode();
        let id = u32::from_le_bytes(bytes[1..5].try_into().unwrap());
        let len = u32::from_le_bytes(bytes[5..9].try_into().unwrap()) as usize;
        assert_eq!(len, bytes.len() - HEADER);
        assert_eq!(
            Frame::decode(bytes[0], id, &bytes[HEADER..]).unwrap(),
            frame
        );
    }

    /// One frame of every kind.
    fn samples() -> Vec<Frame> {
        let addr = vec![2, 0, 0, 80, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        vec![
            Frame::Open {
                id: 1,
                req: 2,
                domain: 2,
                ty: 1,
                protocol: 0,
            },
            Frame::Connect {
                id: 1,
                req: 3,
                addr: addr.clone(),
            },
            Frame::Bind {
                id: 1,
                req: 3,
                addr: addr.clone(),
            },
            Frame::Listen {
                id: 1,
                req: 4,
                backlog: -1,
            },
            Frame::Name {
                id: 1,
                req: 5,
                peer: true,
            },
            Frame::GetOpt {
                id: 1,
                req: 6,
                level: 1,
                name: 4,
                len: 4,
            },
            Frame::SetOpt {
                id: 1,
                req: 7,
                level: 6,
                name: 1,
                value: vec![1, 0, 0, 0],
            },
            Frame::Eof { id: 9 },
            Frame::Close { id: 9, errno: 104 },
            Frame::Data {
                id: 9,
                data: b"hello".to_vec(),
            },
            Frame::DataTo {
                id: 9,
                addr: addr.clone(),
                data: vec![],
            },
            Frame::DataFrom {
                id: 9,
                addr: addr.clone(),
                data: vec![1; 100],
            },
            Frame::Credit { id: 9, bytes: 7 },
            Frame::Incoming {
                id: 9,
                conn: SERVER_IDS,
                peer: addr,
            },
            Frame::Reply {
                id: 9,
                req: 1,
                errno: 0,
                value: -3,
                data: vec![5],
            },
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for f in samples() {
            roundtrip(f);
        }
    }

    #[test]
    fn bad_frames_are_errors() {
        assert!(Frame::decode(99, 1, &[]).is_err());
        assert!(Frame::decode(kind::OPEN, 1, &[1, 2]).is_err());
        assert!(Frame::decode(kind::EOF, 1, &[1]).is_err());
        assert!(Frame::decode(kind::CONNECT, 1, &[0; 4 + 129]).is_err());
        assert!(Frame::decode(kind::DATA_TO, 1, &[200]).is_err());
        assert!(Frame::decode(kind::SETOPT, 1, &[0; 12 + 257]).is_err());
    }

    /// Found by the `relay/fuzz` target: any non-zero byte decoded as `peer: true` and
    /// re-encoded as 1, so one request had 255 encodings.
    #[test]
    fn name_frame_peer_byte_other_than_0_or_1_is_malformed() {
        let mut payload = 7u32.to_le_bytes().to_vec();
        for (byte, peer) in [(0, Some(false)), (1, Some(true)), (2, None), (0x20, None)] {
            payload.truncate(4);
            payload.push(byte);
            let decoded = Frame::decode(kind::NAME, 3, &payload).ok();
            let want = peer.map(|peer| Frame::Name {
                id: 3,
                req: 7,
                peer,
            });
            assert_eq!(decoded, want, "peer byte {byte}");
        }
    }

    /// Reads frames off `bytes` until the stream ends or fails, checking that each frame
    /// read encodes back to exactly the bytes it was read from; returns how many were read.
    fn read_all(bytes: &[u8]) -> usize {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut stream = bytes;
        let mut frames = 0;
        loop {
            let before = stream;
            match runtime.block_on(read_frame(&mut stream)) {
                Ok(Some(frame)) => {
                    let consumed = &before[..before.len() - stream.len()];
                    assert_eq!(frame.encode(), consumed, "{frame:?} from {bytes:?}");
                    frames += 1;
                }
                Ok(None) => {
                    assert!(before.is_empty(), "a clean end inside a frame: {bytes:?}");
                    return frames;
                }
                Err(_) => return frames,
            }
        }
    }

    /// The cheap, deterministic cousin of the `relay/fuzz` target, run with every
    /// `cargo test`: a few thousand mutations of valid frames (bytes flipped, stretched, cut,
    /// headers lying about the length) through the stream reader. Mutating real frames gets
    /// past the kind and length checks far more often than uniform random bytes would.
    #[test]
    fn mutated_frames_are_read_canonically_or_refused() {
        let seeds: Vec<Vec<u8>> = samples().iter().map(Frame::encode).collect();
        // xorshift64: no dependency, and the same sequence on every run.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut read = 0;
        for _ in 0..4000 {
            let mut bytes = seeds[next() as usize % seeds.len()].clone();
            for _ in 0..1 + next() % 4 {
                let at = next() as usize % bytes.len().max(1);
                match next() % 5 {
                    0 if !bytes.is_empty() => bytes[at] = next() as u8,
                    1 if !bytes.is_empty() => bytes[at] ^= 1 << (next() % 8),
                    2 => bytes.truncate(at),
                    3 => bytes.extend((0..next() % 16).map(|_| next() as u8)),
                    _ => bytes.extend(&seeds[next() as usize % seeds.len()]),
                }
            }
            read += read_all(&bytes);
        }
        // Most mutations leave a valid frame or two in front: the test must reach the
        // decoder's success path, not only its refusals.
        assert!(read > 1000, "only {read} frames read");
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(
            kind in 0u8..20,
            id in any::<u32>(),
            payload in proptest::collection::vec(any::<u8>(), 0..300)
        ) {
            let _ = Frame::decode(kind, id, &payload);
        }
    }
}
