//! `RUMP_SERVER` URLs: where the stack server listens.
//!
//! The forms follow NetBSD's rumpclient(3):
//!
//! * `unix:///absolute/path`: a Unix-domain socket at an absolute path;
//! * `unix://relative/path`: relative to the current directory *when the URL is parsed*, so a
//!   later `chdir` in the program does not move the server;
//! * `tcp://ADDR:PORT`: a remote stack, with an IPv4 literal or a bracketed IPv6 literal
//!   (`tcp://[fd00::2]:7000`) and an optional trailing `/`. A TCP connection cannot carry
//!   descriptors (`SCM_RIGHTS` exists only for Unix-domain sockets, unix(7)), so such a
//!   server is reached only through the supervisor, which relays the data ([`StackUrl`]);
//!   [`ServerUrl`], the form the preload library and `rump_server`'s Unix listener take,
//!   refuses it.
//!
//! The path must fit `sockaddr_un.sun_path` (108 bytes on Linux, one of them the NUL), as
//! connect(2) would otherwise fail with `EINVAL` long after start-up.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Environment variable holding the server URL.
pub const RUMP_SERVER: &str = "RUMP_SERVER";

/// Longest socket path, in bytes, that fits `sun_path` with its terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;

const UNIX_SCHEME: &str = "unix";
const TCP_SCHEME: &str = "tcp";

/// A parsed server URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerUrl {
    /// A Unix-domain stream socket; the path is always absolute.
    Unix(PathBuf),
}

/// Why a server URL was refused.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// The URL is the empty string.
    #[error("empty server URL; expected unix:///absolute/path or unix://relative/path")]
    Empty,
    /// There is no `scheme://` part.
    #[error("server URL {url:?} has no scheme; expected unix:///absolute/path")]
    NoScheme {
        /// The URL as given.
        url: String,
    },
    /// The scheme is neither `unix` nor `tcp`.
    #[error("server URL {url:?} has unknown scheme {scheme:?}; the supported schemes are unix:// and tcp://")]
    UnknownScheme {
        /// The part before `://`.
        scheme: String,
        /// The URL as given.
        url: String,
    },
    /// A `tcp://` URL where only a Unix-domain server will do.
    #[error(
        "server URL {url:?}: a tcp:// server is reached only through the supervisor \
         (rumphijack run), which relays the data; here a unix:// server is needed"
    )]
    TcpUnsupported {
        /// The URL as given.
        url: String,
    },
    /// A `tcp://` URL whose address is not an IP literal with a port.
    #[error(
        "server URL {url:?}: expected tcp://IPV4:PORT or tcp://[IPV6]:PORT \
         (host names are not resolved)"
    )]
    BadTcpAddress {
        /// The URL as given.
        url: String,
    },
    /// `unix://` with nothing after it.
    #[error("server URL {url:?} has an empty socket path")]
    EmptyPath {
        /// The URL as given.
        url: String,
    },
    /// The URL contains a NUL byte, which no path can hold.
    #[error("server URL {url:?} contains a NUL byte")]
    NulByte {
        /// The URL as given.
        url: String,
    },
    /// The (resolved) path does not fit `sockaddr_un.sun_path`.
    #[error(
        "socket path {path:?} of server URL {url:?} is {len} bytes long; \
         at most {MAX_SOCKET_PATH} fit in a Unix socket address"
    )]
    PathTooLong {
        /// The absolute path the URL resolved to.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The URL as given.
        url: String,
    },
    /// A relative path could not be resolved because the current directory is unknown.
    #[error("cannot resolve relative server URL {url:?}: current directory unavailable")]
    CurrentDir {
        /// The URL as given.
        url: String,
        /// What `getcwd` returned.
        source: io::Error,
    },
    /// `RUMP_SERVER` is set to the empty string.
    #[error("{RUMP_SERVER} is set but empty; unset it or give unix:///path")]
    EmptyEnv,
    /// `RUMP_SERVER` is not valid UTF-8.
    #[error("{RUMP_SERVER} is not valid UTF-8: {value:?}")]
    NotUnicode {
        /// The value, lossily converted.
        value: String,
    },
}

impl ServerUrl {
    /// Parses a URL; a relative `unix://` path is resolved against the current directory now.
    pub fn parse(s: &str) -> Result<ServerUrl, UrlError> {
        if s.is_empty() {
            return Err(UrlError::Empty);
        }
        if s.contains('\0') {
            return Err(UrlError::NulByte { url: s.into() });
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Err(UrlError::NoScheme { url: s.into() });
        };
        match scheme {
            UNIX_SCHEME => {}
            TCP_SCHEME => return Err(UrlError::TcpUnsupported { url: s.into() }),
            _ => {
                return Err(UrlError::UnknownScheme {
                    scheme: scheme.into(),
                    url: s.into(),
                })
            }
        }
        if rest.is_empty() {
            return Err(UrlError::EmptyPath { url: s.into() });
        }

        let path = Path::new(rest);
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            let cwd = std::env::current_dir().map_err(|source| UrlError::CurrentDir {
                url: s.into(),
                source,
            })?;
            // Collecting the components drops `.` segments, which only waste sun_path bytes.
            cwd.join(path).components().collect()
        };

