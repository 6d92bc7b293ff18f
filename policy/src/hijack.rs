//! The `RUMPHIJACK` variable: which socket families go to the stack server.
//!
//! The syntax is NetBSD's (rumphijack(3)): comma-separated `key=value` pairs. The one key
//! that means something here is `socket`, whose value is a colon-separated list applied left
//! to right, starting from the empty set:
//!
//! | item | effect |
//! |---|---|
//! | `all` | every family |
//! | `none`, `no` | no family |
//! | `inet`, `local`, … | adds that family |
//! | `noinet`, `nolocal`, … | removes that family |
//!
//! Unset, the variable means `socket=all:nolocal`: every family except `AF_UNIX`, whose
//! sockets name files and peers on this host and so must stay in the host's kernel.
//!
//! `all` means every family number from 0 to 45 (`AF_MAX` − 1 on Linux 6.x, where `AF_MAX`
//! is 46), named here or not.
//!
//! NetBSD's other keys (`path`, `blanket`, `vfs`, `sysctl`, `modctl`, `fdoff`) configure
//! redirections this project does not make; they are refused with the reason, rather than
//! ignored, so that a setting carried over from NetBSD cannot silently mean less than it says.
//!
//! # Limitations
//!
//! A family a newer kernel adds beyond number 45 is not covered by `all` and cannot be named:
//! its sockets are created in the host's stack, not the server's.

use std::ffi::OsString;
use std::fmt;
use std::str::FromStr;

/// Environment variable holding the specification.
pub const RUMPHIJACK: &str = "RUMPHIJACK";

/// The value the variable has when unset.
pub const DEFAULT: &str = "socket=all:nolocal";

/// Number of address families on Linux 6.x (`AF_MAX` in `<linux/socket.h>`); not exported by
/// the `libc` crate for glibc targets.
pub const AF_MAX: i32 = 46;

// Families from `<linux/socket.h>` that the `libc` crate does not export for glibc targets.
const AF_QIPCRTR: i32 = 42;
const AF_SMC: i32 = 43;
const AF_MCTP: i32 = 45;

/// Family names, by number; the first name of a number is its canonical one, the others are
/// aliases (NetBSD's `route` for netlink and `link` for packet, Linux's `unix` for local).
const FAMILIES: &[(&str, i32)] = &[
    ("local", libc::AF_UNIX),
    ("unix", libc::AF_UNIX),
    ("inet", libc::AF_INET),
    ("ax25", libc::AF_AX25),
    ("appletalk", libc::AF_APPLETALK),
    ("x25", libc::AF_X25),
    ("inet6", libc::AF_INET6),
    ("key", libc::AF_KEY),
    ("netlink", libc::AF_NETLINK),
    ("route", libc::AF_NETLINK),
    ("packet", libc::AF_PACKET),
    ("link", libc::AF_PACKET),
    ("rds", libc::AF_RDS),
    ("llc", libc::AF_LLC),
    ("ib", libc::AF_IB),
    ("mpls", libc::AF_MPLS),
    ("can", libc::AF_CAN),
    ("tipc", libc::AF_TIPC),
    ("bluetooth", libc::AF_BLUETOOTH),
    ("alg", libc::AF_ALG),
    ("vsock", libc::AF_VSOCK),
    ("qipcrtr", AF_QIPCRTR),
    ("smc", AF_SMC),
    ("xdp", libc::AF_XDP),
    ("mctp", AF_MCTP),
];

/// Every family number 0..AF_MAX.
const ALL: u64 = (1 << AF_MAX) - 1;

/// Why a `RUMPHIJACK` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HijackError {
    /// The value is the empty string.
    #[error("{RUMPHIJACK} is empty; expected key=value pairs such as {DEFAULT:?}")]
    Empty,
    /// Two commas in a row, or a comma at either end.
    #[error("{RUMPHIJACK}={input:?} has an empty entry between commas")]
    EmptyEntry {
        /// The whole value.
        input: String,
    },
    /// An entry without `=`.
    #[error("{RUMPHIJACK} entry {entry:?} is not key=value")]
    MissingEquals {
        /// The entry.
        entry: String,
    },
    /// An entry with nothing before `=`.
    #[error("{RUMPHIJACK} entry {entry:?} has no key")]
    EmptyKey {
        /// The entry.
        entry: String,
    },
    /// A key with nothing after `=`.
    #[error("{RUMPHIJACK} key {key:?} has an empty value")]
    EmptyValue {
        /// The key.
        key: String,
    },
    /// A key given twice.
    #[error("{RUMPHIJACK} key {key:?} is given more than once")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// A NetBSD key that has no meaning for this project.
    #[error("{RUMPHIJACK} key {key:?} is a NetBSD rumphijack key with no meaning here: {reason}")]
    NetbsdOnlyKey {
        /// The key.
        key: String,
        /// Why it has no meaning.
        reason: &'static str,
    },
    /// Any other unknown key.
    #[error("{RUMPHIJACK} key {key:?} is unknown; the only supported key is \"socket\"")]
    UnknownKey {
        /// The key.
        key: String,
    },
    /// Two colons in a row, or a colon at either end, in the `socket` value.
    #[error("{RUMPHIJACK} socket list {value:?} has an empty item")]
    EmptyItem {
        /// The `socket` value.
        value: String,
    },
    /// An item that is not `all`, `none`, a family name or `no` and a family name.
    #[error(
        "{RUMPHIJACK} socket item {item:?} names no family; valid items are all, none, \
         a family or no<family>, with families: {}",
        family_names()
    )]
    UnknownFamily {
        /// The item.
        item: String,
    },
    /// The variable is not valid UTF-8.
    #[error("{RUMPHIJACK}={value:?} is not valid UTF-8")]
    NotUnicode {
        /// The value, lossily converted.
        value: String,
    },
}

