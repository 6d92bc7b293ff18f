//! The wire protocol between clients and `rump_server`.
//!
//! Every message is one frame:
//!
//! ```text
//! +----------------+---------+---------------------+
//! | length: u32 LE | kind: u8 | body (length - 1)  |
//! +----------------+---------+---------------------+
//! ```
//!
//! `length` counts the kind byte and the body and may not exceed [`MAX_FRAME_LEN`]. Integers
//! in bodies are little-endian; strings are a `u16` byte count followed by UTF-8. A frame whose
//! body is longer or shorter than its kind requires is malformed.
//!
//! A session starts with [`Message::Hello`] from the client, answered by
//! [`Message::Welcome`] (or [`Message::Error`] and a close). After that the client sends one
//! request at a time and reads its reply before sending the next. A
//! [`Message::SocketReply`] with `errno == 0` carries exactly one descriptor as
//! `SCM_RIGHTS` ancillary data on the same `sendmsg`; a [`Message::SocketsReply`] carries
//! `count` of them, all in one `SCM_RIGHTS` message. No other frame carries descriptors.
//!
//! # Versions
//!
//! Version 2 added the batch request [`Message::CreateSockets`] and its reply. A server
//! accepts every version from [`MIN_PROTOCOL_VERSION`] to [`PROTOCOL_VERSION`] and answers
//! `Welcome` with the version the client asked for, so a version 1 client keeps working
//! unchanged; a client knows from `Welcome` whether it may send batches. A server refuses a
//! version newer than its own, so a version 2 client needs a version 2 server.
//!
//! The decoder never panics on any input; it is fuzzed by `fuzz/fuzz_targets/frame_decoder.rs`.

use std::fmt;

/// The newest protocol version this crate speaks. A server refuses newer ones.
pub const PROTOCOL_VERSION: u16 = 2;

/// The oldest protocol version a server still accepts.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// The first version with [`Message::CreateSockets`].
pub const BATCH_PROTOCOL_VERSION: u16 = 2;

/// The protocol versions this crate speaks, for the `--version` output of the programs built
/// on it: `protocol 2, accepts 1 to 2`. Both sides accept a peer of any version in the range.
pub fn versions_summary() -> String {
    format!("protocol {PROTOCOL_VERSION}, accepts {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION}")
}

/// Most sockets one [`Message::CreateSockets`] may ask for, and so the most descriptors one
/// frame carries. Far below the kernel's `SCM_MAX_FD` (253, unix(7)); large enough that one
/// round trip is a small share of each socket's cost.
pub const MAX_SOCKET_BATCH: u8 = 32;

/// Sent at the start of [`Message::Hello`] so that a server can tell a stray peer from a client.
pub const HELLO_MAGIC: [u8; 4] = *b"RUMP";

/// Largest value of the length prefix: the kind byte plus the body.
pub const MAX_FRAME_LEN: usize = 4096;

/// Size of the length prefix.
pub const LEN_PREFIX: usize = 4;

/// Why a server closed a session; carried in [`Message::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// The frame could not be decoded or exceeded the size limit.
    Malformed = 1,
    /// The client speaks another protocol version.
    Version = 2,
    /// The peer's uid is not allowed to use this server.
    Permission = 3,
    /// A request arrived before the handshake, or a handshake after it.
    Sequence = 4,
    /// The server is shutting down.
    ShuttingDown = 5,
    /// Anything else; the message says what.
    Other = 6,
}