        let len = path.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(UrlError::PathTooLong {
                path,
                len,
                url: s.into(),
            });
        }
        Ok(ServerUrl::Unix(path))
    }

    /// Reads `RUMP_SERVER`: `Ok(None)` when it is unset, an error when it is set but empty or
    /// invalid.
    pub fn from_env() -> Result<Option<ServerUrl>, UrlError> {
        Self::from_env_value(std::env::var_os(RUMP_SERVER))
    }

    fn from_env_value(raw: Option<OsString>) -> Result<Option<ServerUrl>, UrlError> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        let value = raw.into_string().map_err(|raw| UrlError::NotUnicode {
            value: raw.to_string_lossy().into_owned(),
        })?;
        if value.is_empty() {
            return Err(UrlError::EmptyEnv);
        }
        ServerUrl::parse(&value).map(Some)
    }

    /// The absolute path of the server's socket.
    pub fn path(&self) -> &Path {
        match self {
            ServerUrl::Unix(path) => path,
        }
    }
}

/// Any server URL: a Unix-domain server, or a remote one over TCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackUrl {
    /// `unix://…`.
    Unix(ServerUrl),
    /// `tcp://ADDR:PORT`.
    Tcp(std::net::SocketAddr),
}

impl StackUrl {
    /// Parses a URL of either scheme.
    pub fn parse(s: &str) -> Result<StackUrl, UrlError> {
        match s.strip_prefix("tcp://") {
            Some(rest) => {
                let bad = || UrlError::BadTcpAddress { url: s.into() };
                let addr = rest.strip_suffix('/').unwrap_or(rest);
                let addr: std::net::SocketAddr = addr.parse().map_err(|_| bad())?;
                if addr.port() == 0 {
                    return Err(bad());
                }
                Ok(StackUrl::Tcp(addr))
            }
            None => ServerUrl::parse(s).map(StackUrl::Unix),
        }
    }

    /// Reads `RUMP_SERVER` as [`ServerUrl::from_env`] does, accepting `tcp://` too.
    pub fn from_env() -> Result<Option<StackUrl>, UrlError> {
        let Some(raw) = std::env::var_os(RUMP_SERVER) else {
            return Ok(None);
        };
        let value = raw.into_string().map_err(|raw| UrlError::NotUnicode {
            value: raw.to_string_lossy().into_owned(),
        })?;
        if value.is_empty() {
            return Err(UrlError::EmptyEnv);
        }
        StackUrl::parse(&value).map(Some)
    }
}

