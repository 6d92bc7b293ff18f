//! Starting the program under the filter.
//!
//! The child installs the filter on itself (a filter can only be installed by the thread it
//! applies to), sends the listener to the parent, waits for the go-ahead and executes the
//! program. The sequence, with the constraint each step obeys:
//!
//! 1. Parent, before `fork`: builds every buffer the child needs (BPF, argv). The parent is
//!    still single-threaded here, so the child may allocate; the child still keeps to plain
//!    system calls.
//! 2. Child: `PR_SET_NO_NEW_PRIVS` — must precede seccomp(2) for an unprivileged caller.
//! 3. Child: seccomp(2) with `NEW_LISTENER | WAIT_KILLABLE_RECV`, falling back to
//!    `NEW_LISTENER` alone on kernels older than 5.19.
//! 4. Child → parent: one status frame naming the listener's descriptor number, which the
//!    parent copies with `pidfd_getfd` (the child's `sendmsg` may already be trapped).
//! 5. Parent → child: the go-ahead byte, sent only once the parent holds the listener, so
//!    the program never runs with nobody able to answer its trapped calls.
//! 6. Child: restores the signal mask the supervisor had before it blocked signals (a mask
//!    survives `execve`), then `execvp`. On failure it writes the errno back and exits 127.
//!    The socket is close-on-exec, so end-of-file tells the parent the exec succeeded.

use std::ffi::{CString, OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::sys::signal::SigSet;
use nix::unistd::{fork, ForkResult, Pid};

use crate::sys::{self, BpfInstruction};

/// Why the program could not be started.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// An argument contains a NUL byte and cannot be passed to execve(2).
    #[error("argument {0:?} contains a NUL byte")]
    NulInArgument(OsString),
    /// socketpair(2) or fork(2) failed.
    #[error("{op}: {errno}")]
    Os {
        /// The call that failed.
        op: &'static str,
        /// Its error.
        errno: Errno,
    },
    /// The child could not install the filter.
    #[error("installing the seccomp filter in the child failed at {step}: {errno}")]
    Filter {
        /// `no_new_privs` or `seccomp`.
        step: &'static str,
        /// The kernel's error.
        errno: Errno,
    },
    /// The child ended before handing over the listener.
    #[error("the child exited before handing over the seccomp listener")]
    ChildVanished,
    /// execvp(3) failed in the child.
    #[error("cannot execute {program:?}: {errno}")]
    Exec {
        /// The program as given on the command line.
        program: OsString,
        /// Why execvp failed (`ENOENT`: not found; `EACCES`, `ENOEXEC`: not executable).
        errno: Errno,
    },
}

/// A program running under the filter.
#[derive(Debug)]
pub struct Launched {
    /// The program's pid.
    pub pid: Pid,
    /// The notification listener of its filter.
    pub listener: OwnedFd,
    /// Whether the kernel accepted `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`.
    pub wait_killable: bool,
}

/// Status frame from child to parent: tag, errno (LE), wait-killable flag, listener number.
const STATUS_LEN: usize = 10;
const TAG_LISTENER: u8 = 0;
const TAG_NNP_FAILED: u8 = 1;
const TAG_SECCOMP_FAILED: u8 = 2;

