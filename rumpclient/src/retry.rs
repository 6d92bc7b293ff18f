//! `RUMPHIJACK_RETRYCONNECT`: what a client does when its server connection is lost.
//!
//! The values are NetBSD's (rumphijack(3)): `inftime` retries forever, `once` tries one
//! reconnect, `die` terminates the program, and a positive integer `N` retries for `N`
//! seconds. Unset means "do not reconnect": calls fail with `ENOTCONN` from then on. Anything
//! else is refused rather than guessed at, so a typo cannot silently change the behaviour.

use std::ffi::OsString;
use std::fmt;
use std::time::Duration;

/// Environment variable holding the policy.
pub const RUMPHIJACK_RETRYCONNECT: &str = "RUMPHIJACK_RETRYCONNECT";

const VALID_FORMS: &str = "`inftime`, `once`, `die` or a positive number of seconds";

/// What to do when the connection to the server is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Do not reconnect (the variable is unset).
    Never,
    /// Try to reconnect once (`once`).
    Once,
    /// Keep trying until the server is back (`inftime`).
    Forever,
    /// Keep trying for this long after the loss was noticed (`N` seconds).
    For(Duration),
    /// Terminate the program (`die`).
    Die,
}

/// Why a `RUMPHIJACK_RETRYCONNECT` value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryError {
    /// The variable is set to the empty string.
    #[error("{RUMPHIJACK_RETRYCONNECT} is set but empty; expected {VALID_FORMS}")]
    Empty,
    /// The value is none of the valid forms.
    #[error("{RUMPHIJACK_RETRYCONNECT}={value:?} is not valid; expected {VALID_FORMS}")]
    Invalid {
        /// The value as given.
        value: String,
    },
    /// `0` seconds, which would mean giving up before trying.
    #[error("{RUMPHIJACK_RETRYCONNECT}={value:?}: the number of seconds must be positive")]
    Zero {
        /// The value as given.
        value: String,
    },
    /// A number of seconds too large to represent.
    #[error("{RUMPHIJACK_RETRYCONNECT}={value:?}: number of seconds is too large; use inftime")]
    Overflow {
        /// The value as given.
        value: String,
    },
    /// The variable is not valid UTF-8.
    #[error("{RUMPHIJACK_RETRYCONNECT}={value:?} is not valid UTF-8; expected {VALID_FORMS}")]
    NotUnicode {
        /// The value, lossily converted.
        value: String,
    },
}

impl RetryPolicy {
    /// Parses a value of `RUMPHIJACK_RETRYCONNECT`. `Never` has no spelling: it is what an
    /// unset variable means.
    pub fn parse(s: &str) -> Result<Self, RetryError> {
        match s {
            "" => Err(RetryError::Empty),
            "inftime" => Ok(RetryPolicy::Forever),
            "once" => Ok(RetryPolicy::Once),
            "die" => Ok(RetryPolicy::Die),
            // Only plain digits: `u64::from_str` would also take a leading `+`.
            digits if digits.bytes().all(|b| b.is_ascii_digit()) => match digits.parse::<u64>() {
                Ok(0) => Err(RetryError::Zero { value: s.into() }),
                Ok(secs) => Ok(RetryPolicy::For(Duration::from_secs(secs))),
                Err(_) => Err(RetryError::Overflow { value: s.into() }),
            },
            _ => Err(RetryError::Invalid { value: s.into() }),
        }
    }

    /// Reads `RUMPHIJACK_RETRYCONNECT`; unset means [`RetryPolicy::Never`].
    pub fn from_env() -> Result<Self, RetryError> {
        Self::from_env_value(std::env::var_os(RUMPHIJACK_RETRYCONNECT))
    }

    fn from_env_value(raw: Option<OsString>) -> Result<Self, RetryError> {
        match raw {
            None => Ok(RetryPolicy::Never),
            Some(raw) => match raw.into_string() {
                Ok(value) => Self::parse(&value),
                Err(raw) => Err(RetryError::NotUnicode {
                    value: raw.to_string_lossy().into_owned(),
                }),
            },
        }
    }
}