impl fmt::Display for StackUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StackUrl::Unix(url) => url.fmt(f),
            StackUrl::Tcp(addr) => write!(f, "tcp://{addr}"),
        }
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerUrl::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_unix_url() {
        let url = ServerUrl::parse("unix:///tmp/tcpip").unwrap();
        assert_eq!(url.path(), Path::new("/tmp/tcpip"));
        assert_eq!(url.to_string(), "unix:///tmp/tcpip");
    }

    #[test]
    fn relative_unix_url_is_resolved_against_the_current_directory() {
        let cwd = std::env::current_dir().unwrap();
        let url = ServerUrl::parse("unix://sub/sock").unwrap();
        assert_eq!(url.path(), cwd.join("sub/sock"));
        assert!(url.path().is_absolute());
        let dotted = ServerUrl::parse("unix://./sock").unwrap();
        assert_eq!(dotted.path(), cwd.join("sock"));
    }

    #[test]
    fn display_round_trips() {
        let url = ServerUrl::parse("unix:///run/rump/stack.sock").unwrap();
        assert_eq!(ServerUrl::parse(&url.to_string()).unwrap(), url);
    }

    #[test]
    fn tcp_needs_the_supervisor() {
        let err = ServerUrl::parse("tcp://127.0.0.1:1234").unwrap_err();
        assert!(matches!(err, UrlError::TcpUnsupported { .. }));
        let text = err.to_string();
        assert!(text.contains("only through the supervisor"), "{text}");
        assert!(text.contains("\"tcp://127.0.0.1:1234\""), "{text}");
    }

    #[test]
    fn tcp_endpoints_take_ip_literals() {
        for (url, addr) in [
            ("tcp://10.0.0.2:7000", "10.0.0.2:7000"),
            ("tcp://10.0.0.2:7000/", "10.0.0.2:7000"),
            ("tcp://[fd00::2]:7000", "[fd00::2]:7000"),
            ("tcp://[::1]:1/", "[::1]:1"),
        ] {
            let parsed = StackUrl::parse(url).unwrap();
            assert_eq!(parsed, StackUrl::Tcp(addr.parse().unwrap()), "{url}");
            assert_eq!(StackUrl::parse(&parsed.to_string()).unwrap(), parsed);
        }
        for bad in [
            "tcp://",
            "tcp://host.example:80",
            "tcp://10.0.0.2",
            "tcp://10.0.0.2:0",
            "tcp://10.0.0.2:99999",
            "tcp://fd00::2:7000",
            "tcp://10.0.0.2:80/path",
        ] {
            let err = StackUrl::parse(bad).unwrap_err();
            assert!(
                matches!(err, UrlError::BadTcpAddress { .. }),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains(bad), "{err}");
        }
        assert!(matches!(
            StackUrl::parse("unix:///tmp/s").unwrap(),
            StackUrl::Unix(_)
        ));
        assert!(StackUrl::parse("udp://1.2.3.4:5").is_err());
    }

    #[test]
    fn empty_url_is_refused() {
        assert!(matches!(ServerUrl::parse(""), Err(UrlError::Empty)));
    }

    #[test]
    fn url_without_scheme_is_refused() {
        let err = ServerUrl::parse("/tmp/tcpip").unwrap_err();
        assert!(matches!(err, UrlError::NoScheme { .. }));
        assert!(err.to_string().contains("\"/tmp/tcpip\""));
        assert!(matches!(
            ServerUrl::parse("unix:/tmp/x"),
            Err(UrlError::NoScheme { .. })
        ));
    }

    #[test]
    fn unknown_scheme_is_named() {
        let err = ServerUrl::parse("udp:///tmp/x").unwrap_err();
        let UrlError::UnknownScheme { scheme, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(scheme, "udp");
        assert!(err.to_string().contains("\"udp\""));
        assert!(matches!(
            ServerUrl::parse("UNIX:///tmp/x"),
            Err(UrlError::UnknownScheme { .. })
        ));
    }

    #[test]
    fn empty_unix_path_is_refused() {
        assert!(matches!(
            ServerUrl::parse("unix://"),
            Err(UrlError::EmptyPath { .. })
        ));
    }

    #[test]
    fn nul_byte_is_refused() {
        assert!(matches!(
            ServerUrl::parse("unix:///tmp/a\0b"),
            Err(UrlError::NulByte { .. })
        ));
    }

    #[test]
    fn path_must_fit_sun_path() {
        let fits = format!("unix:///{}", "a".repeat(MAX_SOCKET_PATH - 1));
        assert_eq!(
            ServerUrl::parse(&fits).unwrap().path().as_os_str().len(),
            MAX_SOCKET_PATH
        );
        let too_long = format!("unix:///{}", "a".repeat(MAX_SOCKET_PATH));
        let err = ServerUrl::parse(&too_long).unwrap_err();
        assert!(
            matches!(err, UrlError::PathTooLong { len: 108, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn relative_path_is_measured_after_resolution() {
        let cwd_len = std::env::current_dir().unwrap().as_os_str().len();
        // Short on its own, too long once the current directory is prepended.
        let rel = "b".repeat(MAX_SOCKET_PATH.saturating_sub(cwd_len).max(1));
        let err = ServerUrl::parse(&format!("unix://{rel}")).unwrap_err();
        assert!(matches!(err, UrlError::PathTooLong { .. }), "{err:?}");
    }

    #[test]
    fn environment_forms() {
        assert!(ServerUrl::from_env_value(None).unwrap().is_none());
        assert!(matches!(
            ServerUrl::from_env_value(Some("".into())),
            Err(UrlError::EmptyEnv)
        ));
        let url = ServerUrl::from_env_value(Some("unix:///tmp/s".into())).unwrap();
        assert_eq!(url.unwrap().path(), Path::new("/tmp/s"));
        assert!(matches!(
            ServerUrl::from_env_value(Some("nonsense".into())),
            Err(UrlError::NoScheme { .. })
        ));
    }

    #[test]
    fn non_utf8_environment_value_is_refused() {
        use std::os::unix::ffi::OsStringExt;
        let raw = OsString::from_vec(b"unix:///tmp/\xff".to_vec());
        assert!(matches!(
            ServerUrl::from_env_value(Some(raw)),
            Err(UrlError::NotUnicode { .. })
        ));
    }
}