impl ErrorCode {
    fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            1 => Self::Malformed,
            2 => Self::Version,
            3 => Self::Permission,
            4 => Self::Sequence,
            5 => Self::ShuttingDown,
            6 => Self::Other,
            _ => return None,
        })
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Client → server, first frame of a session.
    Hello {
        /// Protocol version the client speaks.
        version: u16,
        /// Pid of the program the client acts for (the supervised program, or the process
        /// that loaded the library).
        pid: u32,
        /// Short name of that program, for the server's logs.
        program: String,
    },
    /// Server → client, answer to `Hello`.
    Welcome {
        /// Protocol version the server speaks (equal to the client's).
        version: u16,
        /// Human-readable description of the stack the server hosts.
        stack: String,
    },
    /// Client → server: create a socket in the server's stack.
    CreateSocket {
        /// `domain` argument of socket(2).
        domain: i32,
        /// `type` argument of socket(2), including `SOCK_NONBLOCK`; `SOCK_CLOEXEC` is
        /// meaningless across the wire and ignored.
        ty: i32,
        /// `protocol` argument of socket(2).
        protocol: i32,
    },
    /// Server → client: the result of `CreateSocket`. `errno == 0` means the descriptor is
    /// attached; otherwise it is the error socket(2) gave in the server's stack.
    SocketReply {
        /// 0 on success, else a positive errno value.
        errno: i32,
    },
    /// Client → server (version 2): create up to `count` sockets of one kind in one round
    /// trip. Answered by [`Message::SocketsReply`].
    CreateSockets {
        /// `domain` argument of socket(2).
        domain: i32,
        /// `type` argument of socket(2), as in [`Message::CreateSocket`].
        ty: i32,
        /// `protocol` argument of socket(2).
        protocol: i32,
        /// How many, 1 to [`MAX_SOCKET_BATCH`].
        count: u8,
    },
    /// Server → client: the result of `CreateSockets`. `count` descriptors are attached, all
    /// in one `SCM_RIGHTS` message; fewer than were asked for when socket(2) failed midway,
    /// and then `errno` says why (it is 0 when the whole batch was made). `count == 0`
    /// requires a non-zero `errno`.
    SocketsReply {
        /// Descriptors attached, 0 to [`MAX_SOCKET_BATCH`].
        count: u8,
        /// 0, or the positive errno value of the socket(2) that ended the batch.
        errno: i32,
    },
    /// Server → client: the session is over; the server closes the connection after this.
    Error {
        /// Class of the failure.
        code: ErrorCode,
        /// What went wrong, for a person.
        message: String,
    },
}