/// The policy as it would be written in the environment (`unset` for [`RetryPolicy::Never`]),
/// so notices can say which setting made the decision.
impl fmt::Display for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryPolicy::Never => f.write_str("unset"),
            RetryPolicy::Once => f.write_str("once"),
            RetryPolicy::Forever => f.write_str("inftime"),
            RetryPolicy::Die => f.write_str("die"),
            RetryPolicy::For(d) => write!(f, "{}", d.as_secs()),
        }
    }
}

/// Delays between reconnect attempts: 100 ms times the attempt number, at most one second.
///
/// The linear ramp finds a quickly restarted server within a few hundred milliseconds, and
/// the cap keeps a long outage from costing more than one `connect` a second.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    attempts: u32,
}

impl Backoff {
    /// Step between successive delays.
    pub const STEP: Duration = Duration::from_millis(100);
    /// Longest delay.
    pub const MAX: Duration = Duration::from_secs(1);

    /// A backoff whose next delay is the first one.
    pub fn new() -> Self {
        Self::default()
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        self.attempts = self.attempts.saturating_add(1);
        Self::STEP.saturating_mul(self.attempts).min(Self::MAX)
    }

    /// Starts again from the first delay (after a successful connection).
    pub fn reset(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_forms() {
        assert_eq!(RetryPolicy::parse("inftime"), Ok(RetryPolicy::Forever));
        assert_eq!(RetryPolicy::parse("once"), Ok(RetryPolicy::Once));
        assert_eq!(RetryPolicy::parse("die"), Ok(RetryPolicy::Die));
    }

    #[test]
    fn seconds() {
        assert_eq!(
            RetryPolicy::parse("30"),
            Ok(RetryPolicy::For(Duration::from_secs(30)))
        );
        assert_eq!(
            RetryPolicy::parse("1"),
            Ok(RetryPolicy::For(Duration::from_secs(1)))
        );
    }

    #[test]
    fn zero_seconds_is_refused() {
        assert!(matches!(
            RetryPolicy::parse("0"),
            Err(RetryError::Zero { .. })
        ));
        assert!(matches!(
            RetryPolicy::parse("000"),
            Err(RetryError::Zero { .. })
        ));
    }

    #[test]
    fn overflow_is_refused() {
        assert!(matches!(
            RetryPolicy::parse("99999999999999999999999"),
            Err(RetryError::Overflow { .. })
        ));
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "-5", "+5", " 5", "5 ", "5s", "1.5", "INFTIME", "inf", "never", " once",
        ] {
            let err = RetryPolicy::parse(bad).unwrap_err();
            assert!(
                matches!(err, RetryError::Invalid { .. }),
                "{bad:?}: {err:?}"
            );
            let text = err.to_string();
            assert!(text.contains(&format!("{bad:?}")), "{text}");
            assert!(text.contains("inftime") && text.contains("once"), "{text}");
        }
    }

    #[test]
    fn empty_is_refused() {
        assert_eq!(RetryPolicy::parse(""), Err(RetryError::Empty));
        assert_eq!(
            RetryPolicy::from_env_value(Some("".into())),
            Err(RetryError::Empty)
        );
    }

    #[test]
    fn unset_means_never() {
        assert_eq!(RetryPolicy::from_env_value(None), Ok(RetryPolicy::Never));
        assert_eq!(
            RetryPolicy::from_env_value(Some("once".into())),
            Ok(RetryPolicy::Once)
        );
    }

    #[test]
    fn display_uses_the_environment_spelling() {
        for s in ["inftime", "once", "die", "12"] {
            assert_eq!(RetryPolicy::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(RetryPolicy::Never.to_string(), "unset");
    }

    #[test]
    fn backoff_ramps_up_then_caps_and_resets() {
        let mut b = Backoff::new();
        let delays: Vec<u64> = (0..12).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(
            delays,
            [100, 200, 300, 400, 500, 600, 700, 800, 900, 1000, 1000, 1000]
        );
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
