//! Harness for rumphijack's end-to-end tests.
//!
//! The tests run the real `rump_server` and `rumphijack` binaries (built by
//! `cargo build --workspace`) with real programs: python3, curl, busybox, socat, iproute2.
//! This crate gives them what every test needs and must get right to never hang or leak:
//!
//! * [`bins`] finds the binaries under test and the helper programs;
//! * [`clients`] runs real client programs and reads their success or denial messages;
//! * [`TempDir`] is a private directory under `/tmp`, removed on drop;
//! * [`Server`] starts `rump_server` and waits for its readiness line, never sleeping;
//! * [`run`] and [`Spawned`] run programs with a deadline and kill their whole process group
//!   on drop, so a broken product fails a test instead of hanging the suite;
//! * [`NetNs`] is a named network namespace made by the test, deleted on drop;
//! * [`preload`] runs programs with `LD_PRELOAD=librumphijack.so` and no supervisor;
//! * [`policy`] runs programs under a policy file and hosts a stack with a non-loopback
//!   address and a silent host;
//! * [`remote`] joins two namespaces by a wire and runs a stack server on one of them that
//!   clients on the other reach over TCP;
//! * [`hostile`] tells host-stack sockets from redirected ones and runs programs as uid
//!   65534;
//! * [`require_root`], [`require_program`] and [`require_path`] skip loudly, and fail under
//!   CI.

pub mod bins;
pub mod clients;
pub mod hostile;
pub mod netns;
pub mod policy;
pub mod preload;
pub mod prereq;
pub mod process;
pub mod python;
pub mod remote;
pub mod server;
pub mod tempdir;
pub mod unprivileged;

pub use bins::{hijack, python3, rumphijack, rumphijack_cmd};
pub use netns::NetNs;
pub use prereq::{require_path, require_program, require_root};
pub use process::{assert_fds_flat, exit_code, fd_count, free_host_port, run, Finished, Spawned};
pub use python::write_helper;
pub use server::Server;
pub use tempdir::TempDir;

/// Path of the `rh-probe` program, built from this package. `CARGO_BIN_EXE_*` is only set when
/// integration tests are compiled, hence a macro expanded in the test crate.
#[macro_export]
macro_rules! probe {
    () => {
        env!("CARGO_BIN_EXE_rh-probe")
    };
}

/// Deadline for one short program run; generous for debug builds on a loaded 2-vCPU machine.
pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A `Vec<OsString>` from anything string- or path-like, for mixed argument lists.
#[macro_export]
macro_rules! argv {
    ($($arg:expr),* $(,)?) => {
        vec![$(::std::ffi::OsString::from(::std::convert::AsRef::<::std::ffi::OsStr>::as_ref(
            &$arg
        ))),*]
    };
}

/// The value of `key=value` in a whitespace-separated report line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
}

/// `rh.py echo-server PORT HOSTS...` under `rumphijack run --server URL`: a TCP and UDP echo
/// service that exists only in that server's stack. Returns once it is listening.
pub fn echo_server(dir: &TempDir, server_url: &str, port: u16, hosts: &[&str]) -> Spawned {
    let script = write_helper(dir);
    let mut args = argv![python3(), "-u", script, "echo-server", port.to_string()];
    args.extend(hosts.iter().map(std::ffi::OsString::from));
    let mut echo = Spawned::start(hijack(server_url, args), dir.path(), "echo-server");
    echo.wait_for_line(TIMEOUT, |l| l == "listening");
    echo
}