/// NetBSD keys this project refuses, with the reason.
const NETBSD_ONLY_KEYS: &[(&str, &str)] = &[
    ("path", "file-system paths are never redirected"),
    ("blanket", "file-system paths are never redirected"),
    ("vfs", "file-system calls are never redirected"),
    (
        "sysctl",
        "sysctl is not redirected; configure the stack in the server's network namespace",
    ),
    ("modctl", "kernel module calls are never redirected"),
    (
        "fdoff",
        "redirected sockets are real kernel descriptors, so there is no descriptor offset",
    ),
];

fn family_names() -> String {
    let names: Vec<&str> = FAMILIES.iter().map(|(name, _)| *name).collect();
    names.join(", ")
}

fn family_by_name(name: &str) -> Option<i32> {
    FAMILIES.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

fn bit(family: i32) -> u64 {
    1 << family
}

/// Which socket families are redirected to the stack server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HijackSpec {
    /// Bit `f` set: family `f` is redirected. Only bits 0..AF_MAX are ever set.
    families: u64,
}

impl HijackSpec {
    /// Parses a `RUMPHIJACK` value.
    pub fn parse(s: &str) -> Result<Self, HijackError> {
        if s.is_empty() {
            return Err(HijackError::Empty);
        }
        let mut socket = None;
        for entry in s.split(',') {
            if entry.is_empty() {
                return Err(HijackError::EmptyEntry { input: s.into() });
            }
            let Some((key, value)) = entry.split_once('=') else {
                return Err(HijackError::MissingEquals {
                    entry: entry.into(),
                });
            };
            if key.is_empty() {
                return Err(HijackError::EmptyKey {
                    entry: entry.into(),
                });
            }
            if let Some((_, reason)) = NETBSD_ONLY_KEYS.iter().find(|(k, _)| *k == key) {
                return Err(HijackError::NetbsdOnlyKey {
                    key: key.into(),
                    reason,
                });
            }
            if key != "socket" {
                return Err(HijackError::UnknownKey { key: key.into() });
            }
            if socket.is_some() {
                return Err(HijackError::DuplicateKey { key: key.into() });
            }
            if value.is_empty() {
                return Err(HijackError::EmptyValue { key: key.into() });
            }
            socket = Some(parse_socket_list(value)?);
        }
        // Every entry that gets this far is `socket=…`, and there is at least one entry.
        Ok(HijackSpec {
            families: socket.unwrap_or(0),
        })
    }

    /// Reads `RUMPHIJACK`; unset means the default, `socket=all:nolocal`.
    pub fn from_env() -> Result<Self, HijackError> {
        Self::from_env_value(std::env::var_os(RUMPHIJACK))
    }

    fn from_env_value(raw: Option<OsString>) -> Result<Self, HijackError> {
        match raw {
            None => Ok(HijackSpec::default()),
            Some(raw) => match raw.into_string() {
                Ok(value) => Self::parse(&value),
                Err(raw) => Err(HijackError::NotUnicode {
                    value: raw.to_string_lossy().into_owned(),
                }),
            },
        }
    }

    /// True when sockets of `family` (the `domain` argument of socket(2)) are redirected.
    pub fn redirects(&self, family: i32) -> bool {
        (0..AF_MAX).contains(&family) && self.families & bit(family) != 0
    }

    /// Every redirected family number, in increasing order.
    pub fn families(&self) -> impl Iterator<Item = i32> + '_ {
        (0..=AF_MAX).filter(|&f| self.redirects(f))
    }
}

/// Applies the items of a `socket=` value to the empty set.
fn parse_socket_list(value: &str) -> Result<u64, HijackError> {
    let mut set = 0u64;
    for item in value.split(':') {
        match item {
            "" => {
                return Err(HijackError::EmptyItem {
                    value: value.into(),
                })
            }
            "all" => set = ALL,
            "none" | "no" => set = 0,
            _ => {
                if let Some(family) = family_by_name(item) {
                    set |= bit(family);
                } else if let Some(family) = item.strip_prefix("no").and_then(family_by_name) {
                    set &= !bit(family);
                } else {
                    return Err(HijackError::UnknownFamily { item: item.into() });
                }
            }
        }
    }
    Ok(set)
}

impl Default for HijackSpec {
    /// `socket=all:nolocal`: everything but `AF_UNIX`.
    fn default() -> Self {
        HijackSpec {
            families: ALL & !bit(libc::AF_UNIX),
        }
    }
}

impl FromStr for HijackSpec {
    type Err = HijackError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The canonical form: `socket=none`, `socket=all` followed by the removed named families,
/// or `socket=` and the added named families; families in increasing number, by their
/// canonical names. Parsing it gives the same set.
impl fmt::Display for HijackSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Canonical names only: the first name listed for each number.
        let named = FAMILIES
            .iter()
            .enumerate()
            .filter(|(i, (_, fam))| FAMILIES[..*i].iter().all(|(_, g)| g != fam))
            .map(|(_, entry)| *entry);
        let named_bits = FAMILIES.iter().fold(0, |acc, (_, fam)| acc | bit(*fam));
        let unnamed = ALL & !named_bits;

        if self.families == 0 {
            return f.write_str("socket=none");
        }
        // Unnamed families can only be switched on and off together, by `all` and `none`.
        if self.families & unnamed == unnamed {
            f.write_str("socket=all")?;
            for (name, _) in named.filter(|(_, fam)| !self.redirects(*fam)) {
                write!(f, ":no{name}")?;
            }
            return Ok(());
        }
        f.write_str("socket=")?;
        for (i, (name, _)) in named.filter(|(_, fam)| self.redirects(*fam)).enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
