//! The seccomp filter the supervised program runs under.
//!
//! Built with libseccomp, exported as classic BPF and installed with seccomp(2) directly:
//! Debian 12's libseccomp (2.5.4) cannot ask for `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV`,
//! and without that flag a signal to a program thread blocked in a trapped call restarts the
//! call after the supervisor may already have acted on it (seccomp_unotify(2), Linux 5.19).
//!
//! What the filter does:
//!
//! * `socket(domain, …)` with `domain` in a redirected family → user notification; or, when
//!   the stack is the program's own namespace ([`Redirect::Pinned`]), no trap at all, and
//!   instead no way out of that namespace.
//! * `socketpair` in a redirected family other than `AF_UNIX` → `EOPNOTSUPP` (the server's
//!   stack cannot make pairs; the kernel gives the same answer for IP families).
//! * `io_uring_setup`, `io_uring_enter`, `io_uring_register` → `ENOSYS`: a ring creates and
//!   connects sockets without any system call the filter sees.
//! * `seccomp(2)` asking for a new listener → `EPERM`: with the supervisor gone, a listener
//!   of the program's own would let it answer its own `socket()` calls.
//! * Any call through a non-native ABI (i386 `int 0x80`, including `socketcall`; x32) →
//!   `ENOSYS`, since the filter only describes the x86-64 numbers.
//! * `connect`, `bind`, `listen`, `accept`/`accept4` → user notification, each only when the
//!   policy has something to decide about it ([`policy::Policy::traps`]).
//! * Sends, when the policy decides about them: `sendto` with a destination address (a
//!   non-null fifth argument; the address-less form on a connected socket costs nothing),
//!   and every `sendmsg`/`sendmmsg` (the filter cannot look inside a `msghdr`).
//! * In hybrid mode (`--preload`), the checked calls above (but `sendto`, which uses all six
//!   arguments) pass untrapped when their sixth argument carries the run's cookie: the
//!   preload library has decided them in-process.
//!   Anything in the program can learn the cookie, so hybrid mode is not a security
//!   boundary; `socket()` stays trapped, since the library never calls it for a redirected
//!   family (it gets those sockets from the server itself).
//! * Everything else runs natively.
//!
//! Arguments are compared on their low 32 bits: the kernel truncates `int` arguments, so a
//! program could otherwise pass `AF_INET | 1 << 32` and slip past an exact 64-bit compare.

use std::io::{Read, Seek};

use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use policy::{HijackSpec, Operation, Policy};

use crate::sys::BpfInstruction;

/// Why the filter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// libseccomp refused a step.
    #[error("libseccomp: {step}: {source}")]
    Seccomp {
        /// What was being done.
        step: &'static str,
        /// libseccomp's error.
        source: libseccomp::error::SeccompError,
    },
    /// Reading back the exported program failed.
    #[error("reading the exported BPF program: {0}")]
    Export(#[from] std::io::Error),
}

fn step<T>(
    what: &'static str,
    res: Result<T, libseccomp::error::SeccompError>,
) -> Result<T, FilterError> {
    res.map_err(|source| FilterError::Seccomp { step: what, source })
}

const LOW_32: ScmpCompareOp = ScmpCompareOp::MaskedEqual(0xffff_ffff);

