//! What rumphijack redirects and what it allows.
//!
//! * [`hijack`]: the `RUMPHIJACK` variable, NetBSD syntax: which socket families are created
//!   in the stack server's stack.
//! * [`Policy`]: a TOML file of ordered rules deciding which `connect`, `bind`, `listen`,
//!   `accept` and `send` operations a supervised program may perform. The format is
//!   described in `docs/policy.md`.
//!
//! A policy file is parsed in two stages: `raw` reads the TOML structure, keeping each
//! value's position, and `validate` checks the values and builds the [`Policy`]; every
//! error names the file, line and column of what is wrong.
//!
//! This crate makes decisions only; it performs no system calls and contains no unsafe code.

#![forbid(unsafe_code)]

mod cidr;
mod error;
mod explain;
pub mod hijack;
mod model;
mod policy;
mod raw;
mod rule;
mod validate;

pub use cidr::{Cidr, NamedSet};
pub use error::PolicyError;
pub use explain::{explain, parse_query};
pub use hijack::{HijackError, HijackSpec};
pub use model::{errno_name, Action, Operation, Protocol, Query, DEFAULT_DENY_ERRNO, DENY_ERRNOS};
pub use policy::{Decision, DefaultRule, Policy};
pub use rule::{AddrItem, FamilyMatch, PortRange, ProtocolMatch, Rule};
