//! Sending and receiving frames over a Unix stream socket, with descriptors attached as
//! `SCM_RIGHTS` (unix(7)).
//!
//! Both ends use these functions, so a frame and the descriptors that belong to it always
//! travel in one `sendmsg` and are read back together: they are received with the first byte
//! of their frame. A frame carries at most [`MAX_FDS_PER_FRAME`] descriptors (a batch reply);
//! [`recv_message`] and [`send_message`], for frames of one descriptor at most, keep that
//! stricter rule for their callers.
//!
//! The receive buffer for ancillary data has room for one descriptor more than a frame may
//! carry, so that a peer sending too many is detected (the frame is refused) rather than
//! silently cut short: the kernel discards descriptors that do not fit and sets `MSG_CTRUNC`
//! (`scm_detach_fds` in net/core/scm.c), which is refused too.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::cmsg_space;
use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::protocol::{
    frame_len, DecodeError, Message, LEN_PREFIX, MAX_FRAME_LEN, MAX_SOCKET_BATCH,
};

/// Most descriptors one frame may carry.
pub const MAX_FDS_PER_FRAME: usize = MAX_SOCKET_BATCH as usize;

/// Why a frame could not be sent or received.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The peer closed the connection before a frame began.
    #[error("connection closed by peer")]
    Closed,
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    TruncatedFrame,
    /// The frame arrived but is not a valid message.
    #[error("malformed frame: {0}")]
    Malformed(#[from] DecodeError),
    /// More descriptors than the frame may carry, or ancillary data cut short.
    #[error("unexpected ancillary data on a frame")]
    UnexpectedAncillary,
    /// The system call failed.
    #[error("{op} failed")]
    Io {
        /// `sendmsg` or `recvmsg`.
        op: &'static str,
        /// The error it returned.
        source: io::Error,
    },
}

impl WireError {
    /// True when the error means the connection itself is gone (as opposed to a bad frame).
    pub fn is_disconnect(&self) -> bool {
        match self {
            WireError::Closed | WireError::TruncatedFrame => true,
            WireError::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN | libc::ECONNREFUSED)
            ),
            _ => false,
        }
    }
}

fn io_error(op: &'static str, errno: Errno) -> WireError {
    WireError::Io {
        op,
        source: io::Error::from_raw_os_error(errno as i32),
    }
}

/// Sends one message, with `fd` attached when given. Blocks until the whole frame is written.
///
/// `MSG_NOSIGNAL` keeps a closed peer from raising `SIGPIPE` in the sender.
pub fn send_message(
    sock: BorrowedFd<'_>,
    msg: &Message,
    fd: Option<BorrowedFd<'_>>,
) -> Result<(), WireError> {
    match fd {
        Some(fd) => send_message_with_fds(sock, msg, &[fd]),
        None => send_message_with_fds(sock, msg, &[]),
    }
}

