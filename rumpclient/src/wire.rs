//! Sending and receiving frames over a Unix stream socket, with an optional descriptor
//! attached as `SCM_RIGHTS` (unix(7)).
//!
//! Both ends use these two functions, so a frame and the descriptor that belongs to it always
//! travel in one `sendmsg` and are read back together: the descriptor is received with the
//! first byte of its frame.

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::cmsg_space;
use nix::errno::Errno;
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::protocol::{frame_len, DecodeError, Message, LEN_PREFIX, MAX_FRAME_LEN};

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
    /// More than one descriptor, or a descriptor on a frame that must not carry one.
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
    let frame = msg.encode();
    let raw_fds: [RawFd; 1] = [fd.map_or(-1, |f| f.as_raw_fd())];
    let mut sent = 0;
    while sent < frame.len() {
        let iov = [IoSlice::new(&frame[sent..])];
        // The descriptor goes with the first byte only.
        let cmsgs: &[ControlMessage<'_>] = &[ControlMessage::ScmRights(&raw_fds)];
        let cmsgs = if sent == 0 && fd.is_some() {
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
    let mut prefix = [0u8; LEN_PREFIX];
    let mut fd = None;
    read_exact(sock, &mut prefix, &mut fd, true)?;
    let len = frame_len(prefix)?;
    let mut body = vec![0u8; len];
    debug_assert!(len <= MAX_FRAME_LEN);
    read_exact(sock, &mut body, &mut fd, false)?;
    Ok((Message::decode(&body)?, fd))
}

/// Reads exactly `buf.len()` bytes, collecting at most one passed descriptor into `fd`.
fn read_exact(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    fd: &mut Option<OwnedFd>,
    at_frame_start: bool,
) -> Result<(), WireError> {
    let mut got = 0;
    while got < buf.len() {
        let mut cmsg_buf = cmsg_space!([RawFd; 2]);
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
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                for raw in fds {
                    // SAFETY: SCM_RIGHTS just installed `raw` in this process and nothing
                    // else refers to it, so taking ownership is sound (and closes it on drop
                    // if it is refused below).
                    let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                    if fd.is_none() {
                        *fd = Some(owned);
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
