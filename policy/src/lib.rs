//! What rumphijack redirects and what it allows.
//!
//! * [`hijack`]: the `RUMPHIJACK` variable, NetBSD syntax: which socket families are created
//!   in the stack server's stack.
//!
//! This crate makes decisions only; it performs no system calls and contains no unsafe code.

#![forbid(unsafe_code)]

pub mod hijack;

pub use hijack::{HijackError, HijackSpec};