/// Sends one message with `fds` attached, all in one `SCM_RIGHTS` message. More than
/// [`MAX_FDS_PER_FRAME`] descriptors are refused before anything is sent.
pub fn send_message_with_fds(
    sock: BorrowedFd<'_>,
    msg: &Message,
    fds: &[BorrowedFd<'_>],
) -> Result<(), WireError> {
    if fds.len() > MAX_FDS_PER_FRAME {
        return Err(WireError::UnexpectedAncillary);
    }
    let frame = msg.encode();
    let mut raw_fds: [RawFd; MAX_FDS_PER_FRAME] = [-1; MAX_FDS_PER_FRAME];
    for (raw, fd) in raw_fds.iter_mut().zip(fds) {
        *raw = fd.as_raw_fd();
    }
    let raw_fds = &raw_fds[..fds.len()];
    let mut sent = 0;
    while sent < frame.len() {
        let iov = [IoSlice::new(&frame[sent..])];
        // The descriptors go with the first byte only.
        let cmsgs: &[ControlMessage<'_>] = &[ControlMessage::ScmRights(raw_fds)];
        let cmsgs = if sent == 0 && !fds.is_empty() {
            cmsgs
        } else {
            &[]
        };
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(n) => sent += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(io_error("sendmsg", e)),
        }
    }
    Ok(())
}

/// Receives one message and the descriptor that came with it, if any.
///
/// Received descriptors are close-on-exec (`MSG_CMSG_CLOEXEC`) so they never leak into a
/// program the receiver executes. A frame larger than [`MAX_FRAME_LEN`] is refused as soon
/// as its length prefix is read, before its body is.
pub fn recv_message(sock: BorrowedFd<'_>) -> Result<(Message, Option<OwnedFd>), WireError> {
    let (msg, mut fds) = recv_message_with_fds(sock)?;
    if fds.len() > 1 {
        // Dropping them closes them.
        return Err(WireError::UnexpectedAncillary);
    }
    Ok((msg, fds.pop()))
}

/// Receives one message and the descriptors that came with it, at most
/// [`MAX_FDS_PER_FRAME`]; otherwise as [`recv_message`]. Whether the number fits the message
/// is for the caller to check ([`Message::descriptors`]).
pub fn recv_message_with_fds(sock: BorrowedFd<'_>) -> Result<(Message, Vec<OwnedFd>), WireError> {
    let mut prefix = [0u8; LEN_PREFIX];
    let mut fds = Vec::new();
    read_exact(sock, &mut prefix, &mut fds, true)?;
    let len = frame_len(prefix)?;
    let mut body = vec![0u8; len];
    debug_assert!(len <= MAX_FRAME_LEN);
    read_exact(sock, &mut body, &mut fds, false)?;
    Ok((Message::decode(&body)?, fds))
}

/// Reads exactly `buf.len()` bytes, collecting at most [`MAX_FDS_PER_FRAME`] passed
/// descriptors into `fds`.
fn read_exact(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
    at_frame_start: bool,
) -> Result<(), WireError> {
    let mut got = 0;
    while got < buf.len() {
        // Room for one more than allowed, to tell "too many" from "exactly the limit".
        let mut cmsg_buf = cmsg_space!([RawFd; MAX_FDS_PER_FRAME + 1]);
        let mut iov = [IoSliceMut::new(&mut buf[got..])];
        let res = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_buf),
            MsgFlags::MSG_CMSG_CLOEXEC,
        );
        let msg = match res {
            Ok(msg) => msg,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(io_error("recvmsg", e)),
        };
        let n = msg.bytes;
        let mut extra = false;
        for cmsg in msg.cmsgs().map_err(|e| io_error("recvmsg", e))? {
            if let ControlMessageOwned::ScmRights(received) = cmsg {
                for raw in received {
                    // SAFETY: SCM_RIGHTS just installed `raw` in this process and nothing
                    // else refers to it, so taking ownership is sound (and closes it on drop
                    // if it is refused below).
                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                    if fds.len() < MAX_FDS_PER_FRAME {
                        fds.push(owned);
                    } else {
                        extra = true;
                    }
                }
            }
        }
        if extra || msg.flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(WireError::UnexpectedAncillary);
        }
        if n == 0 {
            return Err(if at_frame_start && got == 0 {
                WireError::Closed
            } else {
                WireError::TruncatedFrame
            });
        }
        got += n;
    }
    Ok(())
}

/// Convenience for callers holding any descriptor-owning type.
pub fn send<S: AsFd>(sock: &S, msg: &Message, fd: Option<BorrowedFd<'_>>) -> Result<(), WireError> {
    send_message(sock.as_fd(), msg, fd)
}

