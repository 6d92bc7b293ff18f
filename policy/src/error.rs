//! Why a policy could not be loaded.

use std::fmt;

/// A policy file that could not be read or is invalid, with the position of the offending
/// key or value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file's path, or the origin given to [`crate::Policy::parse`].
    pub origin: String,
    /// Line of the offending key or value, from 1; 0 when the file could not be read.
    pub line: usize,
    /// Column (in characters) of the same, from 1; 0 when the file could not be read.
    pub column: usize,
    /// What is wrong and what was expected.
    pub message: String,
    pub(crate) unreadable: bool,
}

impl PolicyError {
    /// An error at a position in the text.
    pub(crate) fn at(origin: &str, line: usize, column: usize, message: String) -> Self {
        PolicyError {
            origin: origin.to_owned(),
            line,
            column,
            message,
            unreadable: false,
        }
    }

    /// The file could not be read: it may be valid, but nobody can tell.
    pub(crate) fn unreadable(origin: &str, err: &std::io::Error) -> Self {
        PolicyError {
            origin: origin.to_owned(),
            line: 0,
            column: 0,
            message: format!("cannot read the policy: {err}"),
            unreadable: true,
        }
    }

    /// True when the file could not be read, as opposed to being invalid.
    pub fn is_unreadable(&self) -> bool {
        self.unreadable
    }
}

/// `origin:line:column: message`, or `origin: message` when there is no position.
impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.origin, self.line, self.column, self.message
            )
        }
    }
}

impl std::error::Error for PolicyError {}