const KIND_HELLO: u8 = 1;
const KIND_WELCOME: u8 = 2;
const KIND_CREATE_SOCKET: u8 = 3;
const KIND_SOCKET_REPLY: u8 = 4;
const KIND_ERROR: u8 = 5;
const KIND_CREATE_SOCKETS: u8 = 6;
const KIND_SOCKETS_REPLY: u8 = 7;

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The length prefix is 0 or larger than [`MAX_FRAME_LEN`].
    #[error("frame length {0} is outside 1..={MAX_FRAME_LEN}")]
    BadLength(usize),
    /// The kind byte names no message.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// The body ended before the message did.
    #[error("{0} body is truncated")]
    Truncated(&'static str),
    /// Bytes remain after the message.
    #[error("{0} body has {1} trailing bytes")]
    Trailing(&'static str, usize),
    /// A string field is not UTF-8.
    #[error("{0} carries a string that is not UTF-8")]
    BadString(&'static str),
    /// `Hello` does not start with [`HELLO_MAGIC`].
    #[error("hello does not start with the rump protocol magic")]
    BadMagic,
    /// `Error` carries an unknown code.
    #[error("unknown error code {0}")]
    BadErrorCode(u16),
    /// `SocketReply` or `SocketsReply` carries a negative errno.
    #[error("socket reply carries negative errno {0}")]
    BadErrno(i32),
    /// `CreateSockets` asks for no socket or more than [`MAX_SOCKET_BATCH`], or
    /// `SocketsReply` claims more than that many.
    #[error("{0} counts {1} sockets, outside its limits (at most {MAX_SOCKET_BATCH})")]
    BadCount(&'static str, u8),
    /// `SocketsReply` carries no descriptor and no errno.
    #[error("sockets reply carries neither a socket nor an errno")]
    EmptyBatch,
}

/// Reads the length prefix of a frame: how many bytes follow it.
pub fn frame_len(prefix: [u8; LEN_PREFIX]) -> Result<usize, DecodeError> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len == 0 || len > MAX_FRAME_LEN {
        return Err(DecodeError::BadLength(len));
    }
    Ok(len)
}

impl Message {
    /// How many descriptors a well-formed frame of this message carries.
    pub fn descriptors(&self) -> usize {
        match self {
            Message::SocketReply { errno: 0 } => 1,
            Message::SocketsReply { count, .. } => usize::from(*count),
            _ => 0,
        }
    }

    /// Short name of the message's kind, for logs and errors.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Welcome { .. } => "welcome",
            Message::CreateSocket { .. } => "create-socket",
            Message::SocketReply { .. } => "socket-reply",
            Message::CreateSockets { .. } => "create-sockets",
            Message::SocketsReply { .. } => "sockets-reply",
            Message::Error { .. } => "error",
        }
    }

    /// Encodes the message as a complete frame, length prefix included.
    ///
    /// Strings longer than the frame allows are cut at a character boundary, so encoding
    /// never fails and never produces a frame the decoder would refuse.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(32));
        w.0.extend_from_slice(&[0; LEN_PREFIX]);
        match self {
            Message::Hello {
                version,
                pid,
                program,
            } => {
                w.u8(KIND_HELLO);
                w.0.extend_from_slice(&HELLO_MAGIC);
                w.u16(*version);
                w.u32(*pid);
                w.string(program);
            }
            Message::Welcome { version, stack } => {
                w.u8(KIND_WELCOME);
                w.u16(*version);
                w.string(stack);
            }
            Message::CreateSocket {
                domain,
                ty,
                protocol,
            } => {
                w.u8(KIND_CREATE_SOCKET);
                w.i32(*domain);
                w.i32(*ty);
                w.i32(*protocol);
            }
            Message::SocketReply { errno } => {
                w.u8(KIND_SOCKET_REPLY);
                w.i32(*errno);
            }
            Message::CreateSockets {
                domain,
                ty,
                protocol,
                count,
            } => {
                w.u8(KIND_CREATE_SOCKETS);
                w.i32(*domain);
                w.i32(*ty);
                w.i32(*protocol);
                w.u8(*count);
            }
            Message::SocketsReply { count, errno } => {
                w.u8(KIND_SOCKETS_REPLY);
                w.u8(*count);
                w.i32(*errno);
            }
            Message::Error { code, message } => {
                w.u8(KIND_ERROR);
                w.u16(*code as u16);
                w.string(message);
            }
        }
        let len = (w.0.len() - LEN_PREFIX) as u32;
        w.0[..LEN_PREFIX].copy_from_slice(&len.to_le_bytes());
        w.0
    }

    /// Decodes the part of a frame after the length prefix (kind byte and body).
    pub fn decode(frame: &[u8]) -> Result<Message, DecodeError> {
        if frame.is_empty() || frame.len() > MAX_FRAME_LEN {
            return Err(DecodeError::BadLength(frame.len()));
        }
        let (kind, body) = (frame[0], &frame[1..]);
        match kind {
            KIND_HELLO => {
                let mut r = Reader::new("hello", body);
                if r.bytes(HELLO_MAGIC.len())? != HELLO_MAGIC {
                    return Err(DecodeError::BadMagic);
                }
                let msg = Message::Hello {
                    version: r.u16()?,
                    pid: r.u32()?,
                    program: r.string()?,
                };
                r.finish(msg)
            }
            KIND_WELCOME => {
                let mut r = Reader::new("welcome", body);
                let msg = Message::Welcome {
                    version: r.u16()?,
                    stack: r.string()?,
                };
                r.finish(msg)
            }
            KIND_CREATE_SOCKET => {
                let mut r = Reader::new("create-socket", body);
                let msg = Message::CreateSocket {
                    domain: r.i32()?,
                    ty: r.i32()?,
                    protocol: r.i32()?,
                };
                r.finish(msg)
            }
            KIND_SOCKET_REPLY => {
                let mut r = Reader::new("socket-reply", body);
                let errno = r.i32()?;
                if errno < 0 {
                    return Err(DecodeError::BadErrno(errno));
                }
                r.finish(Message::SocketReply { errno })
            }
            KIND_CREATE_SOCKETS => {
                let what = "create-sockets";
                let mut r = Reader::new(what, body);
                let (domain, ty, protocol) = (r.i32()?, r.i32()?, r.i32()?);
                let count = r.u8()?;
                if count == 0 || count > MAX_SOCKET_BATCH {
                    return Err(DecodeError::BadCount(what, count));
                }
                let msg = Message::CreateSockets {
                    domain,
                    ty,
                    protocol,
                    count,
                };
                r.finish(msg)
            }
            KIND_SOCKETS_REPLY => {
                let what = "sockets-reply";
                let mut r = Reader::new(what, body);
                let (count, errno) = (r.u8()?, r.i32()?);
                if count > MAX_SOCKET_BATCH {
                    return Err(DecodeError::BadCount(what, count));
                }
                if errno < 0 {
                    return Err(DecodeError::BadErrno(errno));
                }
                if count == 0 && errno == 0 {
                    return Err(DecodeError::EmptyBatch);
                }
                r.finish(Message::SocketsReply { count, errno })
            }
            KIND_ERROR => {
                let mut r = Reader::new("error", body);
                let raw = r.u16()?;
                let code = ErrorCode::from_u16(raw).ok_or(DecodeError::BadErrorCode(raw))?;
                let msg = Message::Error {
                    code,
                    message: r.string()?,
                };
                r.finish(msg)
            }
            other => Err(DecodeError::UnknownKind(other)),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorCode::Malformed => "malformed frame",
            ErrorCode::Version => "protocol version mismatch",
            ErrorCode::Permission => "permission denied",
            ErrorCode::Sequence => "out-of-sequence message",
            ErrorCode::ShuttingDown => "server shutting down",
            ErrorCode::Other => "server error",
        };
        f.write_str(s)
    }
}