/// Starts `program` with `args` under `filter`. `restore_mask` is the signal mask the
/// program should start with.
///
/// Must be called while the calling process has a single thread (see the module docs).
pub fn spawn(
    program: &OsStr,
    args: &[OsString],
    env: Option<&[CString]>,
    close_fds: bool,
    filter: &[BpfInstruction],
    restore_mask: &SigSet,
) -> Result<Launched, LaunchError> {
    let argv = c_argv(program, args)?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let envp: Option<Vec<*const libc::c_char>> = env.map(|env| {
        env.iter()
            .map(|e| e.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    });

    let (parent_end, child_end) =
        UnixStream::pair().map_err(|e| os_error("socketpair", io_errno(&e)))?;

    // SAFETY: the supervisor is single-threaded at this point (documented precondition), so
    // the child is a full copy of a consistent process and may run ordinary code.
    match unsafe { fork() }.map_err(|errno| LaunchError::Os { op: "fork", errno })? {
        ForkResult::Child => {
            drop(parent_end);
            let code = run_child(
                child_end,
                filter,
                restore_mask,
                &argv_ptrs,
                envp.as_deref(),
                close_fds,
            );
            // SAFETY: _exit ends the child without running the parent's atexit handlers
            // or flushing buffers the parent owns.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(child_end);
            parent_side(parent_end, child, program)
        }
    }
}

fn os_error(op: &'static str, errno: Errno) -> LaunchError {
    LaunchError::Os { op, errno }
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

fn c_argv(program: &OsStr, args: &[OsString]) -> Result<Vec<CString>, LaunchError> {
    std::iter::once(program)
        .chain(args.iter().map(OsString::as_os_str))
        .map(|a| CString::new(a.as_bytes()).map_err(|_| LaunchError::NulInArgument(a.into())))
        .collect()
}

fn parent_side(sock: UnixStream, child: Pid, program: &OsStr) -> Result<Launched, LaunchError> {
    let reap = || {
        let _ = nix::sys::wait::waitpid(child, None);
    };
    let fail = |e: LaunchError| {
        reap();
        Err(e)
    };

    let mut status = [0u8; STATUS_LEN];
    if (&sock).read_exact(&mut status).is_err() {
        return fail(LaunchError::ChildVanished);
    }
    let errno = Errno::from_raw(i32::from_le_bytes(status[1..5].try_into().expect("4")));
    let listener = match status[0] {
        TAG_LISTENER => {
            let number = i32::from_le_bytes(status[6..10].try_into().expect("4"));
            match take_listener(child, number) {
                Ok(fd) => fd,
                Err(errno) => return fail(os_error("pidfd_getfd of the child's listener", errno)),
            }
        }
        TAG_NNP_FAILED => {
            return fail(LaunchError::Filter {
                step: "prctl(PR_SET_NO_NEW_PRIVS)",
                errno,
            })
        }
        TAG_SECCOMP_FAILED => {
            return fail(LaunchError::Filter {
                step: "seccomp(SECCOMP_SET_MODE_FILTER)",
                errno,
            })
        }
        _ => return fail(LaunchError::ChildVanished),
    };

    // Go-ahead: from here on the program may run.
    if let Err(e) = (&sock).write_all(&[1]) {
        return fail(os_error("write go-ahead", io_errno(&e)));
    }

    let mut exec_errno = [0u8; 4];
    match (&sock).read_exact(&mut exec_errno) {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(Launched {
            pid: child,
            listener,
            wait_killable: status[5] != 0,
        }),
        Ok(()) => fail(LaunchError::Exec {
            program: program.to_owned(),
            errno: Errno::from_raw(i32::from_le_bytes(exec_errno)),
        }),
        Err(e) => fail(os_error("read exec status", io_errno(&e))),
    }
}

/// Copies the child's listener (descriptor `number` in the child) with `pidfd_getfd`.
///
/// The listener cannot travel by `SCM_RIGHTS`: once the filter is on, the child's own
/// `sendmsg` may be one of the trapped calls, and nobody would answer it yet.
fn take_listener(child: Pid, number: i32) -> Result<OwnedFd, Errno> {
    let (pidfd, _) = sys::pidfd_open(child.as_raw(), || Some(child.as_raw()))?;
    sys::pidfd_getfd(pidfd.as_fd(), number)
}

/// Everything the child does between fork and exec. Returns the exit code on failure.
fn run_child(
    sock: UnixStream,
    filter: &[BpfInstruction],
    restore_mask: &SigSet,
    argv: &[*const libc::c_char],
    envp: Option<&[*const libc::c_char]>,
    close_fds: bool,
) -> i32 {
    // Plain write(2): neither it nor read(2) is ever trapped.
    let report = |tag: u8, errno: Errno, killable: bool, fd: RawFd| {
        let mut status = [0u8; STATUS_LEN];
        status[0] = tag;
        status[1..5].copy_from_slice(&(errno as i32).to_le_bytes());
        status[5] = u8::from(killable);
        status[6..10].copy_from_slice(&fd.to_le_bytes());
        let _ = (&sock).write_all(&status);
    };

    // The supervisor is not dumpable and the child inherited that; the parent needs
    // pidfd_getfd on the child, which checks ptrace access. execve resets the flag anyway.
    let _ = sys::set_dumpable();

    if let Err(errno) = sys::set_no_new_privs() {
        report(TAG_NNP_FAILED, errno, false, -1);
        return 1;
    }

    let base = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
    let (listener, killable) = match sys::seccomp_set_mode_filter(
        filter,
        base | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
    ) {
        Ok(fd) => (fd, true),
        // EINVAL: the kernel does not know the flag (before 5.19).
        Err(Errno::EINVAL) => match sys::seccomp_set_mode_filter(filter, base) {
            Ok(fd) => (fd, false),
            Err(errno) => {
                report(TAG_SECCOMP_FAILED, errno, false, -1);
                return 1;
            }
        },
        Err(errno) => {
            report(TAG_SECCOMP_FAILED, errno, false, -1);
            return 1;
        }
    };
    report(
        TAG_LISTENER,
        Errno::from_raw(0),
        killable,
        listener.as_raw_fd(),
    );

    // The parent copies the listener before it sends the go-ahead; only then may ours close.
    let mut go = [0u8; 1];
    if (&sock).read_exact(&mut go).is_err() {
        return 1;
    }
    drop(listener);

    // Every inherited descriptor above stderr becomes close-on-exec (close_range(2) with
    // CLOSE_RANGE_CLOEXEC, Linux 5.11), so exec drops them while our socket to the parent
    // still reports an exec failure.
    if close_fds && sys::close_range(3, u32::MAX, sys::CLOSE_RANGE_CLOEXEC).is_err() {
        return 1;
    }

    // The Rust runtime ignores SIGPIPE in the supervisor, and an ignored signal stays ignored
    // across execve: give the program the default a shell would.
    // SAFETY: setting a disposition to SIG_DFL installs no handler.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let _ = restore_mask.thread_set_mask();
    // SAFETY: argv and envp are NULL-terminated arrays of pointers to NUL-terminated strings
    // that live in the parent's (copied) heap until exec replaces the image.
    unsafe {
        match envp {
            Some(envp) => libc::execvpe(argv[0], argv.as_ptr(), envp.as_ptr()),
            None => libc::execvp(argv[0], argv.as_ptr()),
        }
    };
    let errno = Errno::last();
    let _ = (&sock).write_all(&(errno as i32).to_le_bytes());
    127
}
