//! Hybrid mode (`rumphijack run --preload`): the preload library handles the program's
//! socket calls in-process, and the seccomp filter stays as the backstop for everything that
//! does not go through it (static binaries, raw system calls, a program that unsets
//! `LD_PRELOAD` for its children).
//!
//! The library reaches the stack server over its own connection, and marks the checked calls
//! it has already decided with a per-run cookie in their sixth argument, which the filter
//! lets through (see [`crate::filter`]). The cookie is in the program's environment, so
//! anything in the program can use it: hybrid mode is for speed, not a security boundary.
//! The supervisor-only mode stays the default.

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};

/// File name of the preload library.
pub const LIBRARY: &str = "librumphijack.so";

/// Environment variable carrying the cookie to the library.
pub const COOKIE_VAR: &str = "RUMPHIJACK_HYBRID_COOKIE";

/// Finds the library: `explicit` if given, else next to this executable, else in
/// `../lib` relative to it (an installed layout).
pub fn find_library(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = explicit {
        return std::fs::canonicalize(path)
            .with_context(|| format!("preload library {}", path.display()));
    }
    let exe = std::env::current_exe().context("locating the rumphijack executable")?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let candidates = [dir.join(LIBRARY), dir.join("../lib").join(LIBRARY)];
    candidates
        .iter()
        .find(|p| p.is_file())
        .and_then(|p| std::fs::canonicalize(p).ok())
        .ok_or_else(|| {
            anyhow!(
                "cannot find {LIBRARY} next to {} or in ../lib (build it with `cargo build`, \
                 or pass --library PATH)",
                exe.display()
            )
        })
}

/// A random cookie for this run (getrandom(2)).
pub fn random_cookie() -> anyhow::Result<u64> {
    let mut bytes = [0u8; 8];
    // SAFETY: `bytes` is valid for writes of its length.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return Err(std::io::Error::last_os_error()).context("getrandom for the hybrid cookie");
    }
    // Zero would match every call that leaves the sixth argument empty.
    Ok(u64::from_ne_bytes(bytes) | 1)
}

/// A private directory (mode 0700) for the embedded server's socket file.
pub fn private_dir() -> anyhow::Result<PathBuf> {
    let template = std::env::temp_dir().join("rumphijack-XXXXXX");
    let mut raw = CString::new(template.into_os_string().into_vec())
        .context("temporary directory name")?
        .into_bytes_with_nul();
    // SAFETY: `raw` is a writable NUL-terminated template ending in six X, as mkdtemp wants.
    let made = unsafe { libc::mkdtemp(raw.as_mut_ptr().cast()) };
    if made.is_null() {
        return Err(std::io::Error::last_os_error()).context("mkdtemp for the embedded server");
    }
    raw.pop();
    Ok(PathBuf::from(OsString::from_vec(raw)))
}

/// The program's environment: ours, with the library prepended to `LD_PRELOAD` and the
/// variables it reads set for this run.
pub fn program_env(
    library: &Path,
    server_url: &str,
    cookie: u64,
    policy: Option<&Path>,
) -> anyhow::Result<Vec<CString>> {
    let mut set: Vec<(OsString, OsString)> = vec![
        ("RUMP_SERVER".into(), server_url.into()),
        (COOKIE_VAR.into(), format!("{cookie:#018x}").into()),
    ];
    let preload = match std::env::var_os("LD_PRELOAD") {
        Some(old) if !old.is_empty() => {
            let mut v = library.as_os_str().to_owned();
            v.push(":");
            v.push(old);
            v
        }
        _ => library.as_os_str().to_owned(),
    };
    set.push(("LD_PRELOAD".into(), preload));
    if let Some(policy) = policy {
        let abs = std::fs::canonicalize(policy)
            .with_context(|| format!("policy file {}", policy.display()))?;
        set.push(("RUMPHIJACK_POLICY".into(), abs.into_os_string()));
    }

    let names: Vec<OsString> = set.iter().map(|(k, _)| k.clone()).collect();
    std::env::vars_os()
        .filter(|(k, _)| !names.contains(k))
        .chain(set)
        .map(|(k, v)| entry(&k, &v))
        .collect()
}

fn entry(key: &OsStr, value: &OsStr) -> anyhow::Result<CString> {
    let mut bytes = key.as_bytes().to_vec();
    bytes.push(b'=');
    bytes.extend_from_slice(value.as_bytes());
    CString::new(bytes).map_err(|_| anyhow!("environment variable {key:?} contains a NUL byte"))
}