/// Room left for a string once the fixed fields of the largest message are written.
const MAX_STRING: usize = MAX_FRAME_LEN - 16;

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn string(&mut self, s: &str) {
        let mut end = s.len().min(MAX_STRING);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.u16(end as u16);
        self.0.extend_from_slice(&s.as_bytes()[..end]);
    }
}

struct Reader<'a> {
    what: &'static str,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(what: &'static str, body: &'a [u8]) -> Self {
        Reader { what, rest: body }
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated(self.what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        self.array().map(u8::from_le_bytes)
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_le_bytes)
    }
    fn i32(&mut self) -> Result<i32, DecodeError> {
        self.array().map(i32::from_le_bytes)
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let len = self.u16()? as usize;
        let raw = self.bytes(len)?;
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::BadString(self.what))
    }
    fn finish(self, msg: Message) -> Result<Message, DecodeError> {
        if self.rest.is_empty() {
            Ok(msg)
        } else {
            Err(DecodeError::Trailing(self.what, self.rest.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn versions_summary_names_the_newest_and_oldest_version() {
        let text = versions_summary();
        assert!(
            text.starts_with(&format!("protocol {PROTOCOL_VERSION},")),
            "{text}"
        );
        assert!(
            text.contains(&format!("accepts {MIN_PROTOCOL_VERSION} to")),
            "{text}"
        );
    }

    fn round_trip(msg: Message) {
        let frame = msg.encode();
        let len = frame_len(frame[..4].try_into().unwrap()).unwrap();
        assert_eq!(len, frame.len() - 4);
        assert_eq!(Message::decode(&frame[4..]).unwrap(), msg);
    }

    #[test]
    fn every_message_round_trips() {
        round_trip(Message::Hello {
            version: PROTOCOL_VERSION,
            pid: 4242,
            program: "curl".into(),
        });
        round_trip(Message::Welcome {
            version: 1,
            stack: "netns 4026531840: lo".into(),
        });
        round_trip(Message::CreateSocket {
            domain: libc::AF_INET6,
            ty: libc::SOCK_STREAM | libc::SOCK_NONBLOCK,
            protocol: 0,
        });
        round_trip(Message::SocketReply { errno: 0 });
        round_trip(Message::SocketReply {
            errno: libc::EAFNOSUPPORT,
        });
        round_trip(Message::Error {
            code: ErrorCode::Version,
            message: "server speaks 1".into(),
        });
        round_trip(Message::CreateSockets {
            domain: libc::AF_INET,
            ty: libc::SOCK_DGRAM,
            protocol: libc::IPPROTO_UDP,
            count: MAX_SOCKET_BATCH,
        });
        round_trip(Message::SocketsReply {
            count: 3,
            errno: libc::EMFILE,
        });
        round_trip(Message::SocketsReply {
            count: 0,
            errno: libc::EAFNOSUPPORT,
        });
    }

    #[test]
    fn batch_counts_outside_limits_are_refused() {
        for count in [0, MAX_SOCKET_BATCH + 1, u8::MAX] {
            let frame = Message::CreateSockets {
                domain: 2,
                ty: 1,
                protocol: 0,
                count,
            }
            .encode();
            assert!(
                matches!(Message::decode(&frame[4..]), Err(DecodeError::BadCount(..))),
                "{count}"
            );
        }
        let frame = Message::SocketsReply {
            count: MAX_SOCKET_BATCH + 1,
            errno: 0,
        }
        .encode();
        assert!(matches!(
            Message::decode(&frame[4..]),
            Err(DecodeError::BadCount(..))
        ));
        let frame = Message::SocketsReply { count: 0, errno: 0 }.encode();
        assert_eq!(Message::decode(&frame[4..]), Err(DecodeError::EmptyBatch));
        let frame = Message::SocketsReply {
            count: 1,
            errno: -1,
        }
        .encode();
        assert_eq!(Message::decode(&frame[4..]), Err(DecodeError::BadErrno(-1)));
    }

    #[test]
    fn descriptor_counts_follow_the_message() {
        assert_eq!(Message::SocketReply { errno: 0 }.descriptors(), 1);
        assert_eq!(Message::SocketReply { errno: 1 }.descriptors(), 0);
        let batch = Message::SocketsReply { count: 5, errno: 0 };
        assert_eq!(batch.descriptors(), 5);
    }

    #[test]
    fn length_prefix_outside_limits_is_refused() {
        assert_eq!(frame_len([0; 4]), Err(DecodeError::BadLength(0)));
        let too_big = (MAX_FRAME_LEN as u32 + 1).to_le_bytes();
        assert!(frame_len(too_big).is_err());
        assert!(frame_len((MAX_FRAME_LEN as u32).to_le_bytes()).is_ok());
    }

    #[test]
    fn hello_without_magic_is_refused() {
        let mut frame = Message::Hello {
            version: 1,
            pid: 1,
            program: String::new(),
        }
        .encode();
        frame[5] = b'X';
        assert_eq!(Message::decode(&frame[4..]), Err(DecodeError::BadMagic));
    }

    #[test]
    fn trailing_and_truncated_bodies_are_refused() {
        let mut frame = Message::SocketReply { errno: 0 }.encode();
        frame.push(0);
        assert!(matches!(
            Message::decode(&frame[4..]),
            Err(DecodeError::Trailing(..))
        ));
        let frame = Message::CreateSocket {
            domain: 2,
            ty: 1,
            protocol: 0,
        }
        .encode();
        assert!(matches!(
            Message::decode(&frame[4..frame.len() - 1]),
            Err(DecodeError::Truncated(..))
        ));
    }

    #[test]
    fn long_strings_are_cut_to_fit_a_frame() {
        let msg = Message::Welcome {
            version: 1,
            stack: "é".repeat(MAX_FRAME_LEN),
        };
        let frame = msg.encode();
        assert!(frame.len() - 4 <= MAX_FRAME_LEN);
        assert!(Message::decode(&frame[4..]).is_ok());
    }

    proptest! {
        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn decoder_never_panics_on_batch_kinds(
            kind in prop_oneof![Just(KIND_CREATE_SOCKETS), Just(KIND_SOCKETS_REPLY)],
            body in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let mut frame = vec![kind];
            frame.extend_from_slice(&body);
            if let Ok(msg) = Message::decode(&frame) {
                prop_assert_eq!(&msg.encode()[4..], &frame[..]);
                prop_assert!(msg.descriptors() <= usize::from(MAX_SOCKET_BATCH));
            }
        }

        #[test]
        fn decoded_frames_re_encode_identically(
            bytes in proptest::collection::vec(any::<u8>(), 1..48),
        ) {
            if let Ok(msg) = Message::decode(&bytes) {
                prop_assert_eq!(&msg.encode()[4..], &bytes[..]);
            }
        }
    }
}