/// Convenience for callers holding any descriptor-owning type.
pub fn send_with_fds<S: AsFd>(
    sock: &S,
    msg: &Message,
    fds: &[BorrowedFd<'_>],
) -> Result<(), WireError> {
    send_message_with_fds(sock.as_fd(), msg, fds)
}

/// Convenience for callers holding any descriptor-owning type.
pub fn recv_with_fds<S: AsFd>(sock: &S) -> Result<(Message, Vec<OwnedFd>), WireError> {
    recv_message_with_fds(sock.as_fd())
}

/// Convenience for callers holding any descriptor-owning type.
pub fn recv<S: AsFd>(sock: &S) -> Result<(Message, Option<OwnedFd>), WireError> {
    recv_message(sock.as_fd())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn descriptor_travels_with_its_frame() {
        let (a, b) = UnixStream::pair().unwrap();
        let (pr, _pw) = nix::unistd::pipe().unwrap();
        send(&a, &Message::SocketReply { errno: 0 }, Some(pr.as_fd())).unwrap();
        let (msg, fd) = recv(&b).unwrap();
        assert_eq!(msg, Message::SocketReply { errno: 0 });
        let fd = fd.expect("descriptor attached");
        let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(
            flags & libc::FD_CLOEXEC,
            0,
            "received descriptors are close-on-exec"
        );
    }

    #[test]
    fn a_full_batch_travels_in_one_frame() {
        let (a, b) = UnixStream::pair().unwrap();
        let pipes: Vec<_> = (0..MAX_FDS_PER_FRAME)
            .map(|_| nix::unistd::pipe().unwrap().0)
            .collect();
        let fds: Vec<_> = pipes.iter().map(|p| p.as_fd()).collect();
        let reply = Message::SocketsReply {
            count: MAX_SOCKET_BATCH,
            errno: 0,
        };
        send_with_fds(&a, &reply, &fds).unwrap();
        let (msg, got) = recv_with_fds(&b).unwrap();
        assert_eq!(msg, reply);
        assert_eq!(got.len(), MAX_FDS_PER_FRAME);
    }

    #[test]
    fn more_descriptors_than_a_frame_may_carry_are_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let pipes: Vec<_> = (0..=MAX_FDS_PER_FRAME)
            .map(|_| nix::unistd::pipe().unwrap().0)
            .collect();
        let fds: Vec<_> = pipes.iter().map(|p| p.as_fd()).collect();
        let reply = Message::SocketsReply { count: 1, errno: 0 };
        assert!(matches!(
            send_with_fds(&a, &reply, &fds),
            Err(WireError::UnexpectedAncillary)
        ));

        // A peer that sends them anyway, bypassing the check.
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let frame = reply.encode();
        let cmsgs = [ControlMessage::ScmRights(&raw)];
        sendmsg::<()>(
            a.as_raw_fd(),
            &[IoSlice::new(&frame)],
            &cmsgs,
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        assert!(matches!(
            recv_with_fds(&b),
            Err(WireError::UnexpectedAncillary)
        ));
    }

    #[test]
    fn single_descriptor_receivers_refuse_a_batch() {
        let (a, b) = UnixStream::pair().unwrap();
        let (p1, _w1) = nix::unistd::pipe().unwrap();
        let (p2, _w2) = nix::unistd::pipe().unwrap();
        let reply = Message::SocketsReply { count: 2, errno: 0 };
        send_with_fds(&a, &reply, &[p1.as_fd(), p2.as_fd()]).unwrap();
        assert!(matches!(recv(&b), Err(WireError::UnexpectedAncillary)));
    }

    #[test]
    fn oversized_prefix_is_refused_before_reading_the_body() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&u32::MAX.to_le_bytes()).unwrap();
        assert!(matches!(
            recv(&b),
            Err(WireError::Malformed(DecodeError::BadLength(_)))
        ));
    }

    #[test]
    fn close_mid_frame_is_reported_as_truncated() {
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(&[9, 0, 0, 0, 4]).unwrap();
        drop(a);
        assert!(matches!(recv(&b), Err(WireError::TruncatedFrame)));
    }

    #[test]
    fn clean_close_is_reported_as_closed() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        assert!(matches!(recv(&b), Err(WireError::Closed)));
    }
}