/// How the program's sockets reach the stack it should use.
#[derive(Debug, Clone, Copy)]
pub enum Redirect<'a> {
    /// Trap `socket()` in these families; the supervisor installs the server's socket.
    Trap(&'a HijackSpec),
    /// Trap `socket()` in these families, and every call whose answer lives in a remote
    /// stack when the socket is relayed ([`RELAYED_CALLS`]): the program's end of a relayed
    /// socket is a local stand-in, so the supervisor answers those calls for it and lets
    /// the kernel run them on any other descriptor.
    Relay(&'a HijackSpec),
    /// The stack is the network namespace the program already runs in (the embedded server
    /// for the current namespace), so a native `socket()` already lands in it and trapping
    /// would only add a round trip. Instead the program is kept in that namespace: calls
    /// that would move it or its children to another one are refused.
    Pinned,
}

/// Calls trapped on every descriptor when sockets are relayed.
pub const RELAYED_CALLS: [&str; 9] = [
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    "getsockname",
    "getpeername",
    "getsockopt",
    "setsockopt",
];

/// With relayed sockets: [`RELAYED_CALLS`] always, and `sendto`/`recvfrom` when they carry an
/// address (a datagram's destination or sender lives in the remote stack).
fn trap_relayed_calls(ctx: &mut ScmpFilterContext) -> Result<(), FilterError> {
    for name in RELAYED_CALLS {
        let nr = ScmpSyscall::from_name(name).expect("x86-64 has the socket calls");
        step("relay rule", ctx.add_rule(ScmpAction::Notify, nr))?;
    }
    for name in ["sendto", "recvfrom"] {
        let nr = ScmpSyscall::from_name(name).expect("x86-64 has sendto and recvfrom");
        let with_address = ScmpArgCompare::new(4, ScmpCompareOp::NotEqual, 0);
        step(
            "relay rule",
            ctx.add_rule_conditional(ScmpAction::Notify, nr, &[with_address]),
        )?;
    }
    Ok(())
}

fn trap_sockets(ctx: &mut ScmpFilterContext, hijack: &HijackSpec) -> Result<(), FilterError> {
    let socket = ScmpSyscall::from_name("socket").expect("x86-64 has socket");
    let socketpair = ScmpSyscall::from_name("socketpair").expect("x86-64 has socketpair");
    for family in hijack.families() {
        let domain = ScmpArgCompare::new(0, LOW_32, family as u64);
        step(
            "socket rule",
            ctx.add_rule_conditional(ScmpAction::Notify, socket, &[domain]),
        )?;
        if family != libc::AF_UNIX {
            step(
                "socketpair rule",
                ctx.add_rule_conditional(
                    ScmpAction::Errno(libc::EOPNOTSUPP),
                    socketpair,
                    &[domain],
                ),
            )?;
        }
    }
    Ok(())
}

/// Refuses every way into another network namespace: `unshare` and `clone` with
/// `CLONE_NEWNET` (`EPERM`), `setns` to a network namespace or to an unnamed type (the
/// filter cannot see what the descriptor is; `EPERM`), and `clone3`, whose flags sit in
/// memory the filter cannot read (`ENOSYS`, on which glibc falls back to `clone`).
fn pin_network_namespace(ctx: &mut ScmpFilterContext) -> Result<(), FilterError> {
    let newnet = libc::CLONE_NEWNET as u64;
    let has_newnet = ScmpArgCompare::new(0, ScmpCompareOp::MaskedEqual(newnet), newnet);
    for name in ["unshare", "clone"] {
        let nr = ScmpSyscall::from_name(name).expect("x86-64 has unshare and clone");
        step(
            "namespace rule",
            ctx.add_rule_conditional(ScmpAction::Errno(libc::EPERM), nr, &[has_newnet]),
        )?;
    }
    // setns with a pidfd takes a set of namespace types: any set naming CLONE_NEWNET, and 0
    // (whatever the descriptor is), are refused.
    let setns = ScmpSyscall::from_name("setns").expect("x86-64 has setns");
    let any_type = ScmpArgCompare::new(1, LOW_32, 0);
    let net_type = ScmpArgCompare::new(1, ScmpCompareOp::MaskedEqual(newnet), newnet);
    for kind in [any_type, net_type] {
        step(
            "setns rule",
            ctx.add_rule_conditional(ScmpAction::Errno(libc::EPERM), setns, &[kind]),
        )?;
    }
    let clone3 = ScmpSyscall::from_name("clone3").expect("x86-64 has clone3");
    step(
        "clone3 rule",
        ctx.add_rule(ScmpAction::Errno(libc::ENOSYS), clone3),
    )
}

/// Builds the filter for `redirect` and `policy` and returns it as BPF instructions ready for
/// seccomp(2).
pub fn build(
    redirect: Redirect<'_>,
    policy: &Policy,
    hybrid_cookie: Option<u64>,
) -> Result<Vec<BpfInstruction>, FilterError> {
    let mut ctx = step("init", ScmpFilterContext::new_filter(ScmpAction::Allow))?;
    step(
        "bad-arch action",
        ctx.set_act_badarch(ScmpAction::Errno(libc::ENOSYS)),
    )?;
    // The child sets no_new_privs itself right before loading the filter.
    step("nnp", ctx.set_ctl_nnp(false))?;

    match redirect {
        Redirect::Trap(hijack) => trap_sockets(&mut ctx, hijack)?,
        Redirect::Relay(hijack) => {
            trap_sockets(&mut ctx, hijack)?;
            trap_relayed_calls(&mut ctx)?;
        }
        Redirect::Pinned => pin_network_namespace(&mut ctx)?,
    }

    // A second listener would let the program answer its own socket() calls once the
    // supervisor is gone (the newest USER_NOTIF filter wins). While the supervisor lives the
    // kernel refuses it anyway (EBUSY), so refusing it always costs nothing.
    let seccomp = ScmpSyscall::from_name("seccomp").expect("x86-64 has seccomp");
    let new_listener = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
    step(
        "seccomp rule",
        ctx.add_rule_conditional(
            ScmpAction::Errno(libc::EPERM),
            seccomp,
            &[ScmpArgCompare::new(
                1,
                ScmpCompareOp::MaskedEqual(new_listener),
                new_listener,
            )],
        ),
    )?;

    for name in ["io_uring_setup", "io_uring_enter", "io_uring_register"] {
        let nr = ScmpSyscall::from_name(name).expect("x86-64 has io_uring");
        step(
            "io_uring rule",
            ctx.add_rule(ScmpAction::Errno(libc::ENOSYS), nr),
        )?;
    }

    // Conditions every checked-call rule carries: in hybrid mode, "not marked by the library".
    let unmarked: Vec<ScmpArgCompare> = hybrid_cookie
        .map(|cookie| ScmpArgCompare::new(5, ScmpCompareOp::NotEqual, cookie))
        .into_iter()
        .collect();
    let relayed = matches!(redirect, Redirect::Relay(_));
    let mut notify = |name: &str, extra: Option<ScmpArgCompare>| {
        // Already trapped for every descriptor (sendto: whenever it has an address).
        let sendto_with_address =
            name == "sendto" && extra == Some(ScmpArgCompare::new(4, ScmpCompareOp::NotEqual, 0));
        if relayed && (RELAYED_CALLS.contains(&name) || sendto_with_address) {
            return Ok(());
        }
        let nr = ScmpSyscall::from_name(name).expect("x86-64 has the socket calls");
        // sendto uses all six arguments, so it cannot carry the cookie; the library sends
        // addressed datagrams through sendmsg instead.
        let marks = if name == "sendto" {
            &[][..]
        } else {
            &unmarked[..]
        };
        let conditions: Vec<ScmpArgCompare> = marks.iter().copied().chain(extra).collect();
        step(
            "policy rule",
            ctx.add_rule_conditional(ScmpAction::Notify, nr, &conditions),
        )
    };
    for (op, calls) in [
        (Operation::Connect, &["connect"][..]),
        (Operation::Bind, &["bind"]),
        (Operation::Listen, &["listen"]),
        (Operation::Accept, &["accept", "accept4"]),
        (Operation::Send, &["sendmsg", "sendmmsg"]),
    ] {
        if policy.traps(op) {
            for name in calls {
                notify(name, None)?;
            }
        }
    }
    if policy.traps(Operation::Send) {
        notify(
            "sendto",
            Some(ScmpArgCompare::new(4, ScmpCompareOp::NotEqual, 0)),
        )?;
    } else if policy.traps(Operation::Connect) {
        // TCP Fast Open: a send with MSG_FASTOPEN and an address opens a connection, so the
        // connect rules must see it too (the flags are the third argument of sendmsg and the
        // fourth of sendto and sendmmsg).
        let fastopen = libc::MSG_FASTOPEN as u64;
        for (name, flags_arg) in [("sendto", 3), ("sendmsg", 2), ("sendmmsg", 3)] {
            let has_fastopen =
                ScmpArgCompare::new(flags_arg, ScmpCompareOp::MaskedEqual(fastopen), fastopen);
            notify(name, Some(has_fastopen))?;
        }
    }

    export(&ctx)
}

/// Exports the compiled program through a memfd and decodes it into instructions.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<BpfInstruction>, FilterError> {
    let fd = nix::sys::memfd::memfd_create(
        c"rumphijack-bpf",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )
    .map_err(std::io::Error::from)?;
    let mut file = std::fs::File::from(fd);
    step("export", ctx.export_bpf(&mut file))?;
    file.rewind()?;
    let mut raw = Vec::new();
    file.read_to_end(&mut raw)?;

    const INSN: usize = std::mem::size_of::<BpfInstruction>();
    if raw.len() % INSN != 0 || raw.is_empty() {
        return Err(FilterError::Export(std::io::Error::other(format!(
            "{} bytes is not a whole number of instructions",
            raw.len()
        ))));
    }
    // struct sock_filter is { u16 code; u8 jt; u8 jf; u32 k } in native byte order.
    Ok(raw
        .chunks_exact(INSN)
        .map(|c| BpfInstruction {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_selection_builds_a_program() {
        let hijack = HijackSpec::default();
        let prog = build(Redirect::Trap(&hijack), &Policy::allow_all(), None).unwrap();
        assert!(prog.len() > 10, "program has {} instructions", prog.len());
        assert!(prog.len() < u16::MAX as usize);
    }

    #[test]
    fn a_narrow_selection_builds_a_shorter_program() {
        let none = Policy::allow_all();
        let (default, inet) = (
            HijackSpec::default(),
            HijackSpec::parse("socket=inet").unwrap(),
        );
        let all = build(Redirect::Trap(&default), &none, None).unwrap();
        let inet = build(Redirect::Trap(&inet), &none, None).unwrap();
        assert!(inet.len() < all.len());
    }

    /// Whether the kernel's seccomp action cache (Linux 5.11) allows x86-64 call `nr` without
    /// running the filter. Follows `seccomp_is_const_allow` in kernel/seccomp.c: the program
    /// is emulated with only the call number and the architecture known; any other load, or
    /// an instruction the emulator does not model, makes the verdict depend on the call.
    fn cached_allow(program: &[BpfInstruction], nr: u32) -> bool {
        const ARCH_X86_64: u32 = 0xc000_003e;
        let (mut acc, mut pc) = (0u32, 0usize);
        while let Some(insn) = program.get(pc) {
            let k = insn.k;
            match u32::from(insn.code) {
                c if c == libc::BPF_LD | libc::BPF_W | libc::BPF_ABS => match k {
                    0 => acc = nr,
                    4 => acc = ARCH_X86_64,
                    _ => return false,
                },
                c if c == libc::BPF_RET | libc::BPF_K => return k == libc::SECCOMP_RET_ALLOW,
                c if c == libc::BPF_JMP | libc::BPF_JA => pc += k as usize,
                c if c & 0x07 == libc::BPF_JMP && c & 0x08 == libc::BPF_K => {
                    let taken = match c & 0xf0 {
                        op if op == libc::BPF_JEQ => acc == k,
                        op if op == libc::BPF_JGE => acc >= k,
                        op if op == libc::BPF_JGT => acc > k,
                        op if op == libc::BPF_JSET => acc & k != 0,
                        _ => return false,
                    };
                    pc += usize::from(if taken { insn.jt } else { insn.jf });
                }
                c if c == libc::BPF_ALU | libc::BPF_AND | libc::BPF_K => acc &= k,
                _ => return false,
            }
            pc += 1;
        }
        false
    }

    /// A call the filter does not trap must cost no filter run: the kernel answers it from its
    /// action cache, which only works while the verdict for that call number depends on
    /// nothing else. A rule that looked at an argument before dispatching on the number
    /// would silently slow down every system call of the program.
    #[test]
    fn untrapped_calls_are_answered_from_the_kernels_action_cache() {
        let hijack = HijackSpec::default();
        let connect_rule = Policy::parse(
            "default = \"allow\"\n[[rule]]\nop = \"connect\"\naddr = \"loopback\"\n\
             action = \"allow\"\n",
            "test",
        )
        .unwrap();
        for (redirect, policy, cookie) in [
            (Redirect::Trap(&hijack), &Policy::allow_all(), None),
            (Redirect::Trap(&hijack), &connect_rule, Some(0x5eed)),
            (Redirect::Pinned, &Policy::allow_all(), None),
            (Redirect::Relay(&hijack), &Policy::allow_all(), None),
        ] {
            let program = build(redirect, policy, cookie).unwrap();
            let relayed = matches!(redirect, Redirect::Relay(_));
            for nr in [
                libc::SYS_getppid,
                libc::SYS_read,
                libc::SYS_write,
                libc::SYS_close,
                libc::SYS_futex,
                libc::SYS_recvfrom,
                libc::SYS_epoll_wait,
            ] {
                // With relayed sockets, a recvfrom with an address is trapped.
                if relayed && nr == libc::SYS_recvfrom {
                    assert!(!cached_allow(&program, nr as u32));
                    continue;
                }
                assert!(
                    cached_allow(&program, nr as u32),
                    "call {nr} would run the filter ({redirect:?})"
                );
            }
            // Sanity: what the filter decides on its arguments is not cached.
            let checked = match redirect {
                Redirect::Trap(_) => libc::SYS_socket,
                Redirect::Relay(_) => libc::SYS_getsockopt,
                Redirect::Pinned => libc::SYS_unshare,
            };
            assert!(!cached_allow(&program, checked as u32));
        }
    }
}
