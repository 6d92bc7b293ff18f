//! The library's settings, read once from the environment at the program's first socket
//! call (never at load time, so a program that makes none is not affected by them).

use std::path::Path;
use std::sync::OnceLock;

use policy::{HijackSpec, Policy};
use rumpclient::{RetryPolicy, ServerUrl};

use crate::sys::Route;

/// Environment variable holding the hybrid-mode cookie, set by `rumphijack run --preload`.
pub const RUMPHIJACK_HYBRID_COOKIE: &str = "RUMPHIJACK_HYBRID_COOKIE";

/// Environment variable naming a policy file.
pub const RUMPHIJACK_POLICY: &str = "RUMPHIJACK_POLICY";

/// Environment variable that, set to anything non-empty, makes the library explain itself on
/// stderr.
pub const RUMPHIJACK_DEBUG: &str = "RUMPHIJACK_DEBUG";

/// Exit status when the configuration is invalid (`EX_CONFIG`, as `rumphijack run`).
pub const EXIT_CONFIG: i32 = 78;

/// Everything the environment says.
#[derive(Debug)]
pub struct Config {
    /// `RUMP_SERVER`; `None` when unset: no socket is redirected.
    pub server: Option<ServerUrl>,
    /// Which families are redirected: `RUMPHIJACK`, else the policy's `hijack`, else the
    /// default.
    pub hijack: HijackSpec,
    /// `RUMPHIJACK_RETRYCONNECT`.
    pub retry: RetryPolicy,
    /// `RUMPHIJACK_POLICY`, loaded.
    pub policy: Option<Policy>,
    /// How the program's operations reach the kernel: with the cookie in hybrid mode.
    pub route: Route,
    /// `RUMPHIJACK_DEBUG`.
    pub debug: bool,
}

impl Config {
    /// True when `socket(domain, …)` is created in the server's stack.
    pub fn redirects(&self, domain: i32) -> bool {
        self.server.is_some() && self.hijack.redirects(domain)
    }

    fn from_env() -> Result<Config, String> {
        let route = match std::env::var_os(RUMPHIJACK_HYBRID_COOKIE) {
            None => Route::Libc,
            Some(raw) => Route::Cookie(parse_cookie(&raw.to_string_lossy())?),
        };
        let server = ServerUrl::from_env().map_err(|e| e.to_string())?;
        let retry = RetryPolicy::from_env().map_err(|e| e.to_string())?;
        let policy = match std::env::var_os(RUMPHIJACK_POLICY) {
            None => None,
            Some(path) if path.is_empty() => {
                return Err(format!("{RUMPHIJACK_POLICY} is set but empty"))
            }
            Some(path) => Some(Policy::load(Path::new(&path)).map_err(|e| e.to_string())?),
        };
        let hijack = if std::env::var_os(policy::hijack::RUMPHIJACK).is_some() {
            HijackSpec::from_env().map_err(|e| e.to_string())?
        } else {
            policy.as_ref().and_then(Policy::hijack).unwrap_or_default()
        };
        let debug = std::env::var_os(RUMPHIJACK_DEBUG).is_some_and(|v| !v.is_empty());
        Ok(Config {
            server,
            hijack,
            retry,
            policy,
            route,
            debug,
        })
    }
}

/// `0x` and 1 to 16 hex digits; the `0x` may be left out.
fn parse_cookie(raw: &str) -> Result<u64, String> {
    let digits = raw
        .strip_prefix("0x")
        .or_else(|| raw.strip_prefix("0X"))
        .unwrap_or(raw);
    let valid = !digits.is_empty() && digits.len() <= 16;
    match u64::from_str_radix(digits, 16) {
        Ok(cookie) if valid && digits.bytes().all(|b| b.is_ascii_hexdigit()) => Ok(cookie),
        _ => Err(format!(
            "{RUMPHIJACK_HYBRID_COOKIE}={raw:?} is not a 64-bit hexadecimal number"
        )),
    }
}

/// The configuration. On the first call it is read from the environment; if that fails, the
/// program ends here with `librumphijack: <error>` on stderr and status [`EXIT_CONFIG`].
///
/// Ending the program is deliberate: running it with some of what the user asked for
/// silently dropped (no redirection, or no policy) would be worse than not running it, and
/// returning an errno from every socket call would hide the reason in each program's own
/// error messages.
pub fn get() -> &'static Config {
    static CONFIG: OnceLock<Result<Config, String>> = OnceLock::new();
    match CONFIG.get_or_init(Config::from_env) {
        Ok(config) => config,
        Err(error) => {
            crate::sys::write_stderr(&format!("librumphijack: {error}\n"));
            crate::sys::exit_now(EXIT_CONFIG)
        }
    }
}

/// Prints `librumphijack: <line>` when `RUMPHIJACK_DEBUG` is set.
pub fn debug(config: &Config, line: impl FnOnce() -> String) {
    if config.debug {
        crate::sys::write_stderr(&format!("librumphijack: {}\n", line()));
    }
}

#[cfg(test)]
mod tests {
    use super::parse_cookie;

    #[test]
    fn cookies_are_hex_with_or_without_prefix() {
        assert_eq!(
            parse_cookie("0x1234abcd5678ef90"),
            Ok(0x1234_abcd_5678_ef90)
        );
        assert_eq!(parse_cookie("ffffffffffffffff"), Ok(u64::MAX));
        assert_eq!(parse_cookie("0X1"), Ok(1));
    }

    #[test]
    fn malformed_cookies_are_refused() {
        for bad in [
            "",
            "0x",
            "0x+1",
            "+1",
            "0x1ffffffffffffffff",
            "xyz",
            " 1",
            "0x-1",
        ] {
            assert!(parse_cookie(bad).is_err(), "{bad:?}");
        }
    }
}
