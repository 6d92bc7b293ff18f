//! Remote stacks: `RUMP_SERVER=tcp://ADDR:PORT`.
//!
//! A TCP connection cannot carry descriptors, so a program whose stack is on another machine
//! gets a local stand-in for each socket, and the data travels. The pieces:
//!
//! * [`frame`]: the frames both sides exchange;
//! * [`auth`]: TLS 1.3 and mutual proof of a shared secret, bound to the TLS session;
//! * [`server`]: `rump_server`'s side, which owns the real sockets;
//! * [`client`]: the supervisor's side, which owns the program's stand-ins;
//! * [`window`]: per-socket send windows, so one stalled socket holds up no other;
//! * [`udp`]: what the kernel refuses a UDP send for, checked before a datagram is relayed.

pub mod auth;
pub mod client;
pub mod frame;
pub mod server;
pub mod sys;
pub mod udp;
pub mod window;

pub use auth::Secret;
pub use client::{OpenError, Relay, Relayed};
