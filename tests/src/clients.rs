//! Real client programs (curl, python3, busybox wget and nc, socat) making one connection or
//! sending one datagram, and what each prints when the policy lets it through or denies it.

use std::ffi::OsString;
use std::path::Path;

use crate::{argv, python3, Finished};

/// A program that reaches `HOST:PORT` once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Client {
    /// `curl -v` over HTTP.
    Curl,
    /// `rh.py try connect tcp`.
    Python,
    /// Static `busybox wget` over HTTP.
    Wget,
    /// Static `busybox nc`.
    Nc,
    /// `socat UDP-SENDTO`: a datagram with a destination address (`send`).
    SocatSendto,
    /// `socat UDP`: a connected UDP socket (`connect` with proto `udp`).
    SocatConnect,
}

/// A denial errno and how programs spell it.
#[derive(Debug)]
pub struct Denial {
    pub name: &'static str,
    /// strerror(3) text, which curl -v, busybox and socat print.
    pub text: &'static str,
    /// The exception python raises.
    pub python: &'static str,
}

pub const ECONNREFUSED: Denial = Denial {
    name: "ECONNREFUSED",
    text: "Connection refused",
    python: "ConnectionRefusedError",
};
pub const ENETUNREACH: Denial = Denial {
    name: "ENETUNREACH",
    text: "Network is unreachable",
    python: "OSError",
};
pub const EPERM: Denial = Denial {
    name: "EPERM",
    text: "Operation not permitted",
    python: "PermissionError",
};
pub const EACCES: Denial = Denial {
    name: "EACCES",
    text: "Permission denied",
    python: "PermissionError",
};

/// What a run of a client is expected to show.
#[derive(Debug)]
pub enum Expect {
    Allowed,
    Denied(&'static Denial),
}

/// Variables that would send curl or wget to a proxy instead of the address under test.
pub const PROXY_ENV: [&str; 8] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// The text every UDP client sends; the recorder echoes it back.
const DATAGRAM: &str = "matrix-datagram";

impl Client {
    /// The argument vector that makes this client reach `host:port` (IPv4 for all but
    /// python, which also takes IPv6 and mapped spellings). `rh_py` is the helper script.
    pub fn argv(self, rh_py: &Path, host: &str, port: u16) -> Vec<OsString> {
        let url = format!("http://{host}:{port}/");
        let udp = |kind: &str| format!("echo {DATAGRAM} | socat -t 2 - {kind}:{host}:{port}");
        match self {
            Client::Curl => argv![
                "curl",
                "-sS",
                "-v",
                "--noproxy",
                "*",
                "--max-time",
                "5",
                url
            ],
            Client::Python => argv![
                python3(),
                rh_py,
                "try",
                "connect",
                "tcp",
                host,
                port.to_string()
            ],
            Client::Wget => argv!["busybox", "wget", "-q", "-O", "-", url],
            Client::Nc => argv!["busybox", "nc", host, port.to_string()],
            Client::SocatSendto => argv!["sh", "-c", udp("UDP-SENDTO")],
            Client::SocatConnect => argv!["sh", "-c", udp("UDP")],
        }
    }

    /// Checks a finished run against `expect`; the error explains what differs.
    pub fn check(self, out: &Finished, expect: &Expect) -> Result<(), String> {
        let ok = match self {
            Client::Curl | Client::Wget | Client::Nc => out.stdout.contains("recorded"),
            Client::Python => out.stdout.contains("reply recorded"),
            Client::SocatSendto | Client::SocatConnect => out.stdout.contains(DATAGRAM),
        };
        match expect {
            Expect::Allowed if ok && out.code() == 0 => Ok(()),
            Expect::Allowed => Err("expected to get through".into()),
            Expect::Denied(_) if ok => Err("got through, expected a denial".into()),
            Expect::Denied(denial) => self.check_denial(out, denial),
        }
    }

    fn check_denial(self, out: &Finished, denial: &Denial) -> Result<(), String> {
        let printed = match self {
            Client::Curl => out.code() == 7 && out.stderr.contains(denial.text),
            Client::Python => out
                .stdout
                .contains(&format!("connect err {} {}", denial.name, denial.python)),
            Client::Wget | Client::Nc => out.stderr.contains("can't connect to remote host"),
            Client::SocatSendto | Client::SocatConnect => out.code() != 0,
        };
        let text = match self {
            Client::Python => true,
            _ => out.stderr.contains(denial.text),
        };
        if printed && text {
            Ok(())
        } else {
            Err(format!(
                "expected a denial with {} ({})",
                denial.name, denial.text
            ))
        }
    }
}
