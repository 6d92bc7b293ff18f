//! `librumphijack.so`: run a dynamically linked program with its sockets in a stack server's
//! TCP/IP stack, by `LD_PRELOAD`, as NetBSD's librumphijack(3) does.
//!
//! ```sh
//! RUMP_SERVER=unix:///tmp/stack LD_PRELOAD=/path/to/librumphijack.so curl http://10.0.0.1/
//! ```
//!
//! The library replaces libc's `socket`, `connect`, `bind`, `listen`, `accept`, `accept4`,
//! `send`, `sendto`, `sendmsg` and `sendmmsg` ([`interpose`]).
//!
//! * `socket()` in a redirected family asks the server for the socket over the library's own
//!   Unix-domain connection ([`session`]); the descriptor the program gets is the received
//!   one, a real kernel socket of the server's stack, so every later call on it is native.
//!   TCP and UDP sockets over IPv4 and IPv6 come from a small pool the server filled ahead
//!   of time, in batches, so most cost no round trip ([`pool`]). Other families go to libc's
//!   `socket`.
//! * With a policy, `connect`, `bind`, `listen`, `accept`/`accept4` and sends that carry an
//!   address are decided in the process ([`check`]); a denied call returns -1 with the rule's
//!   errno. Without one they go straight to libc.
//!
//! # Environment
//!
//! Read once, at the program's first call to one of the functions above ([`config`]):
//!
//! | variable | meaning |
//! |---|---|
//! | `RUMP_SERVER` | the server; unset: nothing is redirected (a policy still applies) |
//! | `RUMPHIJACK` | families to redirect; unset: the policy's `hijack`, else `socket=all:nolocal` |
//! | `RUMPHIJACK_RETRYCONNECT` | (re)connecting: unset, `once`, `N`, `inftime`, `die` |
//! | `RUMPHIJACK_POLICY` | a policy file (docs/policy.md) |
//! | `RUMPHIJACK_HYBRID_COOKIE` | set by `rumphijack run --preload`: see hybrid mode below |
//! | `RUMPHIJACK_DEBUG` | non-empty: explain decisions on stderr |
//!
//! An invalid value of any of them (or an unreadable or invalid policy) ends the program at
//! that first call, with `librumphijack: <error>` on stderr and exit status 78 (`EX_CONFIG`,
//! as `rumphijack run`). A program that never calls them is never affected.
//!
//! # Hybrid mode
//!
//! Under `rumphijack run --preload` the supervisor's seccomp filter traps the socket system
//! calls of everything that bypasses libc (static binaries, raw `syscall`), and lets through
//! those whose sixth argument register holds the cookie from `RUMPHIJACK_HYBRID_COOKIE`. The
//! library issues the program's calls that way ([`sys::Route::Cookie`]), so they cost no
//! notification round trip. The library's own connection to the server is a Unix socket
//! whose `socket()` is not trapped.
//!
//! # Not a security boundary
//!
//! Alone or in hybrid mode, the library runs inside the program and the program can go
//! around it: call the kernel directly, unset `LD_PRELOAD` for its children, or — in hybrid
//! mode — read the cookie from its own environment and use it. The policy here keeps honest
//! programs on their rails; to confine one, use `rumphijack run` without `--preload`.
//!
//! # Limitations
//!
//! * Only calls through the dynamic libc symbols are seen: static binaries, raw system calls
//!   and calls libc makes internally (its DNS resolver among them) go around the
//!   library. Name resolution through `nscd`/`systemd-resolved` uses `AF_UNIX`
//!   and is unaffected; a resolver that queries DNS servers directly does so from the host's
//!   stack.
//! * A bad pointer in a checked call crashes the program in the library instead of failing
//!   with `EFAULT`.
//! * `connect` and `accept` on the cookie route are raw system calls and not pthread
//!   cancellation points.
//! * `socketpair()` and `io_uring` are not handled.

mod check;
mod config;
mod interpose;
mod pool;
mod session;
mod sys;
